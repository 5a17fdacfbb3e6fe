using System.Net;
using System.Net.Sockets;

namespace Orleans.Paxos.Faults.Cluster;

/// <summary>Configuration of a cluster of silo processes on loopback.</summary>
/// <param name="Nodes">Silo processes (each one Paxos node).</param>
/// <param name="Groups">Paxos groups (the key-value store runs on each).</param>
/// <param name="WorkDirectory">Where data folders and logs go.</param>
/// <param name="DataFileSize">Preallocated log data file size, bytes (small: roll-over happens).</param>
/// <param name="ExtraArguments">More configuration for every silo (e.g. --Paxos:ProposeTimeout=...).</param>
public sealed record ClusterOptions(int Nodes, int Groups, string WorkDirectory, long DataFileSize = 1 << 20, IReadOnlyList<string>? ExtraArguments = null);

/// <summary>N silo processes, one Paxos node each, on free loopback ports.</summary>
public sealed class ProcessCluster : IAsyncDisposable
{
    private ProcessCluster(ClusterOptions options, IReadOnlyList<SiloProcess> silos)
    {
        Options = options;
        Silos = silos;
    }

    /// <summary>The configuration.</summary>
    public ClusterOptions Options { get; }

    /// <summary>The silos (Orleans membership on their Paxos nodes; none is special, though the nemesis spares silo 0).</summary>
    public IReadOnlyList<SiloProcess> Silos { get; }

    /// <summary>Every gateway as ip:port.</summary>
    public IReadOnlyList<string> Gateways => Silos.Select(s => "127.0.0.1:" + SiloProcess.Port(s.GatewayPort)).ToArray();

    /// <summary>The data folder of silo <paramref name="index"/>.</summary>
    public string DataDirectory(int index) => Path.Combine(Options.WorkDirectory, "node-" + SiloProcess.Port(index));

    /// <summary>The silo setting naming its fault-control file (Grains' FaultInjectionTransportFactory.ConfigurationKey).</summary>
    public const string FaultControlKey = "Paxos:FaultInjection:ControlFile";

    /// <summary>The silo setting naming its storage's sync journal (the engine's PaxosFaultInjectionOptions.SyncJournal).</summary>
    public const string SyncJournalKey = "Paxos:FaultInjection:SyncJournal";

    /// <summary>The sync journal of silo <paramref name="index"/>: how far each of its data files was fsynced (<see cref="DiskFaults.LoseUnsyncedWrites"/>).</summary>
    public string SyncJournal(int index) => Path.Combine(Options.WorkDirectory, "sync-journal-" + SiloProcess.Port(index) + ".txt");

    /// <summary>The Paxos node id (ip:port) of every silo.</summary>
    public IReadOnlyList<string> PaxosNodes => Silos.Select(s => "127.0.0.1:" + SiloProcess.Port(s.PaxosPort)).ToArray();

    /// <summary>Whether some Paxos traffic is blocked now.</summary>
    public bool IsPartitioned { get; private set; }

    /// <summary>
    /// Blocks Paxos traffic: every pair (a, b) in <paramref name="drops"/> drops silo a's frames to silo b
    /// (a one-way cut; add (b, a) for both ways). Each silo gets its outbound rules and the matching inbound
    /// ones (dropped on arrival too, so a rule holds even if one side has not read its file yet). Replaces
    /// earlier rules; the silos poll their files every 100 ms. Only the Paxos engine's traffic is cut:
    /// Orleans membership, grain calls between silos and client connections go on.
    /// </summary>
    public void SetPartition(IEnumerable<(int From, int To)> drops)
    {
        ArgumentNullException.ThrowIfNull(drops);
        var list = drops.Distinct().ToList();
        var nodes = PaxosNodes;
        for (var i = 0; i < Silos.Count; i++)
        {
            var lines = list.Where(d => d.From == i).Select(d => "outbound " + nodes[d.To])
                .Concat(list.Where(d => d.To == i).Select(d => "inbound " + nodes[d.From]));
            WriteAtomically(ControlFile(Options.WorkDirectory, i), string.Join('\n', lines) + "\n");
        }

        IsPartitioned = list.Count > 0;
    }

    /// <summary>Lets all Paxos traffic through again.</summary>
    public void HealPartition() => SetPartition([]);

