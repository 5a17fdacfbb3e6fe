using System.Globalization;
using Orleans.Paxos.TestSupport;

namespace Orleans.Paxos.Faults.Cluster;

/// <summary>Configuration of a cluster of silo processes on loopback.</summary>
/// <param name="Nodes">Silo processes (each one Paxos node).</param>
/// <param name="Groups">Paxos groups (the key-value store runs on each).</param>
/// <param name="WorkDirectory">Where data folders and logs go.</param>
/// <param name="DataFileSize">Preallocated log data file size, bytes (small: roll-over happens).</param>
/// <param name="ExtraArguments">More configuration for every silo (e.g. --Paxos:ProposeTimeout=...).</param>
public sealed record ClusterOptions(int Nodes, int Groups, string WorkDirectory, long DataFileSize = 1 << 20, IReadOnlyList<string>? ExtraArguments = null);

/// <summary>
/// N silo processes, one Paxos node each, on free loopback ports (a <see cref="SiloCluster"/>), whose Paxos traffic
/// can be cut (<see cref="SetPartition"/>) and whose storage journals its fsyncs (<see cref="SyncJournal"/>).
/// </summary>
public sealed class ProcessCluster : IAsyncDisposable
{
    private readonly SiloCluster _silos;

    private ProcessCluster(ClusterOptions options, SiloCluster silos)
    {
        Options = options;
        _silos = silos;
    }

    /// <summary>The configuration.</summary>
    public ClusterOptions Options { get; }

    /// <summary>The silos (Orleans membership on their Paxos nodes; none is special, though the nemesis spares silo 0).</summary>
    public IReadOnlyList<SiloProcess> Silos => _silos.Silos;

    /// <summary>Every gateway as ip:port.</summary>
    public IReadOnlyList<string> Gateways => _silos.Gateways;

    /// <summary>The data folder of silo <paramref name="index"/>.</summary>
    public string DataDirectory(int index) => _silos.DataDirectory(index);

    /// <summary>The silo setting naming its fault-control file (Grains' FaultInjectionTransportFactory.ConfigurationKey).</summary>
    public const string FaultControlKey = "Paxos:FaultInjection:ControlFile";

    /// <summary>The silo setting naming its storage's sync journal (the engine's PaxosFaultInjectionOptions.SyncJournal).</summary>
    public const string SyncJournalKey = "Paxos:FaultInjection:SyncJournal";

    /// <summary>The sync journal of silo <paramref name="index"/>: how far each of its data files was fsynced (<see cref="DiskFaults.LoseUnsyncedWrites"/>).</summary>
    public string SyncJournal(int index) => JournalFile(Options.WorkDirectory, index);

    /// <summary>The Paxos node id (ip:port) of every silo.</summary>
    public IReadOnlyList<string> PaxosNodes => _silos.PaxosNodes;

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
    public static ProcessCluster Create(ClusterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var work = options.WorkDirectory;
        var silos = new SiloCluster(options.Nodes, work, options.Groups, options.DataFileSize, i =>
        [
            $"--{FaultControlKey}={ControlFile(work, i)}",
            $"--{SyncJournalKey}={JournalFile(work, i)}",
            "--Logging:LogLevel:Default=Warning",
            "--Logging:LogLevel:Orleans.Paxos=Warning",

            // A gateway holds the responses for a client whose connection it lost until it drops the client
            // (Orleans' default: after a minute). After kills and restarts that stalled the harness's client for
            // over a minute, which used up a short run's time for faults.
            "--Orleans:Messaging:ClientDropTimeout=00:00:05",
            .. options.ExtraArguments ?? [],
        ]);
        return new ProcessCluster(options, silos);
    }

    /// <summary>Starts every silo at once: Orleans membership runs on Paxos, so a silo is up once a majority is.</summary>
    public Task StartAsync() => _silos.StartAsync(TimeSpan.FromSeconds(60));

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
    public Task StopAsync() => _silos.StopAsync(TimeSpan.FromSeconds(30));

    /// <inheritdoc />
    public ValueTask DisposeAsync()
    {
        _silos.Dispose();
        return ValueTask.CompletedTask;
    }

    private static string ControlFile(string workDirectory, int index) => Path.Combine(workDirectory, "fault-control-" + index.ToString(CultureInfo.InvariantCulture) + ".txt");

    private static string JournalFile(string workDirectory, int index) => Path.Combine(workDirectory, "sync-journal-" + index.ToString(CultureInfo.InvariantCulture) + ".txt");

    private static void WriteAtomically(string path, string text)
    {
        var temp = path + ".tmp";
        File.WriteAllText(temp, text);
        File.Move(temp, path, overwrite: true);
    }
}
