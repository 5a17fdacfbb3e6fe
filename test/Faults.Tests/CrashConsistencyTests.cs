using System.Collections.Concurrent;
using System.Globalization;
using Orleans.Paxos.Faults.Checking;
using Orleans.Paxos.Faults.Cluster;
using Orleans.Paxos.Grains;
using Orleans.Paxos.TestSupport;
using Xunit.Abstractions;

namespace Orleans.Paxos.Faults.Tests;

/// <summary>
/// Three real silo processes with tiny data files and a short kept log (roll-over and cleaning all the
/// time) under heavy puts, while a silo is killed -9 every one to two seconds (sometimes again while it
/// recovers) and restarted. Afterwards, with the silos stopped cleanly, every node's Paxos log is opened
/// offline with the engine's storage: every instance two nodes hold as chosen has identical value bytes,
/// and every acknowledged put is in every node's key-value store. Run with each group's own files and with the
/// node-wide shared log (Paxos:SharedLog), whose recovery cuts the data files back to its checkpoint and replays it.
/// Short by default (30 s each); PAXOS_FAULT_SOAK=1 runs five minutes each; PAXOS_FAULT_SEED=N replays a seed.
/// </summary>
[Collection(nameof(ProcessFaultTests))]
[Trait("Category", "Fault")]
public sealed class CrashConsistencyTests(ITestOutputHelper output)
{
    private const int Groups = 2;
    private const int DataFileSize = 64 * 1024;
    private const int Writers = 16;

    private static bool Soak => Environment.GetEnvironmentVariable("PAXOS_FAULT_SOAK") == "1";

