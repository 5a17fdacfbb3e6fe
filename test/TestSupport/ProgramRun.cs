using System.Diagnostics;
using System.Globalization;

namespace Orleans.Paxos.TestSupport;

/// <summary>How a program run to its end ended: its exit code and everything it printed.</summary>
/// <param name="Code">The exit code.</param>
/// <param name="Stdout">Standard output.</param>
/// <param name="Stderr">Standard error.</param>
public sealed record ProgramRun(int Code, string Stdout, string Stderr)
{
    /// <summary>Standard output, then standard error.</summary>
    public string Output => Stdout + Stderr;

    /// <summary>
    /// Runs <paramref name="fileName"/> to its end with standard input closed. One that has not ended after
    /// <paramref name="timeout"/> is killed (with its children) and a <see cref="TimeoutException"/> carries its output.
    /// </summary>
    public static async Task<ProgramRun> RunAsync(string fileName, IEnumerable<string> arguments, TimeSpan timeout, string? workingDirectory = null)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        var psi = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        if (workingDirectory is not null)
        {
            psi.WorkingDirectory = workingDirectory;
        }

        foreach (var a in arguments)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"{fileName} did not start");
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cancel = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cancel.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{fileName} {string.Join(' ', psi.ArgumentList)} did not end in {timeout.TotalSeconds} s:\n{await stdout}{await stderr}");
        }

        return new ProgramRun(process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Runs the Client program (<see cref="BuiltPrograms.Client"/>) to its end; see <see cref="RunAsync"/>.</summary>
    public static Task<ProgramRun> ClientAsync(IEnumerable<string> arguments, TimeSpan timeout, string? workingDirectory = null) =>
        RunAsync("dotnet", [BuiltPrograms.Client, .. arguments], timeout, workingDirectory);

    /// <inheritdoc />
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"exit code {Code}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}");
}
