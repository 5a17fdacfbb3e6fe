using System.Globalization;
using Orleans.Paxos.TestSupport;

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

    /// <summary>kill -9 a silo, delete its whole data folder (a replaced disk), restart it.</summary>
    Wipe = 8,

    /// <summary>kill -9 a silo, delete every <c>g&lt;N&gt;/index.db</c> (with -wal, -shm), restart it.</summary>
    Index = 16,

    /// <summary>kill -9 a silo, lose every data-file write not yet fsynced (as a power loss would), restart it.</summary>
    Unsynced = 32,
}

/// <summary>One injected fault.</summary>
/// <param name="Kind">What.</param>
/// <param name="Silo">Which silo.</param>
/// <param name="Start">When, since the run started.</param>
/// <param name="Duration">How long until healed.</param>
/// <param name="Detail">What exactly (e.g. the sides of a partition).</param>
/// <param name="LostBytes">Unsynced faults: the written bytes that were not durable and were lost.</param>
public sealed record FaultEvent(FaultKinds Kind, int Silo, TimeSpan Start, TimeSpan Duration, string? Detail = null, long LostBytes = 0);

/// <summary>
/// Injects one fault at a time into a <see cref="ProcessCluster"/>, seeded; each round tries every enabled
/// kind once, in a seeded order. kill -9 then restart (never silo 0, so that the history keeps one silo
/// that never restarts), pause/resume (any silo, briefly, so Orleans
/// does not declare it dead), partitions of the Paxos traffic (<see cref="ProcessCluster.SetPartition"/>:
/// majority/minority, bridge, one-way), and disk faults on a killed silo before its restart: lose its
/// unsynced writes, wipe its data folder, or delete its indexes. Keeps a majority up; a partition may leave
/// no majority connected (a bridge) for a while, then heals.
/// </summary>
/// <remarks>
/// <para>Wipe and index faults lose data on one silo only, and the next one comes only after that silo has
/// been restarted and has caught up with the others (its instance in every group reached what the others
/// had when the fault healed; checked through the group grains). A silo that does not catch up within
/// three minutes is a <see cref="Problems">problem</see>, and no further data is destroyed in that run.</para>
/// <para>Half of them (always the first of a run, which is a wipe when wipes are on, on three or more silos) are a lagging-majority sequence,
/// the one that loses chosen values when a rebuilt node votes at once: a minority A is cut off and one
/// of it killed -9 (so that grain activations move to the others, which choose values without A), then
/// restarted still cut off (its Paxos node runs; it joins Orleans once it reaches a majority); silo B is
/// killed, damaged and restarted; then the rest C (with silo 0)
/// is cut off instead, so that A and B (a majority) are connected and only C holds the values chosen while
/// A was away; then everything heals. Only B loses data; at most one silo is down at a time.</para>
/// </remarks>
public sealed class Nemesis(ProcessCluster cluster, FaultKinds kinds, int seed, TextWriter log, IGrainFactory? grains = null, int groups = 0)
{
    // A restarted silo joins Orleans once its Paxos node has caught up (the membership table is on Paxos): on two
    // cores shared by five silos and the workload, that can take more than a minute, and killing a silo that is
    // still catching up only starts its Orleans join again.
    private static readonly TimeSpan CatchUpTimeout = TimeSpan.FromSeconds(180);
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(180);
    private readonly List<FaultEvent> _events = [];
    private readonly List<string> _problems = [];
    private readonly System.Diagnostics.Stopwatch _clock = new();
    private bool _dataLossDone;

    /// <summary>The faults injected so far.</summary>
    public IReadOnlyList<FaultEvent> Events => _events;

    /// <summary>What went wrong while injecting: a silo that did not catch up after losing its data.</summary>
    public IReadOnlyList<string> Problems => _problems;

