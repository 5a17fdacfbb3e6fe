using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Orleans.Paxos.TestSupport;

/// <summary>
/// The Silo program (<see cref="BuiltPrograms.Silo"/>) run with <c>dotnet</c> as a child process, and started
/// again from the same arguments as often as a test likes. What it prints, over all its lives, is collected and
/// can be waited for; it can be stopped (SIGINT, or SIGTERM where SIGINT is ignored), killed (SIGKILL), paused (SIGSTOP) and resumed (SIGCONT).
/// Signals are Linux only. Start, stop and the signals are meant for one test thread; the output may be read
/// and waited for from any thread.
/// </summary>
/// <remarks>
/// The silo is up once it printed its <see cref="ReadyLine"/>: in single-silo mode (a <c>--Paxos:MyNode</c>
/// argument) <see cref="SingleSiloReady"/>, printed once the silo joined its Orleans cluster; as the local
/// cluster (no <c>--Paxos:MyNode</c>) <see cref="LocalClusterReady"/>, printed once its three silos did.
/// </remarks>
public sealed class SiloProcess : IDisposable
{
    /// <summary>The start of the line a single silo prints once it is up.</summary>
    public const string SingleSiloReady = "Silo up:";

    /// <summary>The line the local cluster prints once its silos are up.</summary>
    public const string LocalClusterReady = "Press Ctrl+C to stop.";

    private readonly string _workingDirectory;
    private readonly IReadOnlyDictionary<string, string> _environment;
    private readonly StringBuilder _output = new();
    private readonly Lock _lock = new();
    private Life? _life;
    private bool _disposed;

    /// <summary>A silo process that is not started yet.</summary>
    /// <param name="workingDirectory">Its working folder (relative data paths are under it).</param>
    /// <param name="arguments">Its command line after the dll: configuration as <c>--Section:Key=value</c>.</param>
    /// <param name="index">Its position in its cluster (0 for a lone silo).</param>
    /// <param name="name">How messages name it; default "silo".</param>
    /// <param name="environment">Environment variables to set for it (e.g. <c>DOTNET_ENVIRONMENT</c>).</param>
    public SiloProcess(string workingDirectory, IEnumerable<string> arguments, int index = 0, string? name = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        _workingDirectory = workingDirectory;
        _environment = environment ?? new Dictionary<string, string>();
        Arguments = [.. arguments];
        Index = index;
        Name = name ?? "silo";
        ReadyLine = Arguments.Any(a => a.StartsWith("--Paxos:MyNode=", StringComparison.Ordinal)) ? SingleSiloReady : LocalClusterReady;
    }

    /// <summary>Position in its cluster.</summary>
    public int Index { get; }

    /// <summary>How messages name it ("silo 2").</summary>
    public string Name { get; }

    /// <summary>The command line after the dll.</summary>
    public IReadOnlyList<string> Arguments { get; }

    /// <summary>The start of the line that says the silo is up (see the remarks).</summary>
    public string ReadyLine { get; }

    /// <summary>Whether a process runs now (possibly paused).</summary>
    public bool IsRunning => !_disposed && _life is { Process.HasExited: false };

    /// <summary>Whether the running process is paused (SIGSTOP).</summary>
    public bool IsPaused { get; private set; }

    /// <summary>How often the process was started.</summary>
    public int Starts { get; private set; }

    /// <summary>The running process's id, or 0.</summary>
    public int Pid => IsRunning ? _life!.Process.Id : 0;

    /// <summary>The exit code of the last life, once it ended.</summary>
    public int ExitCode => _life?.Process.ExitCode ?? throw new InvalidOperationException($"{Name} was never started");

