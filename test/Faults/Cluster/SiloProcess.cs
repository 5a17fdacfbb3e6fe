using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Orleans.Paxos.Faults.Cluster;

/// <summary>One real silo process (the Silo program in single-silo mode), which can be killed, paused and restarted.</summary>
public sealed class SiloProcess : IDisposable
{
    private readonly string _siloDll;
    private readonly string _workDir;
    private readonly IReadOnlyList<string> _arguments;
    private readonly StringBuilder _log = new();
    private readonly Lock _lock = new();
    private Process? _process;
    private TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);

    internal SiloProcess(int index, string siloDll, string workDir, IReadOnlyList<string> arguments, int paxosPort, int gatewayPort)
    {
        Index = index;
        _siloDll = siloDll;
        _workDir = workDir;
        _arguments = arguments;
        PaxosPort = paxosPort;
        GatewayPort = gatewayPort;
    }

    /// <summary>Position in the cluster.</summary>
    public int Index { get; }

    /// <summary>The Paxos node's port on 127.0.0.1.</summary>
    public int PaxosPort { get; }

    /// <summary>The Orleans gateway port on 127.0.0.1.</summary>
    public int GatewayPort { get; }

    /// <summary>Whether the process is running and not paused.</summary>
    public bool IsPaused { get; private set; }

    /// <summary>Whether a process is running (possibly paused).</summary>
    public bool IsRunning => _process is { HasExited: false };

    /// <summary>How often the process was started.</summary>
    public int Starts { get; private set; }

    /// <summary>The process id, or 0.</summary>
    public int Pid => _process is { HasExited: false } p ? p.Id : 0;

    /// <summary>Everything the process printed (all its lives).</summary>
    public string Log
    {
        get
        {
            lock (_lock)
            {
                return _log.ToString();
            }
        }
    }

    /// <summary>Starts the process and waits until the silo says it is up.</summary>
    public async Task StartAsync(TimeSpan timeout)
    {
        Launch();
        await WaitUntilUpAsync(timeout);
    }

    /// <summary>
    /// Starts the process without waiting for it to be up: a silo cut off from the Paxos majority runs its
    /// Paxos node at once but joins Orleans (whose membership table is on Paxos) only once it reaches a majority.
    /// </summary>
    public void Launch()
    {
        if (IsRunning)
        {
            throw new InvalidOperationException($"silo {Index} is already running");
        }

        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = _workDir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(_siloDll);
        foreach (var a in _arguments)
        {
            psi.ArgumentList.Add(a);
        }

        _ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        process.OutputDataReceived += (_, e) => OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        process.Exited += (_, _) => _ready.TrySetException(new InvalidOperationException($"silo {Index} exited during start-up:\n{Tail()}"));
        Append($"--- start #{Starts + 1} at {DateTime.UtcNow:HH:mm:ss.fff}");
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process = process;
        Starts++;
        IsPaused = false;
    }

    /// <summary>Waits until the silo started by <see cref="Launch"/> says it is up.</summary>
    public async Task WaitUntilUpAsync(TimeSpan timeout)
    {
        try
        {
            await _ready.Task.WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"silo {Index} did not come up in {timeout.TotalSeconds:0} s:\n{Tail()}");
        }
    }

    /// <summary>kill -9, and waits for the process to be gone.</summary>
    public void Kill()
    {
        if (_process is { HasExited: false } p)
        {
            Signals.Send(p.Id, Signals.SigKill);
            p.WaitForExit(10_000);
            Append($"--- killed (SIGKILL) at {DateTime.UtcNow:HH:mm:ss.fff}");
        }

        IsPaused = false;
    }

    /// <summary>kill -STOP.</summary>
    public void Pause()
    {
        if (_process is { HasExited: false } p && !IsPaused)
        {
            Signals.Send(p.Id, Signals.SigStop);
            IsPaused = true;
        }
    }

    /// <summary>kill -CONT.</summary>
    public void Resume()
    {
        if (_process is { HasExited: false } p && IsPaused)
        {
            Signals.Send(p.Id, Signals.SigCont);
        }

        IsPaused = false;
    }

    /// <summary>Ctrl+C (SIGINT) and waits for a clean exit.</summary>
    public async Task StopAsync(TimeSpan timeout)
    {
        if (_process is not { HasExited: false } p)
        {
            return;
        }

        Resume();
        Signals.Send(p.Id, 2);
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            Kill();
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_process is { HasExited: false } p)
        {
            if (IsPaused)
            {
                Signals.Send(p.Id, Signals.SigCont);
            }

            p.Kill(entireProcessTree: true);
            p.WaitForExit(10_000);
        }

        _process?.Dispose();
    }

    /// <summary>The last lines of the log.</summary>
    public string Tail(int lines = 40)
    {
        var all = Log.Split('\n');
        return string.Join('\n', all.Skip(Math.Max(0, all.Length - lines)));
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }

        Append(line);
        if (line.StartsWith("Silo up:", StringComparison.Ordinal))
        {
            _ready.TrySetResult();
        }
    }

    private void Append(string line)
    {
        lock (_lock)
        {
            _log.AppendLine(line);
        }
    }

    internal static string Port(int p) => p.ToString(CultureInfo.InvariantCulture);
}
