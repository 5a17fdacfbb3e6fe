using System.Globalization;
using Orleans.Paxos.Faults.Checking;
using Orleans.Paxos.Faults.Cluster;
using Orleans.Paxos.Faults.History;

namespace Orleans.Paxos.Faults;

/// <summary>Options of a fault run or a recording.</summary>
public sealed record FaultRunOptions
{
    /// <summary>Silo processes.</summary>
    public int Nodes { get; init; } = 3;

    /// <summary>Paxos groups.</summary>
    public int Groups { get; init; } = 2;

    /// <summary>How long the workload runs.</summary>
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// The run goes on past <see cref="Duration"/> until the nemesis has injected this many faults (at most four
    /// times <see cref="Duration"/>): on a loaded machine a silo's catch-up can take most of a short run.
    /// </summary>
    public int MinimumFaults { get; init; }

    /// <summary>Concurrent logical clients.</summary>
    public int Clients { get; init; } = 6;

    /// <summary>Keys (small, so operations collide).</summary>
    public int Keys { get; init; } = 4;

    /// <summary>Seed of the workload and the nemesis.</summary>
    public int Seed { get; init; } = Environment.TickCount & 0xFFFF;

    /// <summary>Faults to inject.</summary>
    public FaultKinds Faults { get; init; } = FaultKinds.Kill | FaultKinds.Pause;

    /// <summary>Work folder (data, history); default: a new folder under the temp folder.</summary>
    public string? WorkDirectory { get; init; }

    /// <summary>Gateways of a running cluster (record mode).</summary>
    public IReadOnlyList<string> Gateways { get; init; } = [];

    /// <summary>History file (record mode); default: in the work folder.</summary>
    public string? Output { get; init; }

    /// <summary>Client response timeout; an operation without a reply by then is recorded as info.</summary>
    public TimeSpan OperationTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Parses command-line options.</summary>
    public static FaultRunOptions Parse(ReadOnlySpan<string> args)
    {
        var o = new FaultRunOptions();
        var gateways = new List<string>();
        for (var i = 0; i < args.Length; i++)
        {
            var name = args[i];
            if (i + 1 >= args.Length)
            {
                throw new FormatException($"option {name} needs a value");
            }

            var v = args[++i];
            o = name switch
            {
                "--nodes" => o with { Nodes = FaultProgram.ParseInt(v) },
                "--groups" => o with { Groups = FaultProgram.ParseInt(v) },
                "--seconds" => o with { Duration = TimeSpan.FromSeconds(FaultProgram.ParseInt(v)) },
                "--min-faults" => o with { MinimumFaults = FaultProgram.ParseInt(v) },
                "--clients" => o with { Clients = FaultProgram.ParseInt(v) },
                "--keys" => o with { Keys = FaultProgram.ParseInt(v) },
                "--seed" => o with { Seed = FaultProgram.ParseInt(v) },
                "--work" => o with { WorkDirectory = v },
                "--out" => o with { Output = v },
                "--nemesis" => o with { Faults = ParseFaults(v) },
                "-g" or "--gateway" => o,
                _ => throw new FormatException($"unknown option {name}"),
            };
            if (name is "-g" or "--gateway")
            {
                gateways.Add(v);
            }
        }

        return o with { Gateways = gateways };
    }

    private static FaultKinds ParseFaults(string v) => v.Split(',', StringSplitOptions.RemoveEmptyEntries).Aggregate(FaultKinds.None, (acc, s) => acc | s switch
    {
        "kill" => FaultKinds.Kill,
        "pause" => FaultKinds.Pause,
        "partition" => FaultKinds.Partition,
        "wipe" => FaultKinds.Wipe,
        "index" => FaultKinds.Index,
        "unsynced" => FaultKinds.Unsynced,
        "all" => FaultKinds.Kill | FaultKinds.Pause | FaultKinds.Partition | FaultKinds.Wipe | FaultKinds.Index | FaultKinds.Unsynced,
        "none" => FaultKinds.None,
        _ => throw new FormatException($"unknown fault '{s}' (kill, pause, partition, wipe, index, unsynced, all, none)"),
    });
}