    /// <summary>Everything the process printed, all its lives, with a line where each started and each kill.</summary>
    public string Output
    {
        get
        {
            lock (_lock)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>What the process started last printed (its running or its last life).</summary>
    public string CurrentOutput
    {
        get
        {
            lock (_lock)
            {
                return _life is { } life ? _output.ToString(life.OutputStart, _output.Length - life.OutputStart) : string.Empty;
            }
        }
    }

    /// <summary>The last non-empty line printed.</summary>
    public string LastLine => Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) is { Length: > 0 } lines ? lines[^1] : string.Empty;

    /// <summary>Creates the process and <see cref="Launch">launches</see> it, without waiting for it to be up.</summary>
    public static SiloProcess Start(string workingDirectory, IEnumerable<string> arguments, string? name = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        var silo = new SiloProcess(workingDirectory, arguments, name: name, environment: environment);
        silo.Launch();
        return silo;
    }

    /// <summary>The last lines printed.</summary>
    public string Tail(int lines = 60)
    {
        var all = Output.Split('\n');
        return string.Join('\n', all.Skip(Math.Max(0, all.Length - lines)));
    }

    /// <summary>Starts the process and waits until it is up.</summary>
    /// <exception cref="TimeoutException">Not up within <paramref name="timeout"/> (the process keeps running).</exception>
    /// <exception cref="InvalidOperationException">It exited first.</exception>
    public async Task StartAsync(TimeSpan timeout)
    {
        Launch();
        await WaitUntilUpAsync(timeout);
    }

    /// <summary>
    /// Starts the process without waiting for it to be up: e.g. a silo cut off from the Paxos majority runs
    /// its Paxos node at once but joins Orleans (whose membership table is on Paxos) only once it reaches one.
    /// </summary>
    public void Launch()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (IsRunning)
        {
            throw new InvalidOperationException($"{Name} is already running");
        }

        _life?.Process.Dispose();
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = _workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var (key, value) in _environment)
        {
            psi.Environment[key] = value;
        }

        psi.ArgumentList.Add(BuiltPrograms.Silo);
        foreach (var a in Arguments)
        {
            psi.ArgumentList.Add(a);
        }

        var process = new Process { StartInfo = psi };
        Life life;
        lock (_lock)
        {
            _output.AppendLine(string.Create(CultureInfo.InvariantCulture, $"--- start #{Starts + 1} at {DateTime.UtcNow:HH:mm:ss.fff}"));
            life = new Life(process, _output.Length);
        }

        process.OutputDataReceived += (_, e) => OnLine(life, e.Data);
        process.ErrorDataReceived += (_, e) => OnLine(life, e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        // Completes once the process exited and everything it printed was read.
        life.Exited = process.WaitForExitAsync();
        _life = life;
        Starts++;
        IsPaused = false;
    }

    /// <summary>Waits until the process started last is up (printed its <see cref="ReadyLine"/>).</summary>
    /// <exception cref="TimeoutException">Not up within <paramref name="timeout"/> (the process keeps running).</exception>
    /// <exception cref="InvalidOperationException">It exited first.</exception>
    public Task WaitUntilUpAsync(TimeSpan timeout) => WaitForAsync(l => l.StartsWith(ReadyLine, StringComparison.Ordinal), ReadyLine, timeout);

    /// <summary>Waits until the process started last printed a line containing <paramref name="text"/>.</summary>
    /// <exception cref="TimeoutException">No such line within <paramref name="timeout"/>.</exception>
    /// <exception cref="InvalidOperationException">It exited first.</exception>
    public Task WaitForLineAsync(string text, TimeSpan timeout) => WaitForAsync(l => l.Contains(text, StringComparison.Ordinal), text, timeout);

