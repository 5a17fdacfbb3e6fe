using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Orleans.Paxos.Grains.Tests.Interop;

/// <summary>Where the PhxPaxos peer binaries are: <c>PAXOS_PHXPAXOS_PEER_DIR</c> (set by <c>.ci/run</c> when <c>../shared/peer</c> exists).</summary>
internal static class PhxPaxosPeer
{
    public const string Variable = "PAXOS_PHXPAXOS_PEER_DIR";

    /// <summary>The phxecho binary, or null when the variable is unset or names no phxecho.</summary>
    public static string? PhxEcho =>
        Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } dir && File.Exists(Path.Combine(dir, "phxecho")) ? Path.Combine(dir, "phxecho") : null;
}

/// <summary>A fact that runs only with the PhxPaxos peer binaries, and says so when skipped.</summary>
public sealed class PhxPaxosPeerFactAttribute : FactAttribute
{
    public PhxPaxosPeerFactAttribute()
    {
        if (PhxPaxosPeer.PhxEcho is null)
        {
            Skip = $"No PhxPaxos peer: set {PhxPaxosPeer.Variable} to the folder holding phxecho (.ci/run sets it when ../shared/peer exists).";
        }
    }
}

/// <summary>One Paxos node of a mixed cluster, PhxPaxos's or ours, seen from outside: propose, read what it executed, kill, restart.</summary>
internal interface IMixedNode : IDisposable
{
    string Name { get; }

    /// <summary>The group's first data file (<c>g0/vfile/0.f</c>).</summary>
    string DataFile { get; }

    Task StartAsync();

    /// <summary>Proposes a value for state machine 1 and waits until this node reports it chosen.</summary>
    Task ProposeAsync(string value);

    /// <summary>Waits until this node has executed instances 0..count-1 and returns their values in order.</summary>
    Task<string[]> ExecutedAsync(int count, TimeSpan timeout);

    /// <summary>kill -9.</summary>
    void Kill();
}

/// <summary>PhxPaxos's echo sample node: proposes each line of its standard input, prints every value it executes.</summary>
internal sealed partial class PhxEchoNode : IMixedNode
{
    private readonly string _dir;
    private readonly string _me;
    private readonly string _members;
    private readonly List<string> _lines = [];
    private readonly SemaphoreSlim _changed = new(0);
    private Process? _process;

    public PhxEchoNode(string work, int port, string members)
    {
        _me = $"127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}";
        _members = members;
        _dir = Path.Combine(work, $"phxecho-{port.ToString(CultureInfo.InvariantCulture)}");
        Directory.CreateDirectory(Path.Combine(_dir, "log"));
    }

    public string Name => $"PhxPaxos {_me}";

    public string DataFile => Path.Combine(_dir, $"logpath_{_me.Replace(':', '_')}", "g0", "vfile", "0.f");

    public async Task StartAsync()
    {
        lock (_lines)
        {
            _lines.Clear();
        }

        // Under script(1), on a terminal: phxecho's state machine prints from PhxPaxos's own thread with
        // printf, which a pipe would buffer until the node's next proposal. Bounded by timeout(1) as the
        // peer's README asks; standard input stays open (at its end phxecho proposes empty values).
        var psi = new ProcessStartInfo("script") { WorkingDirectory = _dir, RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in (string[])["-qfec", $"exec timeout -s KILL 600 '{PhxPaxosPeer.PhxEcho}' {_me} {_members}", "/dev/null"])
        {
            psi.ArgumentList.Add(a);
        }

        _process = Process.Start(psi)!;
        _process.OutputDataReceived += (_, e) => OnLine(e.Data);
        _process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        await WaitForAsync(lines => lines.FirstOrDefault(l => l.StartsWith("echo server start", StringComparison.Ordinal)), TimeSpan.FromSeconds(30), "start");
    }

    public async Task ProposeAsync(string value)
    {
        for (var attempt = 1; ; attempt++)
        {
            int before;
            lock (_lines)
            {
                before = _lines.Count;
            }

            await _process!.StandardInput.WriteLineAsync(value);
            await _process.StandardInput.FlushAsync();
            var answer = await WaitForAsync(lines => lines.Skip(before).FirstOrDefault(l => l == "echo resp value " + value || l.StartsWith("Echo fail", StringComparison.OrdinalIgnoreCase)), TimeSpan.FromSeconds(60), $"the answer to '{value}'");
            if (answer.StartsWith("echo resp", StringComparison.Ordinal))
            {
                return;
            }

            Assert.True(attempt < 5, $"{Name} failed to propose '{value}' {attempt} times:\n{Output}");
        }
    }

