using System.Globalization;

namespace Orleans.Paxos.TestSupport;

/// <summary>
/// N processes of the Silo program in single-silo mode on 127.0.0.1, each its own Paxos node and all of them the
/// members of every group; Orleans clustering, grain storage and reminders on Paxos (the program's defaults),
/// no primary silo. Ports come from <see cref="LoopbackPorts"/> (three consecutive runs: Paxos, silo, gateway);
/// silo i keeps its data in <c>node-i</c> under the work folder. Not started on creation.
/// </summary>
public sealed class SiloCluster : IDisposable
{
    private readonly int _paxosPort;
    private readonly int _gatewayPort;

    /// <summary>Creates the processes (not started).</summary>
    /// <param name="nodes">Silo processes.</param>
    /// <param name="workDirectory">Their working folder and where their data folders go.</param>
    /// <param name="groups">Paxos groups.</param>
    /// <param name="dataFileSize">Preallocated log data file size in bytes (small: roll-over happens).</param>
    /// <param name="moreArguments">More configuration for silo i (e.g. <c>--Paxos:ProposeTimeout=...</c>).</param>
    public SiloCluster(int nodes, string workDirectory, int groups = 3, long dataFileSize = 1 << 20, Func<int, IEnumerable<string>>? moreArguments = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(nodes, 1);
        WorkDirectory = workDirectory;
        Directory.CreateDirectory(workDirectory);
        _paxosPort = LoopbackPorts.Range(nodes);
        var siloPort = LoopbackPorts.Range(nodes);
        _gatewayPort = LoopbackPorts.Range(nodes);
        PaxosNodes = [.. Enumerable.Range(0, nodes).Select(i => Endpoint(_paxosPort + i))];
        Gateways = [.. Enumerable.Range(0, nodes).Select(i => Endpoint(_gatewayPort + i))];
        var silos = new List<SiloProcess>();
        for (var i = 0; i < nodes; i++)
        {
            var args = new List<string>
            {
                $"--Paxos:MyNode={PaxosNodes[i]}",
                $"--Paxos:GroupCount={groups.ToString(CultureInfo.InvariantCulture)}",
                $"--Paxos:StoragePath={DataDirectory(i)}",
                $"--Paxos:DataFileSize={dataFileSize.ToString(CultureInfo.InvariantCulture)}",
                $"--Orleans:SiloPort={(siloPort + i).ToString(CultureInfo.InvariantCulture)}",
                $"--Orleans:GatewayPort={GatewayPort(i).ToString(CultureInfo.InvariantCulture)}",

                // Several silos on one machine: no shared Prometheus port.
                "--Telemetry:PrometheusPort=0",
            };
            args.AddRange(PaxosNodes.Select((node, m) => $"--Paxos:Members:{m.ToString(CultureInfo.InvariantCulture)}={node}"));
            args.AddRange(moreArguments?.Invoke(i) ?? []);
            silos.Add(new SiloProcess(workDirectory, args, i, "silo " + i.ToString(CultureInfo.InvariantCulture)));
        }

        Silos = silos;
    }

    /// <summary>The working folder.</summary>
    public string WorkDirectory { get; }

    /// <summary>The silos, in member order.</summary>
    public IReadOnlyList<SiloProcess> Silos { get; }

    /// <summary>Every silo's Paxos node id (ip:port).</summary>
    public IReadOnlyList<string> PaxosNodes { get; }

    /// <summary>Every silo's Orleans gateway (ip:port).</summary>
    public IReadOnlyList<string> Gateways { get; }

    /// <summary>Silo <paramref name="index"/>'s Orleans gateway port.</summary>
    public int GatewayPort(int index) => _gatewayPort + index;

    /// <summary>Silo <paramref name="index"/>'s data folder.</summary>
    public string DataDirectory(int index) => Path.Combine(WorkDirectory, "node-" + index.ToString(CultureInfo.InvariantCulture));

    /// <summary>Starts every silo at once and waits until all are up: Orleans membership runs on Paxos, so a silo is up only once a majority is.</summary>
    public Task StartAsync(TimeSpan timeout) => Task.WhenAll(Silos.Select(s => s.StartAsync(timeout)));

    /// <summary>Stops every silo cleanly (SIGINT), all at once so that their last membership writes find a majority.</summary>
    public Task StopAsync(TimeSpan timeout) => Task.WhenAll(Silos.Select(s => s.StopAsync(timeout)));

    /// <summary>Every silo's output, each under a heading (for a look after a failure).</summary>
    public string Output() => string.Concat(Silos.Select(s => $"=== {s.Name}\n{s.Output}"));

    /// <summary>Kills every silo still running.</summary>
    public void Dispose()
    {
        foreach (var s in Silos)
        {
            s.Dispose();
        }
    }

    private static string Endpoint(int port) => "127.0.0.1:" + port.ToString(CultureInfo.InvariantCulture);
}
