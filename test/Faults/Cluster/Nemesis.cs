using System.Globalization;

namespace Orleans.Paxos.Faults.Cluster;

/// <summary>The faults a nemesis may inject.</summary>
[Flags]
public enum FaultKinds
{
    /// <summary>No faults.</summary>
    None = 0,

    /// <summary>kill -9 a silo, later restart it from its data folder.</summary>
    Kill = 1,

    /// <summary>kill -STOP a silo, later kill -CONT.</summary>
    Pause = 2,

    /// <summary>Cut Paxos traffic between silos (majority/minority, bridge, one-way), later heal.</summary>
    Partition = 4,
}

/// <summary>One injected fault.</summary>
/// <param name="Kind">What.</param>
/// <param name="Silo">Which silo.</param>
/// <param name="Start">When, since the run started.</param>
/// <param name="Duration">How long until healed.</param>
/// <param name="Detail">What exactly (e.g. the sides of a partition).</param>
public sealed record FaultEvent(FaultKinds Kind, int Silo, TimeSpan Start, TimeSpan Duration, string? Detail = null);

/// <summary>
/// Injects one fault at a time into a <see cref="ProcessCluster"/>, seeded: kill -9 then restart
/// (never silo 0, so that the history keeps one silo that never restarts),
/// pause/resume (any silo, briefly, so Orleans does not declare it dead), and partitions of the Paxos
/// traffic (<see cref="ProcessCluster.SetPartition"/>: majority/minority, bridge, one-way). Keeps a
/// majority up; a partition may leave no majority connected (a bridge) for a while, then heals.
/// </summary>
public sealed class Nemesis(ProcessCluster cluster, FaultKinds kinds, int seed, TextWriter log)
{
    private readonly List<FaultEvent> _events = [];

    /// <summary>The faults injected so far.</summary>
    public IReadOnlyList<FaultEvent> Events => _events;

    /// <summary>Runs until <paramref name="stop"/>, then heals everything.</summary>
    public async Task RunAsync(CancellationToken stop)
    {
        var random = new Random(seed);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var options = new List<FaultKinds>();
        if (kinds.HasFlag(FaultKinds.Kill) && cluster.Silos.Count > 1)
        {
            options.Add(FaultKinds.Kill);
        }

        if (kinds.HasFlag(FaultKinds.Pause))
        {
            options.Add(FaultKinds.Pause);
        }

        if (kinds.HasFlag(FaultKinds.Partition) && cluster.Silos.Count > 1)
        {
            options.Add(FaultKinds.Partition);
        }

        try
        {
            while (!stop.IsCancellationRequested && options.Count > 0)
            {
                await Delay(TimeSpan.FromMilliseconds(random.Next(1000, 3000)), stop);
                if (stop.IsCancellationRequested)
                {
                    break;
                }

                var kind = options[random.Next(options.Count)];
                var start = clock.Elapsed;
                if (kind == FaultKinds.Kill)
                {
                    // Up to a minority at once on five nodes (two), one on three. Two silos killed together
                    // can keep each other's restart from joining the Orleans cluster until the old
                    // incarnation is declared dead, so the short default run kills one at a time.
                    var most = Environment.GetEnvironmentVariable("PAXOS_FAULT_SOAK") == "1" ? (cluster.Silos.Count - 1) / 2 : 1;
                    var victims = cluster.Silos.Skip(1).OrderBy(_ => random.Next()).Take(random.Next(1, most + 1)).ToList();
                    foreach (var v in victims)
                    {
                        v.Kill();
                    }

                    var hold = TimeSpan.FromMilliseconds(random.Next(1000, 5000));
                    log.WriteLine($"[nemesis {start.TotalSeconds,6:0.0}s] kill -9 silo {string.Join(",", victims.Select(v => v.Index))}, restart in {hold.TotalSeconds:0.0}s");
                    await Delay(hold, stop);
                    await Task.WhenAll(victims.Select(RestartAsync));
                    foreach (var v in victims)
                    {
                        _events.Add(new FaultEvent(FaultKinds.Kill, v.Index, start, clock.Elapsed - start));
                    }
                }
                else if (kind == FaultKinds.Partition)
                {
                    var (drops, detail, center) = ChoosePartition(random, cluster.Silos.Count);
                    var hold = TimeSpan.FromMilliseconds(random.Next(1000, 6000));
                    log.WriteLine($"[nemesis {start.TotalSeconds,6:0.0}s] partition {detail} for {hold.TotalSeconds:0.0}s");
                    cluster.SetPartition(drops);
                    await Delay(hold, stop);
                    cluster.HealPartition();
                    log.WriteLine($"[nemesis {clock.Elapsed.TotalSeconds,6:0.0}s] partition healed");
                    _events.Add(new FaultEvent(FaultKinds.Partition, center, start, clock.Elapsed - start, detail));
                }
                else
                {
                    var victim = cluster.Silos[random.Next(cluster.Silos.Count)];
                    var hold = TimeSpan.FromMilliseconds(random.Next(500, 6000));
                    log.WriteLine($"[nemesis {start.TotalSeconds,6:0.0}s] kill -STOP silo {victim.Index} for {hold.TotalSeconds:0.0}s");
                    victim.Pause();
                    await Delay(hold, stop);
                    victim.Resume();
                    _events.Add(new FaultEvent(FaultKinds.Pause, victim.Index, start, clock.Elapsed - start));
                }

                // A silo that exited on its own (e.g. declared dead by Orleans) is restarted too.
                foreach (var s in cluster.Silos.Where(s => !s.IsRunning))
                {
                    log.WriteLine($"[nemesis {clock.Elapsed.TotalSeconds,6:0.0}s] silo {s.Index} exited on its own; restarting");
                    await RestartAsync(s);
                }
            }
        }
        finally
        {
            await cluster.HealAsync();
            log.WriteLine($"[nemesis {clock.Elapsed.TotalSeconds,6:0.0}s] healed: {Summary()}");
        }
    }