    public async Task<string[]> ExecutedAsync(int count, TimeSpan timeout)
    {
        string[]? result = null;
        await WaitForAsync(
            lines =>
            {
                var executed = new Dictionary<ulong, string>();
                foreach (var line in lines)
                {
                    if (Executed().Match(line) is { Success: true } m)
                    {
                        executed[ulong.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)] = m.Groups[2].Value;
                    }
                }

                if (Enumerable.Range(0, count).All(i => executed.ContainsKey((ulong)i)))
                {
                    result = [.. Enumerable.Range(0, count).Select(i => executed[(ulong)i])];
                    return "done";
                }

                return null;
            },
            timeout,
            $"{count} executed instances");
        return result!;
    }

    public void Kill()
    {
        if (_process is { HasExited: false })
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
        }
    }

    public void Dispose()
    {
        Kill();
        _process?.Dispose();
    }

    private string Output
    {
        get
        {
            lock (_lines)
            {
                return string.Join('\n', _lines);
            }
        }
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_lines)
        {
            _lines.Add(line.TrimEnd('\r'));
        }

        _changed.Release();
    }

    private async Task<string> WaitForAsync(Func<IReadOnlyList<string>, string?> condition, TimeSpan timeout, string what)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        while (true)
        {
            lock (_lines)
            {
                if (condition(_lines) is { } found)
                {
                    return found;
                }
            }

            var left = TimeSpan.FromSeconds((double)(deadline - Stopwatch.GetTimestamp()) / Stopwatch.Frequency);
            Assert.True(left > TimeSpan.Zero && !(_process?.HasExited ?? true), $"{Name}: no {what} within {timeout.TotalSeconds} s:\n{Output}");
            await _changed.WaitAsync(left < TimeSpan.FromSeconds(1) ? left : TimeSpan.FromSeconds(1));
        }
    }

    [GeneratedRegex(@"^\[SM Execute\] ok, smid 1 instanceid (\d+) value (.*)$")]
    private static partial Regex Executed();
}

/// <summary>Our Silo program as one node of the mixed cluster (its own one-silo Orleans cluster), driven with the Client program.</summary>
internal sealed class SiloNode : IMixedNode
{
    private readonly string _me;
    private readonly string[] _client;
    private readonly SiloProcess _silo;

    public SiloNode(string work, int port, IReadOnlyList<string> members)
    {
        _me = $"127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}";
        var folder = Path.Combine(work, $"silo-{port.ToString(CultureInfo.InvariantCulture)}");
        DataFile = Path.Combine(folder, "g0", "vfile", "0.f");
        var gateway = LoopbackPorts.Next();
        var siloPort = LoopbackPorts.Next().ToString(CultureInfo.InvariantCulture);
        var clusterId = $"interop-{port.ToString(CultureInfo.InvariantCulture)}";
        _silo = new SiloProcess(work, [
            $"--Paxos:MyNode={_me}", .. members.Select((m, i) => $"--Paxos:Members:{i.ToString(CultureInfo.InvariantCulture)}={m}"),
            "--Paxos:GroupCount=1", $"--Paxos:StoragePath={folder}",

            // PhxPaxos's echo state machine is SMID 1: keep its values in the log here, and the key-value store off.
            "--Paxos:LogOnlySmIds:0=1", "--Paxos:KeyValueStore:Enabled=false",

            // PhxPaxos nodes do not answer the survey of a group that starts with no log: vote at once, as they do.
            "--Paxos:VoteWithEmptyLog=true",
            // Orleans' own tables would need state machines PhxPaxos nodes do not have: each of these silos is an
            // Orleans cluster of its own with Orleans' development clustering and in-memory reminders and storage.
            "--Orleans:Clustering:ProviderType=Development", $"--Orleans:Clustering:PrimarySiloEndPoint=127.0.0.1:{siloPort}",
            "--Orleans:Reminders:ProviderType=Memory", "--Orleans:GrainStorage:Default:ProviderType=Memory",
            $"--Orleans:SiloPort={siloPort}", $"--Orleans:GatewayPort={gateway.ToString(CultureInfo.InvariantCulture)}",
            $"--Orleans:ClusterId={clusterId}", "--Telemetry:PrometheusPort=0",
        ], name: Name);
        _client = ["--cluster-id", clusterId, "-g", $"127.0.0.1:{gateway.ToString(CultureInfo.InvariantCulture)}"];
    }

    public string Name => $"ours {_me}";

    public string DataFile { get; }

    public Task StartAsync() => _silo.StartAsync(TimeSpan.FromSeconds(60));

    public async Task ProposeAsync(string value)
    {
        for (var attempt = 1; ; attempt++)
        {
            var r = await ClientAsync("propose", "0", value, "--sm", "1");
            if (r.Code == 0)
            {
                return;
            }

            Assert.True(attempt < 5, $"{Name} failed to propose '{value}' {attempt} times: {r}");
        }
    }

    public async Task<string[]> ExecutedAsync(int count, TimeSpan timeout)
    {
        var r = await ClientAsync(timeout, "watch", "0", "--count", count.ToString(CultureInfo.InvariantCulture), "--json");
        Assert.True(r.Code == 0, $"{Name}: {r}");
        var entries = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.Equal(Enumerable.Range(0, count).Select(i => (ulong)i), entries.Select(e => e.GetProperty("InstanceId").GetUInt64()));
        Assert.All(entries, e => Assert.Equal(1, e.GetProperty("SmId").GetInt32()));
        return [.. entries.Select(e => Encoding.UTF8.GetString(e.GetProperty("Value").GetBytesFromBase64()))];
    }

    /// <summary>Runs the client against this node's silo.</summary>
    public Task<ProgramRun> ClientAsync(params string[] args) => ClientAsync(TimeSpan.FromSeconds(60), args);

    public void Kill() => _silo.Kill();

    public void Dispose() => _silo.Dispose();

    /// <summary>Runs the client against this node's silo; <paramref name="timeout"/> is the client's own, given 15 s more to end.</summary>
    private async Task<ProgramRun> ClientAsync(TimeSpan timeout, params string[] args)
    {
        try
        {
            return await ProgramRun.ClientAsync([.. args, .. _client], timeout + TimeSpan.FromSeconds(15));
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException($"{Name}: {ex.Message}\n--- silo\n{_silo.Output}", ex);
        }
    }
}

/// <summary>Hashes of data files.</summary>
internal static class DataFiles
{
    public static string Sha256(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        return Convert.ToHexString(SHA256.HashData(stream));
    }
}