    /// <summary>Runs until <paramref name="stop"/>, then heals everything.</summary>
    public async Task RunAsync(CancellationToken stop)
    {
        var random = new Random(seed);
        _clock.Restart();
        var n = cluster.Silos.Count;
        var options = new List<FaultKinds>();
        foreach (var k in new[] { FaultKinds.Kill, FaultKinds.Pause, FaultKinds.Partition, FaultKinds.Unsynced, FaultKinds.Wipe, FaultKinds.Index })
        {
            // Every kind but pause needs a silo other than silo 0 (to kill) or another silo (to cut off).
            if (kinds.HasFlag(k) && (k == FaultKinds.Pause || n > 1))
            {
                options.Add(k);
            }
        }

        var round = new Queue<FaultKinds>();
        try
        {
            while (!stop.IsCancellationRequested && options.Count > 0)
            {
                await HoldAsync(TimeSpan.FromMilliseconds(random.Next(1000, 3000)), stop);
                if (stop.IsCancellationRequested)
                {
                    break;
                }

                if (round.Count == 0)
                {
                    var order = options.OrderBy(_ => random.Next()).ToList();
                    if (!_dataLossDone && order.IndexOf(FaultKinds.Index) is var i && order.IndexOf(FaultKinds.Wipe) is var w && i >= 0 && w > i)
                    {
                        // The first disk loss of a run is a wipe (the scenario that loses chosen values).
                        (order[i], order[w]) = (order[w], order[i]);
                    }

                    foreach (var k in order)
                    {
                        round.Enqueue(k);
                    }
                }

                var kind = round.Dequeue();
                if (!options.Contains(kind))
                {
                    continue;
                }

                var start = _clock.Elapsed;
                if (kind == FaultKinds.Kill)
                {
                    // Up to a minority at once on five nodes (two), one on three. Two silos killed together
                    // can keep each other's restart from joining the Orleans cluster until the old
                    // incarnation is declared dead, so the short default run kills one at a time.
                    var most = Environment.GetEnvironmentVariable("PAXOS_FAULT_SOAK") == "1" ? (n - 1) / 2 : 1;
                    var victims = cluster.Silos.Skip(1).OrderBy(_ => random.Next()).Take(random.Next(1, most + 1)).ToList();
                    foreach (var v in victims)
                    {
                        v.Kill();
                    }

                    var hold = TimeSpan.FromMilliseconds(random.Next(1000, 5000));
                    Log(start, $"kill -9 silo {string.Join(",", victims.Select(v => v.Index))}, restart in {hold.TotalSeconds:0.0}s");
                    await HoldAsync(hold, stop);
                    await Task.WhenAll(victims.Select(RestartAsync));
                    foreach (var v in victims)
                    {
                        _events.Add(new FaultEvent(FaultKinds.Kill, v.Index, start, _clock.Elapsed - start));
                    }
                }
                else if (kind == FaultKinds.Partition)
                {
                    var (drops, detail, center) = ChoosePartition(random, n);
                    var hold = TimeSpan.FromMilliseconds(random.Next(1000, 6000));
                    Log(start, $"partition {detail} for {hold.TotalSeconds:0.0}s");
                    cluster.SetPartition(drops);
                    await HoldAsync(hold, stop);
                    cluster.HealPartition();
                    Log(_clock.Elapsed, "partition healed");
                    _events.Add(new FaultEvent(FaultKinds.Partition, center, start, _clock.Elapsed - start, detail));
                }
                else if (kind == FaultKinds.Pause)
                {
                    var victim = cluster.Silos[random.Next(n)];
                    var hold = TimeSpan.FromMilliseconds(random.Next(500, 6000));
                    Log(start, $"kill -STOP silo {victim.Index} for {hold.TotalSeconds:0.0}s");
                    victim.Pause();
                    await HoldAsync(hold, stop);
                    victim.Resume();
                    _events.Add(new FaultEvent(FaultKinds.Pause, victim.Index, start, _clock.Elapsed - start));
                }
                else if (kind == FaultKinds.Unsynced)
                {
                    // A plain kill first, so that the restarted silo catches up: the values it learns are
                    // written without fsync (as in PhxPaxos). The second kill comes as soon as its data files
                    // hold more bytes past what was fsynced than at its start (or after 15 s); they are lost.
                    // The node may fsync between that check and the kill: then it is tried again (up to four
                    // times), each time after a few seconds down so that there is something to catch up.
                    var victim = cluster.Silos[1 + random.Next(n - 1)];
                    victim.Kill();
                    string detail = string.Empty;
                    long lost = 0;
                    for (var attempt = 1; attempt <= 4 && lost == 0; attempt++)
                    {
                        var behind = TimeSpan.FromMilliseconds(random.Next(3000, 6000));
                        Log(attempt == 1 ? start : _clock.Elapsed, $"kill -9 silo {victim.Index}, restart in {behind.TotalSeconds:0.0}s{(attempt == 1 ? string.Empty : $" (try {attempt}: nothing was lost)")}");
                        await HoldAsync(behind, CancellationToken.None);

                        // Its Paxos node catches up while Orleans is still starting (the membership table needs
                        // it), so watch from the launch, not from when the silo says it is up.
                        victim.Launch();
                        var up = _clock.Elapsed;
                        var before = UnsyncedBytes(victim.Index);
                        await Poll.LastAsync(() => Task.FromResult(UnsyncedBytes(victim.Index)), bytes => bytes > before, TimeSpan.FromSeconds(15), TimeSpan.FromMilliseconds(2));

                        var after = _clock.Elapsed - up;
                        detail = Damage(victim, FaultKinds.Unsynced, out lost);
                        Log(_clock.Elapsed, $"{after.TotalSeconds:0.0}s after its restart: kill -9 silo {victim.Index}, {detail}");
                    }

                    await RestartAsync(victim);
                    _events.Add(new FaultEvent(FaultKinds.Unsynced, victim.Index, start, _clock.Elapsed - start, detail, lost));
                }
                else
                {
                    var lagging = n >= 3 && (!_dataLossDone || random.Next(2) == 0);
                    _dataLossDone = true;
                    var caughtUp = lagging
                        ? await LaggingMajorityAsync(kind, random, start, stop)
                        : await DataLossAsync(kind, random, start, stop);
                    if (!caughtUp)
                    {
                        options.Remove(FaultKinds.Wipe);
                        options.Remove(FaultKinds.Index);
                        Log(_clock.Elapsed, "no more wipe or index faults in this run: the last damaged silo did not catch up");
                    }
                }

                // A silo that exited on its own (e.g. declared dead by Orleans) is restarted too.
                foreach (var s in cluster.Silos.Where(s => !s.IsRunning))
                {
                    Log(_clock.Elapsed, $"silo {s.Index} exited on its own; restarting");
                    await RestartAsync(s);
                }
            }
        }
        finally
        {
            await cluster.HealAsync();
            Log(_clock.Elapsed, $"healed: {Summary()}");
        }
    }

