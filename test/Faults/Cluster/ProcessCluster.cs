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

    /// <summary>The silos; index 0 is the Orleans primary (development clustering keeps its membership table).</summary>
    public IReadOnlyList<SiloProcess> Silos { get; }

    /// <summary>Every gateway as ip:port.</summary>
    public IReadOnlyList<string> Gateways => Silos.Select(s => "127.0.0.1:" + SiloProcess.Port(s.GatewayPort)).ToArray();

    /// <summary>The data folder of silo <paramref name="index"/>.</summary>
    public string DataDirectory(int index) => Path.Combine(Options.WorkDirectory, "node-" + SiloProcess.Port(index));

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
                $"--Orleans:PrimarySilo=127.0.0.1:{silo}",
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

    /// <summary>Starts the primary, then the others.</summary>
    public async Task StartAsync()
    {
        await Silos[0].StartAsync(TimeSpan.FromSeconds(60));
        await Task.WhenAll(Silos.Skip(1).Select(s => s.StartAsync(TimeSpan.FromSeconds(60))));
    }

    /// <summary>Resumes paused silos and starts stopped ones.</summary>
    public async Task HealAsync()
    {
        foreach (var s in Silos)
        {
            s.Resume();
        }

        await Task.WhenAll(Silos.Where(s => !s.IsRunning).Select(s => s.StartAsync(TimeSpan.FromSeconds(60))));
    }

    /// <summary>Stops every silo cleanly (SIGINT), the primary last.</summary>
    public async Task StopAsync()
    {
        await Task.WhenAll(Silos.Skip(1).Select(s => s.StopAsync(TimeSpan.FromSeconds(30))));
        await Silos[0].StopAsync(TimeSpan.FromSeconds(30));
    }

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

    private static int FreeRange(int count)
    {
        for (var attempt = 0; attempt < 1000; attempt++)
        {
            var first = Random.Shared.Next(20_000, 60_000);
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
