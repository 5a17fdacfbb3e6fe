using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Orleans.Paxos.Grains.Tests.Cli;

/// <summary>
/// One real local cluster (the Silo program: three silos, real sockets, Prometheus on) shared by every
/// command-line test, and helpers that run the real Client program against it.
/// </summary>
public sealed class CliCluster : IAsyncLifetime
{
    /// <summary>The cluster's largest value, small so that a test can exceed it cheaply.</summary>
    public const int MaxValueSize = 512 * 1024;

    /// <summary>The key-value store's state machine id here (not the default 1).</summary>
    public const int KeyValueSmId = 7;

    public string Work { get; } = Path.Combine(Path.GetTempPath(), "paxos-cli-" + Guid.NewGuid().ToString("N"));

    public int PaxosPort { get; } = LoopbackPortRange.Free(3);

    public int SiloPort { get; } = LoopbackPortRange.Free(3);

    public int GatewayPort { get; } = LoopbackPortRange.Free(3);

    public int PrometheusPort { get; } = LoopbackPortRange.Free(1);

    public SiloProcess Silo { get; private set; } = null!;

    /// <summary>The gateways as client arguments.</summary>
    public IEnumerable<string> GatewayArguments => Enumerable.Range(0, 3).SelectMany(i => new[] { "-g", $"127.0.0.1:{GatewayPort + i}" });

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(Work);
        Directory.CreateDirectory(Path.Combine(Work, "bin"));
        var wrapper = Path.Combine(Work, "bin", "paxos");
        await File.WriteAllTextAsync(wrapper, $"#!/bin/sh\nexec dotnet '{Executable("Client", "Orleans.Paxos.Client.dll")}' \"$@\" {string.Join(' ', GatewayArguments)}\n");
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(wrapper, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        Silo = SiloProcess.Start(Work, [
            $"--LocalCluster:PaxosPort={PaxosPort}", $"--LocalCluster:SiloPort={SiloPort}", $"--LocalCluster:GatewayPort={GatewayPort}",
            "--Paxos:DataFileSize=1048576", $"--Paxos:MaxValueSize={MaxValueSize}", $"--Paxos:KeyValueStore:SmId={KeyValueSmId}",
            $"--Telemetry:PrometheusPort={PrometheusPort}", "--Telemetry:RuntimeMetrics=false",
        ]);
        await Silo.WaitForLineAsync("Press Ctrl+C", TimeSpan.FromSeconds(60));
    }

    public async Task DisposeAsync()
    {
        await Silo.StopAsync();
        Silo.Dispose();
        try
        {
            Directory.Delete(Work, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Runs the client with the cluster's gateways.</summary>
    public Task<ProgramRun> ClientAsync(params string[] args) =>
        RunAsync("dotnet", [Executable("Client", "Orleans.Paxos.Client.dll"), .. args, .. GatewayArguments], TimeSpan.FromSeconds(60));

    /// <summary>Runs a bash script in the work folder with <c>paxos</c> (the client on this cluster) on the PATH.</summary>
    public Task<ProgramRun> ShellAsync(string script, TimeSpan? timeout = null) =>
        RunAsync("bash", ["-c", $"export PATH='{Path.Combine(Work, "bin")}':\"$PATH\"\n{script}"], timeout ?? TimeSpan.FromSeconds(60));

    /// <summary>Runs a program to its end (killed after <paramref name="timeout"/>, which fails the test).</summary>
    public async Task<ProgramRun> RunAsync(string file, IEnumerable<string> args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file)
        {
            WorkingDirectory = Work,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi)!;
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
            Assert.Fail($"{file} {string.Join(' ', args)} did not end in {timeout.TotalSeconds} s:\n{await stdout}{await stderr}");
        }

        return new ProgramRun(process.ExitCode, await stdout, await stderr);
    }

    /// <summary>The built program of a project: test/Grains.Tests/bin/&lt;cfg&gt;/&lt;tfm&gt;/ → src/&lt;project&gt;/bin/&lt;cfg&gt;/&lt;tfm&gt;/.</summary>
    public static string Executable(string project, string dll)
    {
        var baseDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var path = Path.Combine(RepositoryRoot, "src", project, "bin", baseDir.Parent!.Name, baseDir.Name, dll);
        Assert.True(File.Exists(path), $"{path} is missing; build the solution first");
        return path;
    }

    /// <summary>The repository's root folder.</summary>
    public static string RepositoryRoot =>
        new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Parent!.Parent!.Parent!.Parent!.FullName;
}

/// <summary>How a program ended.</summary>
public sealed record ProgramRun(int Code, string Stdout, string Stderr)
{
    public string Output => Stdout + Stderr;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"exit code {Code}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}");
}

/// <summary>A running Silo program whose output lines are collected and can be waited for.</summary>
public sealed class SiloProcess : IDisposable
{
    private readonly StringBuilder _output = new();
    private readonly List<(string Text, TaskCompletionSource Seen)> _waits = [];

    private SiloProcess(Process process)
    {
        Process = process;
        process.OutputDataReceived += (_, e) => OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public Process Process { get; }

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>Starts the Silo program in <paramref name="workingDirectory"/>.</summary>
    public static SiloProcess Start(string workingDirectory, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(CliCluster.Executable("Silo", "Orleans.Paxos.Silo.dll"));
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        return new SiloProcess(Process.Start(psi)!);
    }

    /// <summary>Waits until a line containing <paramref name="text"/> was printed; fails the test with the output otherwise.</summary>
    public async Task WaitForLineAsync(string text, TimeSpan timeout)
    {
        var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_output)
        {
            if (_output.ToString().Contains(text, StringComparison.Ordinal))
            {
                return;
            }

            _waits.Add((text, seen));
        }

        var done = await Task.WhenAny(seen.Task, Process.WaitForExitAsync(), Task.Delay(timeout));
        Assert.True(done == seen.Task, $"the silo did not print '{text}' in {timeout.TotalSeconds} s:\n{Output}");
    }

    /// <summary>Waits for the program to exit on its own; returns its exit code.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cancel = new CancellationTokenSource(timeout);
        try
        {
            await Process.WaitForExitAsync(cancel.Token);
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"the silo did not exit in {timeout.TotalSeconds} s:\n{Output}");
        }

        return Process.ExitCode;
    }

    /// <summary>Ctrl+C, then waits for the exit (kills after 30 s).</summary>
    public async Task StopAsync()
    {
        if (Process.HasExited)
        {
            return;
        }

        using (var kill = Process.Start("kill", ["-INT", Process.Id.ToString(CultureInfo.InvariantCulture)]))
        {
            await kill.WaitForExitAsync();
        }

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await Process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            Process.Kill(entireProcessTree: true);
        }
    }

    /// <summary>The last non-empty line printed.</summary>
    public string LastLine => Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)[^1];

    public void Dispose()
    {
        if (!Process.HasExited)
        {
            Process.Kill(entireProcessTree: true);
        }

        Process.Dispose();
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
            foreach (var (text, seen) in _waits)
            {
                if (line.Contains(text, StringComparison.Ordinal))
                {
                    seen.TrySetResult();
                }
            }
        }
    }
}

[CollectionDefinition(Name)]
public sealed class CliClusterCollection : ICollectionFixture<CliCluster>
{
    public const string Name = "cli cluster";
}