    /// <summary>Kills one silo, wipes it or deletes its indexes, restarts it and waits until it has caught up.</summary>
    private async Task<bool> DataLossAsync(FaultKinds kind, Random random, TimeSpan start, CancellationToken stop)
    {
        var victim = cluster.Silos[1 + random.Next(cluster.Silos.Count - 1)];
        var hold = TimeSpan.FromMilliseconds(random.Next(500, 3000));
        var detail = Damage(victim, kind, out _);
        Log(start, $"kill -9 silo {victim.Index}, {detail}, restart in {hold.TotalSeconds:0.0}s");
        await HoldAsync(hold, stop);
        await RestartAsync(victim);
        var caughtUp = await WaitForCatchUpAsync(victim);
        _events.Add(new FaultEvent(kind, victim.Index, start, _clock.Elapsed - start, detail));
        return caughtUp;
    }

    /// <summary>The lagging-majority sequence (see the remarks of <see cref="Nemesis"/>).</summary>
    private async Task<bool> LaggingMajorityAsync(FaultKinds kind, Random random, TimeSpan start, CancellationToken stop)
    {
        var n = cluster.Silos.Count;
        var killable = Enumerable.Range(1, n - 1).OrderBy(_ => random.Next()).ToList();
        var victim = cluster.Silos[killable[0]];
        var lagging = killable.Skip(1).Take(n / 2).ToList();
        var rest = Enumerable.Range(0, n).Where(i => i != victim.Index && !lagging.Contains(i)).ToHashSet();
        var down = cluster.Silos[lagging[0]];
        var firstHold = TimeSpan.FromMilliseconds(random.Next(1500, 3000));
        var secondHold = TimeSpan.FromMilliseconds(random.Next(8000, 12000));

        // A goes down (its grain activations move to the others, which choose values without A).
        cluster.SetPartition(Cut([.. lagging], [.. Enumerable.Range(0, n).Except(lagging)]));
        down.Kill();
        Log(start, $"lagging majority: kill -9 silo {down.Index}, cut off {Side(lagging)} for {firstHold.TotalSeconds:0.0}s");
        await HoldAsync(firstHold, stop);

        // Its Paxos node runs at once; its Orleans start waits for a Paxos majority (the membership table).
        down.Launch();
        Log(_clock.Elapsed, $"lagging majority: silo {down.Index} started, still cut off");

        // B loses its data while A is still away. It does not vote until that is safe, so with A away no
        // majority may form: its Orleans start (membership on Paxos) waits, like A's.
        var detail = Damage(victim, kind, out _);
        Log(_clock.Elapsed, $"lagging majority: kill -9 silo {victim.Index}, {detail}, restart");
        victim.Launch();

        // The partition switches at a seeded moment of B's start-up: schedule, not a wait (every moment is a valid one).
        await HoldAsync(TimeSpan.FromMilliseconds(random.Next(1000, 3000)), stop);

        // Only C holds the values chosen while A was away; C is cut off, A and B (a majority) connected.
        cluster.SetPartition(Cut(rest, [.. Enumerable.Range(0, n).Except(rest)]));
        Log(_clock.Elapsed, $"lagging majority: silo {victim.Index} started; cut off {Side(rest)} instead ({Side(lagging.Append(victim.Index))} connected) for {secondHold.TotalSeconds:0.0}s");
        await HoldAsync(secondHold, stop);
        cluster.HealPartition();
        Log(_clock.Elapsed, "lagging majority: healed");
        await EnsureUpAsync(down);
        await EnsureUpAsync(victim);
        var caughtUp = await WaitForCatchUpAsync(victim);
        _events.Add(new FaultEvent(kind, victim.Index, start, _clock.Elapsed - start, $"{detail}; lagging {Side(lagging)}, then {Side(rest)} cut off"));
        return caughtUp;
    }

