using System.Diagnostics;

namespace Orleans.Paxos.TestSupport;

/// <summary>The managed thread stacks of a running .NET process, through the <c>dotnet-stack</c> tool when it is installed.</summary>
public static class ThreadStacks
{
    /// <summary>Returns the stacks of every managed thread of <paramref name="pid"/>, or a line saying why there are none.</summary>
    public static async Task<string> CaptureAsync(int pid, TimeSpan timeout)
    {
        var tool = Locate();
        if (tool is null)
        {
            return "--- no thread stacks: dotnet-stack is not installed (dotnet tool install -g dotnet-stack)";
        }

        try
        {
            using var process = Process.Start(new ProcessStartInfo(tool, ["report", "-p", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            })!;
            using var cancel = new CancellationTokenSource(timeout);
            var output = process.StandardOutput.ReadToEndAsync(cancel.Token);
            var error = process.StandardError.ReadToEndAsync(cancel.Token);
            await process.WaitForExitAsync(cancel.Token);
            return $"--- thread stacks of process {pid} (dotnet-stack):\n{await output}{await error}";
        }
        catch (Exception ex) when (ex is OperationCanceledException or System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            return $"--- no thread stacks of process {pid}: {ex.Message}";
        }
    }

    private static string? Locate()
    {
        var home = Environment.GetEnvironmentVariable("HOME");
        var candidates = (Environment.GetEnvironmentVariable("PATH") ?? string.Empty)
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Append(home is null ? string.Empty : Path.Combine(home, ".dotnet", "tools"));
        return candidates.Select(dir => Path.Combine(dir, "dotnet-stack")).FirstOrDefault(File.Exists);
    }
}