    private static int MinimumKills => Soak ? 30 : 3;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Kills_during_roll_over_and_cleaning_leave_identical_chosen_values_and_no_lost_put(bool sharedLog)
    {
        var seed = int.TryParse(Environment.GetEnvironmentVariable("PAXOS_FAULT_SEED"), NumberStyles.Integer, CultureInfo.InvariantCulture, out var s)
            ? s
            : Random.Shared.Next(1, 100_000);
        var duration = TimeSpan.FromSeconds(Soak ? 300 : 30);
        var work = Path.Combine(Path.GetTempPath(), $"paxos-crash-{DateTime.UtcNow:yyyyMMdd-HHmmss}-s{seed}{(sharedLog ? "-shared" : string.Empty)}");
        var log = new StringWriter();
        log.WriteLine($"crash consistency: 3 silo processes, {Groups} groups, data files of {DataFileSize} bytes, hold 1000 instances, shared log {(sharedLog ? "on" : "off")}, {Writers} writers, {duration.TotalSeconds:0} s, seed {seed}, work folder {work}");
        var acked = new ConcurrentDictionary<string, string>(StringComparer.Ordinal);
        var kills = 0;
        var killsDuringStart = 0;
        long attempts = 0;
        await using var cluster = ProcessCluster.Create(new ClusterOptions(3, Groups, work, DataFileSize, ["--Paxos:HoldLogCount=1000", $"--Paxos:SharedLog={(sharedLog ? "true" : "false")}"]));
        try
        {
            await cluster.StartAsync();
            await using (var client = await HarnessClient.ConnectAsync(cluster.Gateways, TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(30)))
            {
                var kv = new KeyValueClient(client.Grains, Groups);
                using var stop = new CancellationTokenSource();
                var writers = Enumerable.Range(0, Writers).Select(w => Task.Run(() => WriteAsync(w), CancellationToken.None)).ToList();
                var stopping = StopWhenCleanedAsync(stop);
                await KillLoopAsync(stop.Token);
                await stopping;
                await Task.WhenAll(writers);
                log.WriteLine($"writes stopped: {acked.Count} puts acknowledged of {Interlocked.Read(ref attempts)} attempted; {kills} kills ({killsDuringStart} during start-up)");

                await cluster.HealAsync();
                var lag = await ConvergenceChecker.WaitForCatchUpAsync(client.Grains, Groups, TimeSpan.FromSeconds(90));
                Assert.True(lag.Count == 0, "nodes did not catch up:\n" + string.Join('\n', lag) + "\n" + log);

                async Task WriteAsync(int writer)
                {
                    var random = new Random(HashCode.Combine(seed, writer));
                    var padding = new string((char)('a' + (writer % 26)), 300);
                    for (var seq = 0; !stop.IsCancellationRequested; seq++)
                    {
                        var key = $"w{writer}-{seq}";
                        var value = $"{key}:{random.Next()}:{padding}";
                        Interlocked.Increment(ref attempts);
                        try
                        {
                            var r = await kv.PutAsync(key, value).WaitAsync(TimeSpan.FromSeconds(6), CancellationToken.None);
                            if (r.IsOk)
                            {
                                acked[key] = value;
                            }
                        }
                        catch (Exception ex) when (ex is TimeoutException or OrleansException or OperationCanceledException or InvalidOperationException or System.Net.Sockets.SocketException)
                        {
                            // The writer backs off after a failed put (workload pacing).
                            await Task.Delay(100, CancellationToken.None);
                        }

                        // Paced (at most about 50 puts/s per writer): unpaced, the groups choose thousands of values a
                        // second and the kept 1000 instances cover a fraction of a second, so every restarted silo
                        // needs checkpoint after checkpoint and the kill loop, which waits for it, kills rarely.
                        await Task.Delay(20, CancellationToken.None);
                    }
                }
            }

            await cluster.StopAsync();
        }
        finally
        {
            for (var i = 0; i < cluster.Silos.Count; i++)
            {
                File.WriteAllText(Path.Combine(work, $"silo-{i}.log"), cluster.Silos[i].Output);
            }

            output.WriteLine(log.ToString());
        }

        var nodes = Enumerable.Range(0, cluster.Silos.Count).Select(cluster.DataDirectory).ToList();
        var events = nodes.Select(LogConsistencyChecker.CountEvents).ToList();
        var comparison = LogConsistencyChecker.Compare(nodes, Groups, DataFileSize);
        var stores = Enumerable.Range(0, Groups).Select(g => nodes.Select(n => ConvergenceChecker.ReadStore(Path.Combine(n, "g" + g, "kv", "kv.db")) ?? new Dictionary<string, string>()).ToList()).ToList();
        var missing = new List<string>();
        foreach (var (key, value) in acked)
        {
            var g = KeyValueClient.GroupOf(key, Groups);
            for (var n = 0; n < nodes.Count; n++)
            {
                if (!stores[g][n].TryGetValue(key, out var row) || !row.StartsWith(value + "@", StringComparison.Ordinal))
                {
                    missing.Add($"{Path.GetFileName(nodes[n])} group {g}: acknowledged put {key} is {(row is null ? "missing" : "different")}");
                }
            }
        }

        var divergence = ConvergenceChecker.CompareStores(nodes, Groups);
        var report = new StringWriter();
        for (var n = 0; n < nodes.Count; n++)
        {
            report.WriteLine($"{Path.GetFileName(nodes[n])}: {events[n].RollOvers} roll-overs, {events[n].FilesDeleted} data files deleted, {events[n].Truncations} torn tails truncated, {cluster.Silos[n].Starts} starts");
        }

        foreach (var r in comparison.Ranges)
        {
            report.WriteLine("  " + LogConsistencyChecker.Describe(r));
        }

        report.WriteLine($"{kills} kills ({killsDuringStart} during start-up), {events.Sum(e => e.RollOvers)} roll-overs, {events.Sum(e => e.FilesDeleted)} data files cleaned, {comparison.Compared} instances compared, {comparison.Mismatches.Count} mismatches, {acked.Count} acknowledged puts checked on every node, {missing.Count} missing");
        foreach (var m in comparison.Mismatches.Take(20).Concat(missing.Take(20)).Concat(divergence.Take(20)))
        {
            report.WriteLine("  " + m);
        }

        output.WriteLine(report.ToString());
        var context = $"seed {seed}, work folder {work}:\n{report}";
        Assert.True(comparison.Mismatches.Count == 0, "chosen values differ: " + context);
        Assert.True(missing.Count == 0, "acknowledged puts lost: " + context);
        Assert.True(divergence.Count == 0, "stores differ: " + context);
        // A restart (Orleans start-up and catch-up) takes 7-10 s here, and the kill loop waits for it: 3 or 4 kills in 30 s.
        Assert.True(kills >= MinimumKills, $"only {kills} kills: {context}");
        Assert.True(events.Sum(e => e.RollOvers) > 0 && events.Sum(e => e.FilesDeleted) > 0, "no roll-over or no cleaning happened: " + context);
        Assert.Contains(comparison.Ranges, r => r.MinChosen > 0);
        Assert.True(comparison.Compared > 1000, $"only {comparison.Compared} instances compared: {context}");
        Assert.True(acked.Count > 500, $"only {acked.Count} puts acknowledged: {context}");

        Directory.Delete(work, recursive: true);

        // Kills silo 1 or 2 (never the Orleans primary) every 1-2 s and restarts it after 0.2-1 s. While one
        // silo is starting it is the only candidate, so a majority stays up.
        async Task KillLoopAsync(CancellationToken stop)
        {
            var random = new Random(seed);
            var restarts = new Task?[cluster.Silos.Count];
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    // The kill schedule: one kill every 1-2 s.
                    await Task.Delay(random.Next(1000, 2000), stop);
                }
                catch (OperationCanceledException)
                {
                    break;
                }

                // A silo still starting is killed again one time in four (in its recovery); otherwise it
                // gets to come up first, so that it takes part in the writes before the next kill.
                var starting = Enumerable.Range(1, cluster.Silos.Count - 1).Where(i => restarts[i] is { IsCompleted: false }).ToList();
                var again = starting.Count > 0 && random.Next(4) == 0;
                if (starting.Count > 0 && !again)
                {
                    await restarts[starting[0]]!;
                    continue;
                }

                var victim = again ? starting[0] : 1 + random.Next(cluster.Silos.Count - 1);
                var silo = cluster.Silos[victim];
                if (silo.IsRunning)
                {
                    silo.Kill();
                    kills++;
                    killsDuringStart += again ? 1 : 0;
                    log.WriteLine($"[{DateTime.UtcNow:HH:mm:ss.fff}] kill -9 silo {victim}{(again ? " during start-up" : string.Empty)}");
                }

                if (restarts[victim] is { } pending)
                {
                    await pending;
                }

                if (!silo.IsRunning)
                {
                    restarts[victim] = RestartAsync(silo, random.Next(200, 1000));
                }
            }