    /// <summary>Creates the processes (not started).</summary>
    public static ProcessCluster Create(ClusterOptions options, string? siloDll = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        Directory.CreateDirectory(options.WorkDirectory);
        siloDll ??= LocateSilo();
        var n = options.Nodes;
        var paxos = FreeRange(n);
        var silo = FreeRange(n);
        var gateway = FreeRange(n);
        var silos = new List<SiloProcess>();
        for (var i = 0; i < n; i++)
        {
            var args = new List<string>
            {
                $"--Paxos:MyNode=127.0.0.1:{paxos + i}",
                $"--Paxos:GroupCount={options.Groups}",
                $"--Paxos:StoragePath={Path.Combine(options.WorkDirectory, "node-" + SiloProcess.Port(i))}",
                $"--Paxos:DataFileSize={options.DataFileSize}",
                $"--Orleans:SiloPort={silo + i}",
                $"--Orleans:GatewayPort={gateway + i}",
                $"--{FaultControlKey}={ControlFile(options.WorkDirectory, i)}",
                $"--{SyncJournalKey}={Path.Combine(options.WorkDirectory, "sync-journal-" + SiloProcess.Port(i) + ".txt")}",
                "--Logging:LogLevel:Default=Warning",
                "--Logging:LogLevel:Orleans.Paxos=Warning",

                // Several silos on one machine: no shared Prometheus port.
                "--Telemetry:PrometheusPort=0",
            };
            for (var m = 0; m < n; m++)
            {
                args.Add($"--Paxos:Members:{m}=127.0.0.1:{paxos + m}");
            }

            args.AddRange(options.ExtraArguments ?? []);
            silos.Add(new SiloProcess(i, siloDll, options.WorkDirectory, args, paxos + i, gateway + i));
        }

        return new ProcessCluster(options, silos);
    }

    /// <summary>Starts every silo at once: Orleans membership runs on Paxos, so a silo is up once a majority is.</summary>
    public Task StartAsync() => Task.WhenAll(Silos.Select(s => s.StartAsync(TimeSpan.FromSeconds(60))));

    /// <summary>Heals partitions, resumes paused silos and starts stopped ones.</summary>
    public async Task HealAsync()
    {
        HealPartition();
        foreach (var s in Silos)
        {
            s.Resume();
        }

        await Task.WhenAll(Silos.Where(s => !s.IsRunning).Select(s => s.StartAsync(TimeSpan.FromSeconds(60))));
    }

    /// <summary>Stops every silo cleanly (SIGINT), all at once so that their last membership writes find a majority.</summary>
    public Task StopAsync() => Task.WhenAll(Silos.Select(s => s.StopAsync(TimeSpan.FromSeconds(30))));

    /// <inheritdoc />
    public ValueTask DisposeAsync()
    {
        foreach (var s in Silos)
        {
            s.Dispose();
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>The Silo program built beside this assembly: src/Silo/bin/&lt;configuration&gt;/&lt;tfm&gt;/Orleans.Paxos.Silo.dll.</summary>
    public static string LocateSilo()
    {
        if (Environment.GetEnvironmentVariable("PAXOS_SILO_DLL") is { Length: > 0 } overridden)
        {
            return overridden;
        }

        // test/<project>/bin/<configuration>/<tfm>/ → src/Silo/bin/<configuration>/<tfm>/
        var baseDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var tfm = baseDir.Name;
        var configuration = baseDir.Parent!.Name;
        var repo = baseDir.Parent!.Parent!.Parent!.Parent!.Parent!.FullName;
        var path = Path.Combine(repo, "src", "Silo", "bin", configuration, tfm, "Orleans.Paxos.Silo.dll");
        return File.Exists(path) ? path : throw new FileNotFoundException($"{path} is missing; build src/Silo first or set PAXOS_SILO_DLL", path);
    }

    private static string ControlFile(string workDirectory, int index) => Path.Combine(workDirectory, "fault-control-" + SiloProcess.Port(index) + ".txt");

    private static void WriteAtomically(string path, string text)
    {
        var temp = path + ".tmp";
        File.WriteAllText(temp, text);
        File.Move(temp, path, overwrite: true);
    }

    private static int FreeRange(int count)
    {
        for (var attempt = 0; attempt < 1000; attempt++)
        {
            // Below Linux's ephemeral range (32768-60999), where outgoing connections of tests running
            // at the same time could take a port between this check and the silo binding it.
            var first = Random.Shared.Next(20_000, 32_000);
            if (Enumerable.Range(first, count).All(IsFree))
            {
                return first;
            }
        }

        throw new InvalidOperationException("no free port range on loopback");
    }

    private static bool IsFree(int port)
    {
        try
        {
            using var tcp = new TcpListener(IPAddress.Loopback, port);
            tcp.Start();
            using var udp = new UdpClient(new IPEndPoint(IPAddress.Loopback, port));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