    /// <summary>Kills <paramref name="victim"/> (kill -9) and damages its data folder; returns what was done.</summary>
    private string Damage(SiloProcess victim, FaultKinds kind, out long lostBytes)
    {
        victim.Kill();
        lostBytes = 0;
        var dir = cluster.DataDirectory(victim.Index);
        var journal = cluster.SyncJournal(victim.Index);
        switch (kind)
        {
            case FaultKinds.Wipe:
                return $"wiped its data folder ({DiskFaults.Wipe(dir, journal)} files)";
            case FaultKinds.Index:
                return $"deleted its indexes ({DiskFaults.DeleteIndexes(dir)} files)";
            default:
                var loss = DiskFaults.LoseUnsyncedWrites(dir, journal);
                lostBytes = loss.Bytes;
                return $"lost its unsynced writes ({loss.Bytes} bytes in {loss.Files} data files{(loss.Untracked > 0 ? $", {loss.Untracked} files not in the journal" : string.Empty)})";
        }
    }

    /// <summary>
    /// Waits until <paramref name="silo"/>'s Paxos node has, in every group, reached the instance the most
    /// advanced other node had when the wait began. Without a grain client it returns at once.
    /// </summary>
    private async Task<bool> WaitForCatchUpAsync(SiloProcess silo)
    {
        if (grains is null || groups <= 0)
        {
            return true;
        }

        var node = cluster.PaxosNodes[silo.Index];
        var targets = new ulong?[groups];
        var last = new string[groups];
        async Task<bool> CaughtUpAsync()
        {
            var done = true;
            for (var g = 0; g < groups; g++)
            {
                try
                {
                    var status = await grains.GetGrain<Grains.IPaxosGroupGrain>(g).GetStatusAsync().WaitAsync(TimeSpan.FromSeconds(10));
                    targets[g] ??= status.Nodes.Where(x => x.Reachable && x.Node != node).Select(x => (ulong?)x.NowInstanceId).Max();
                    var mine = status.Nodes.FirstOrDefault(x => x.Node == node);
                    last[g] = string.Join(", ", status.Nodes.Select(x => x.Reachable ? $"{x.Node} at {x.NowInstanceId}{(x.StoppedReason is null ? string.Empty : " stopped: " + x.StoppedReason)}{(x.NotVoting is null ? string.Empty : " not voting: " + x.NotVoting)}" : $"{x.Node} unreachable"));

                    // Caught up and voting again: a second silo losing its data while this one still rebuilds
                    // could leave no majority that may vote (safe, but the run would stall).
                    done &= targets[g] is { } target && mine is { Reachable: true, NotVoting: null } && mine.NowInstanceId >= target;
                }
                catch (Exception ex) when (ex is TimeoutException or OrleansException)
                {
                    last[g] = "status unavailable: " + ex.Message;
                    done = false;
                }
            }

            return done;
        }

        if (await Poll.LastAsync(CaughtUpAsync, done => done, CatchUpTimeout, TimeSpan.FromMilliseconds(500)))
        {
            Log(_clock.Elapsed, $"silo {silo.Index} caught up and votes ({string.Join("; ", Enumerable.Range(0, groups).Select(g => $"group {g} at {targets[g]}"))})");
            return true;
        }

        var problem = $"silo {silo.Index} ({node}) did not catch up within {CatchUpTimeout.TotalSeconds:0} s after losing its data: " +
            string.Join("; ", Enumerable.Range(0, groups).Select(g => $"group {g} target {targets[g]?.ToString(CultureInfo.InvariantCulture) ?? "?"}: {last[g]}"));
        _problems.Add(problem);
        Log(_clock.Elapsed, problem);
        return false;
    }