    /// <summary>Counts per fault kind.</summary>
    public string Summary() =>
        string.Join(", ", _events.GroupBy(e => e.Kind).Select(g => $"{g.Key.ToString().ToLowerInvariant()} x{g.Count().ToString(CultureInfo.InvariantCulture)}"))
        is { Length: > 0 } s ? s : "no faults";

    /// <summary>
    /// A random partition of <paramref name="n"/> silos as (from, to) pairs whose frames are dropped, its
    /// description, and the silo it centres on (the minority's first, the bridge, or the one-way sender).
    /// </summary>
    public static (List<(int From, int To)> Drops, string Detail, int Center) ChoosePartition(Random random, int n)
    {
        ArgumentNullException.ThrowIfNull(random);
        var order = Enumerable.Range(0, n).OrderBy(_ => random.Next()).ToList();
        var shape = random.Next(n >= 3 ? 3 : 2);
        if (shape == 0)
        {
            // Majority/minority: the minority (1 of 3, 1 or 2 of 5) hears nobody in the majority.
            var minority = order.Take(random.Next(1, ((n - 1) / 2) + 1)).ToHashSet();
            var majority = order.Where(i => !minority.Contains(i)).ToHashSet();
            return (Cut(minority, majority), $"majority/minority {Side(majority)} | {Side(minority)}", minority.Min());
        }

        if (shape == 1)
        {
            // One-way: one silo's frames to some others are dropped; it still hears them.
            var from = order[0];
            var to = order.Skip(1).Take(random.Next(1, n)).ToHashSet();
            return (to.Select(t => (from, t)).ToList(), $"one-way {from} -> {Side(to)} dropped", from);
        }

        // Bridge: two halves that cannot hear each other; the bridge hears both (on 5: {a,b} - c - {d,e}).
        var bridge = order[0];
        var rest = order.Skip(1).ToList();
        var left = rest.Take(rest.Count / 2).ToHashSet();
        var right = rest.Skip(rest.Count / 2).ToHashSet();
        return (Cut(left, right), $"bridge {Side(left)} - {bridge} - {Side(right)}", bridge);
    }

    private static List<(int From, int To)> Cut(HashSet<int> a, HashSet<int> b) =>
        [.. a.SelectMany(x => b.Select(y => (x, y))), .. b.SelectMany(y => a.Select(x => (y, x)))];

    private static string Side(IEnumerable<int> silos) => "{" + string.Join(",", silos.Order()) + "}";

    private static async Task RestartAsync(SiloProcess silo)
    {
        if (!silo.IsRunning)
        {
            await silo.StartAsync(TimeSpan.FromSeconds(60));
        }
    }

    private static async Task Delay(TimeSpan delay, CancellationToken stop)
    {
        try
        {
            await Task.Delay(delay, stop);
        }
        catch (OperationCanceledException)
        {
        }
    }
}