            foreach (var t in restarts)
            {
                if (t is not null)
                {
                    await t;
                }
            }
        }

        // Writes and kills go on for the duration and then until a cleaner has deleted a data file on some node and the
        // kill loop has killed often enough (both depend on how loaded the machine is), for at most three times the
        // duration; the assertions below report what a run that ran out of time lacked.
        async Task StopWhenCleanedAsync(CancellationTokenSource stop)
        {
            var started = System.Diagnostics.Stopwatch.StartNew();
            try
            {
                // A vfile log being created or rotated while it is read means "not yet".
                await Poll.UntilAsync(
                    () => Task.FromResult(started.Elapsed >= duration
                        && Volatile.Read(ref kills) >= MinimumKills
                        && Enumerable.Range(0, cluster.Silos.Count).Any(n => LogConsistencyChecker.CountEvents(cluster.DataDirectory(n)).FilesDeleted > 0)),
                    3 * duration,
                    "a data file cleaned and enough kills",
                    retryOn: e => e is IOException or UnauthorizedAccessException,
                    interval: TimeSpan.FromMilliseconds(500));
            }
            catch (TimeoutException)
            {
            }

            log.WriteLine($"[{DateTime.UtcNow:HH:mm:ss.fff}] writes and kills stop after {started.Elapsed.TotalSeconds:0} s");
            await stop.CancelAsync();
        }

        // Restarts a killed silo after it has been down for delayMs (the kill schedule).
        static async Task RestartAsync(SiloProcess silo, int delayMs)
        {
            await Task.Delay(delayMs);
            try
            {
                await silo.StartAsync(TimeSpan.FromSeconds(60));
            }
            catch (InvalidOperationException) when (!silo.IsRunning)
            {
                // Killed again during start-up; the kill loop starts it once more.
            }
        }
    }
}