    /// <summary>Bytes of the silo's data files past their last fsync (a crash before it had written any may leave some).</summary>
    private long UnsyncedBytes(int silo)
    {
        try
        {
            return DiskFaults.CountUnsyncedWrites(cluster.DataDirectory(silo), cluster.SyncJournal(silo)).Bytes;
        }
        catch (IOException)
        {
            return 0; // a data file deleted by log cleaning while it was read
        }
    }

    private void Log(TimeSpan at, string text) => log.WriteLine($"[nemesis {at.TotalSeconds,6:0.0}s] {text}");

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

    /// <summary>
    /// Starts a stopped silo. A silo whose start-up times out or fails is killed and started again (three
    /// tries): a silo killed together with another may not join Orleans until the other's old incarnation
    /// is declared dead, since joining silos first ping every silo still listed as active.
    /// </summary>
    private async Task RestartAsync(SiloProcess silo)
    {
        for (var attempt = 1; !silo.IsRunning; attempt++)
        {
            try
            {
                await silo.StartAsync(StartTimeout);
            }
            catch (Exception ex) when (attempt < 3 && ex is TimeoutException or InvalidOperationException)
            {
                silo.Kill();
                Log(_clock.Elapsed, $"silo {silo.Index} did not start (try {attempt}): {ex.Message.Split('\n')[0]}; starting it again");
            }
        }
    }

    /// <summary>Waits for a silo started by <see cref="SiloProcess.Launch"/>; one that does not come up is restarted.</summary>
    private async Task EnsureUpAsync(SiloProcess silo)
    {
        try
        {
            await silo.WaitUntilUpAsync(StartTimeout);
        }
        catch (Exception ex) when (ex is TimeoutException or InvalidOperationException)
        {
            silo.Kill();
            Log(_clock.Elapsed, $"silo {silo.Index} did not come up after the partition healed: {ex.Message.Split('\n')[0]}; starting it again");
            await RestartAsync(silo);
        }
    }

    /// <summary>
    /// The nemesis's schedule: the pause before the next fault, how long a fault lasts or a silo stays down.
    /// Pacing of the fault workload, not a wait for something to happen; ends early when the run stops.
    /// </summary>
    private static async Task HoldAsync(TimeSpan delay, CancellationToken stop)
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