/// <summary>The outcome of a run.</summary>
/// <param name="HistoryPath">The history file (kept).</param>
/// <param name="Report">The history checks.</param>
/// <param name="Faults">Faults injected.</param>
/// <param name="Divergence">Convergence problems (empty: all nodes equal).</param>
/// <param name="Seed">The seed.</param>
/// <param name="WorkDirectory">Data and logs.</param>
public sealed record FaultRunResult(string HistoryPath, HistoryReport Report, IReadOnlyList<FaultEvent> Faults, IReadOnlyList<string> Divergence, int Seed, string WorkDirectory)
{
    /// <summary>Whether every check passed.</summary>
    public bool Passed => Report.Passed && Divergence.Count == 0;
}

/// <summary>A fault run: real silo processes, workload, nemesis, then every check.</summary>
public static class FaultRun
{
    private const int DataFileSize = 256 * 1024;

    /// <summary>Stops the workload and the nemesis once the run lasted its duration and saw its minimum of faults.</summary>
    private static async Task StopWhenDoneAsync(Task running, CancellationTokenSource stop, Nemesis nemesis, FaultRunOptions options)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!running.IsCompleted)
        {
            var elapsed = clock.Elapsed;
            if (elapsed >= options.Duration && (nemesis.Events.Count >= options.MinimumFaults || elapsed >= options.Duration * 4))
            {
                await stop.CancelAsync();
                return;
            }

            await Task.WhenAny(running, Task.Delay(100));
        }
    }

    /// <summary>Starts a cluster of silo processes, runs the workload under the nemesis, heals, checks.</summary>
    public static async Task<FaultRunResult> RunAsync(FaultRunOptions options, TextWriter log)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(log);
        var work = options.WorkDirectory ?? Path.Combine(Path.GetTempPath(), $"paxos-faults-{DateTime.UtcNow:yyyyMMdd-HHmmss}-n{options.Nodes}-s{options.Seed}");
        Directory.CreateDirectory(work);
        var historyPath = Path.Combine(work, "history.jsonl");
        log.WriteLine($"fault run: {options.Nodes} silo processes, {options.Groups} groups, {options.Clients} clients, {options.Keys} keys, {options.Duration.TotalSeconds:0} s, nemesis {options.Faults}, seed {options.Seed}");
        log.WriteLine($"work folder {work}");
        log.WriteLine($"history {historyPath}");

        await using var cluster = ProcessCluster.Create(new ClusterOptions(options.Nodes, options.Groups, work, DataFileSize));
        var divergence = new List<string>();
        HistoryReport report;
        Nemesis nemesis;
        try
        {
            await cluster.StartAsync();
            log.WriteLine($"cluster up: gateways {string.Join(", ", cluster.Gateways)}");
            using (var recorder = new HistoryRecorder(historyPath))
            {
                // With wipe or index faults the clients use the gateways of the silos that can be killed (not
                // silo 0's): grains are activated on the silo whose gateway took the first call, so they never
                // stick to silo 0 and move when their silo is killed, which the lagging-majority sequence
                // of the nemesis relies on.
                var gateways = (options.Faults & (FaultKinds.Wipe | FaultKinds.Index)) != 0 && options.Nodes > 2 ? cluster.Gateways.Skip(1).ToList() : cluster.Gateways;
                await using var client = await HarnessClient.ConnectAsync(gateways, options.OperationTimeout, TimeSpan.FromSeconds(30));
                var workload = new KvWorkload(client.Grains, options.Groups, recorder, options.Clients, options.Keys, options.Seed, options.OperationTimeout + TimeSpan.FromSeconds(1));
                nemesis = new Nemesis(cluster, options.Faults, options.Seed, log, client.Grains, options.Groups);
                using var stop = new CancellationTokenSource();
                var running = Task.WhenAll(workload.RunAsync(stop.Token), nemesis.RunAsync(stop.Token));
                await StopWhenDoneAsync(running, stop, nemesis, options);
                await running;
                log.WriteLine($"workload done: {workload.Completed} ops completed; faults: {nemesis.Summary()}");
                divergence.AddRange(nemesis.Problems);
                if (!await workload.FinalReadsAsync(TimeSpan.FromSeconds(90)))
                {
                    divergence.Add("final reads did not complete within 90 s after healing");
                }

                divergence.AddRange(await ConvergenceChecker.WaitForCatchUpAsync(client.Grains, options.Groups, TimeSpan.FromSeconds(60)));
                report = HistoryReport.Check(recorder.Snapshot());
            }

            await cluster.StopAsync();
            var nodes = Enumerable.Range(0, options.Nodes).Select(cluster.DataDirectory).ToList();
            if (divergence.Count == 0)
            {
                divergence.AddRange(ConvergenceChecker.CompareStores(nodes, options.Groups));
            }

            // Every instance two nodes hold as chosen carries the same value on both.
            var logs = LogConsistencyChecker.Compare(nodes, options.Groups, DataFileSize);
            log.WriteLine($"logs: {logs.Compared} chosen instances compared across nodes, {logs.Mismatches.Count} mismatches");
            divergence.AddRange(logs.Mismatches.Take(20).Select(m => "log: " + m));
        }
        catch (Exception ex) when (ex is TimeoutException or InvalidOperationException)
        {
            for (var i = 0; i < cluster.Silos.Count; i++)
            {
                File.WriteAllText(Path.Combine(work, $"silo-{i}.log"), cluster.Silos[i].Output);
            }

            throw new InvalidOperationException($"fault run failed (seed {options.Seed}, work folder {work}): {ex.Message}", ex);
        }

        for (var i = 0; i < cluster.Silos.Count; i++)
        {
            File.WriteAllText(Path.Combine(work, $"silo-{i}.log"), cluster.Silos[i].Output);
        }

        var result = new FaultRunResult(historyPath, report, nemesis.Events, divergence, options.Seed, work);
        Print(result, log);
        return result;
    }

    /// <summary>Records a history against a running cluster (no nemesis), then checks it.</summary>
    public static async Task<FaultRunResult> RecordAsync(FaultRunOptions options, TextWriter log)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(log);
        if (options.Gateways.Count == 0)
        {
            throw new FormatException("record needs at least one -g ip:port");
        }

        var work = options.WorkDirectory ?? Directory.GetCurrentDirectory();
        var historyPath = Path.GetFullPath(options.Output ?? Path.Combine(work, $"history-{DateTime.UtcNow:yyyyMMdd-HHmmss}-s{options.Seed}.jsonl"));
        log.WriteLine($"recording against {string.Join(", ", options.Gateways)}: {options.Clients} clients, {options.Keys} keys, {options.Duration.TotalSeconds:0} s, seed {options.Seed}");
        log.WriteLine($"history {historyPath}");
        await using var client = await HarnessClient.ConnectAsync(options.Gateways, options.OperationTimeout, TimeSpan.FromSeconds(20));
        var groups = await client.Grains.GetGrain<Grains.IPaxosGroupGrain>(0).GetGroupCountAsync();
        HistoryReport report;
        var divergence = new List<string>();
        using (var recorder = new HistoryRecorder(historyPath))
        {
            var workload = new KvWorkload(client.Grains, groups, recorder, options.Clients, options.Keys, options.Seed, options.OperationTimeout + TimeSpan.FromSeconds(1));
            using var stop = new CancellationTokenSource(options.Duration);
            await workload.RunAsync(stop.Token);
            if (!await workload.FinalReadsAsync(TimeSpan.FromSeconds(60)))
            {
                divergence.Add("final reads did not complete within 60 s");
            }

            divergence.AddRange(await ConvergenceChecker.WaitForCatchUpAsync(client.Grains, groups, TimeSpan.FromSeconds(30)));
            report = HistoryReport.Check(recorder.Snapshot());
        }

        var result = new FaultRunResult(historyPath, report, [], divergence, options.Seed, work);
        Print(result, log);
        return result;
    }

    private static void Print(FaultRunResult r, TextWriter log)
    {
        var ops = r.Report.Operations;
        log.WriteLine(r.Report.Describe(r.Seed.ToString(CultureInfo.InvariantCulture)).TrimEnd());
        foreach (var d in r.Divergence)
        {
            log.WriteLine("  divergence: " + d);
        }

        log.WriteLine($"{(r.Passed ? "PASSED" : "FAILED")}: {ops} ops recorded, {r.Faults.Count} faults injected, check {r.Report.CheckTime.TotalMilliseconds:0} ms, seed {r.Seed}");
        log.WriteLine($"history: {r.HistoryPath}");
    }
}