    /// <summary>Waits until the process started last exits by itself; returns its exit code.</summary>
    /// <exception cref="TimeoutException">Still running after <paramref name="timeout"/> (it keeps running).</exception>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        var life = _life ?? throw new InvalidOperationException($"{Name} was never started");
        try
        {
            await life.Exited.WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"{Name} did not exit in {timeout.TotalSeconds:0} s:\n{Tail()}");
        }

        return life.Process.ExitCode;
    }

    /// <summary>kill -9, and waits (up to 10 s) for the process to be gone and its last output read.</summary>
    public void Kill()
    {
        if (IsRunning)
        {
            Signal(Signals.SigKill);
            _life!.Exited.Wait(TimeSpan.FromSeconds(10));
            Append(string.Create(CultureInfo.InvariantCulture, $"--- killed (SIGKILL) at {DateTime.UtcNow:HH:mm:ss.fff}"));
        }

        IsPaused = false;
    }

    /// <summary>kill -STOP.</summary>
    public void Pause()
    {
        if (IsRunning && !IsPaused)
        {
            Signal(Signals.SigStop);
            IsPaused = true;
        }
    }

    /// <summary>kill -CONT.</summary>
    public void Resume()
    {
        if (IsRunning && IsPaused)
        {
            Signal(Signals.SigCont);
        }

        IsPaused = false;
    }

    /// <summary>Ctrl+C (SIGINT; SIGTERM when this process ignores SIGINT; after resuming a paused process) and waits for the exit; kills it after <paramref name="timeout"/>.</summary>
    /// <returns>Whether it exited by itself (true also when it was not running).</returns>
    public async Task<bool> StopAsync(TimeSpan timeout)
    {
        if (!IsRunning)
        {
            return true;
        }

        var life = _life!;
        Resume();
        // Ctrl+C, unless the test runs in a background job that ignores it (the silo would inherit that and never
        // hear it); then the polite stop of kill(1), which the silo handles the same way.
        Signal(Signals.IsIgnoredHere(Signals.SigInt) ? Signals.SigTerm : Signals.SigInt);
        try
        {
            await life.Exited.WaitAsync(timeout);
            return true;
        }
        catch (TimeoutException)
        {
            // Before killing it: where every thread of the process stands, so that a silo that hangs while stopping says why.
            Append(await ThreadStacks.CaptureAsync(life.Process.Id, TimeSpan.FromSeconds(30)));
            Kill();
            return false;
        }
    }

    /// <summary>Kills a running process (resumed first if paused, so that it dies at once).</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        if (_life is { } life)
        {
            if (!life.Process.HasExited)
            {
                if (IsPaused)
                {
                    Signal(Signals.SigCont);
                }

                life.Process.Kill(entireProcessTree: true);
                life.Process.WaitForExit(10_000);
            }

            life.Process.Dispose();
        }

        _disposed = true;
    }

    /// <inheritdoc />
    public override string ToString() => Name;

    private async Task WaitForAsync(Func<string, bool> match, string what, TimeSpan timeout)
    {
        var life = _life ?? throw new InvalidOperationException($"{Name} was never started");
        var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            if (CurrentOutput.Split('\n').Any(l => match(l.TrimEnd('\r'))))
            {
                return;
            }

            life.Waits.Add((match, seen));
        }

        try
        {
            await Task.WhenAny(seen.Task, life.Exited).WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"{Name} did not print '{what}' in {timeout.TotalSeconds:0} s:\n{Tail()}");
        }

        if (!seen.Task.IsCompleted)
        {
            throw new InvalidOperationException($"{Name} exited (code {life.Process.ExitCode}) before printing '{what}':\n{Tail()}");
        }
    }

    private void OnLine(Life life, string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_lock)
        {
            _output.AppendLine(line);
            foreach (var (match, seen) in life.Waits)
            {
                if (match(line))
                {
                    seen.TrySetResult();
                }
            }
        }
    }

    private void Append(string line)
    {
        lock (_lock)
        {
            _output.AppendLine(line);
        }
    }

    /// <summary>Signals the running process; one that has just exited is left alone.</summary>
    private void Signal(int signal)
    {
        try
        {
            Signals.Send(_life!.Process.Id, signal);
        }
        catch (InvalidOperationException) when (_life!.Process.HasExited)
        {
        }
    }

    /// <summary>One run of the process: its output starts at <see cref="OutputStart"/> in the collected output.</summary>
    private sealed class Life(Process process, int outputStart)
    {
        public Process Process { get; } = process;

        public int OutputStart { get; } = outputStart;

        public Task Exited { get; set; } = Task.CompletedTask;

        public List<(Func<string, bool> Match, TaskCompletionSource Seen)> Waits { get; } = [];
    }
}
