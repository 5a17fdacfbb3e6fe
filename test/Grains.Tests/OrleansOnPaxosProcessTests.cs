using System.Collections.Concurrent;
using System.Diagnostics;
using Orleans.Paxos.Grains.Clustering;
using Orleans.Paxos.Grains.Examples;
using Xunit.Abstractions;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>
/// Orleans itself on Paxos, with real silo processes: clustering, grain storage and reminders survive kill -9 of any
/// silo, a restarted silo rejoins without making another terminate, and a lost majority recovers by itself.
/// Runs alone (six silo processes on a small machine would otherwise slow every other test down).
/// </summary>
[Trait("Category", "Process")]
[Collection(nameof(OrleansOnPaxosProcessTests))]
public sealed class OrleansOnPaxosProcessTests(ITestOutputHelper output)
{
    private const int Registers = 12;

    [Fact]
    public async Task Kill_9_of_each_silo_in_turn_keeps_grain_state_and_reminders_served()
    {
        var clock = Stopwatch.StartNew();
        await using var cluster = new SiloProcessCluster();
        await cluster.StartAsync();
        var client = cluster.Client;
        Console.WriteLine($"[failover] cluster up at {clock.Elapsed.TotalSeconds:0.0} s");

        var ticks = Enumerable.Range(0, 6).Select(i => client.GetGrain<ITickCounterGrain>("tick-" + i)).ToArray();
        var tickHosts = new string[ticks.Length];
        for (var i = 0; i < ticks.Length; i++)
        {
            // Right after start the first reminder writes can outlast the client's 5 s response timeout on a loaded
            // machine; starting a counter again only updates its reminder.
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    tickHosts[i] = await ticks[i].StartAsync(TimeSpan.FromSeconds(1));
                    break;
                }
                catch (TimeoutException) when (attempt < 6)
                {
                    Console.WriteLine($"[failover] starting tick-{i} timed out (attempt {attempt}); again");
                }
            }
        }

        using var writer = new RegisterWriter(client);
        await WaitUntilAsync(() => Task.FromResult(writer.AllSucceededAfter(DateTime.UtcNow.AddSeconds(-1))), TimeSpan.FromSeconds(60), "every register to take a write");

        for (var victim = 0; victim < 3; victim++)
        {
            var killedAt = cluster.Kill(victim);
            var first = await writer.FirstSuccessAfterAsync(killedAt, TimeSpan.FromSeconds(60));
            await WaitUntilAsync(() => Task.FromResult(writer.AllSucceededAfter(killedAt)), TimeSpan.FromSeconds(60), $"every register to be written after silo {victim} was killed");
            var all = writer.LastFirstSuccessAfter(killedAt);
            output.WriteLine($"kill -9 of silo {victim}: first successful call after {(first - killedAt).TotalSeconds:0.00} s, every register written again after {(all - killedAt).TotalSeconds:0.00} s");
            Console.WriteLine($"[failover] kill -9 of silo {victim}: first successful call after {(first - killedAt).TotalSeconds:0.00} s, all {Registers} registers served after {(all - killedAt).TotalSeconds:0.00} s");

            // Every reminder ticks again, those registered on the killed silo included.
            for (var t = 0; t < ticks.Length; t++)
            {
                var grain = ticks[t];
                await WaitUntilAsync(async () => (await grain.GetTicksAsync()).LastTick > killedAt, TimeSpan.FromSeconds(60), $"reminder tick-{t} (registered on {tickHosts[t]}) to fire after silo {victim} was killed");
            }

            for (var s = 0; s < 3; s++)
            {
                Assert.True(s == victim || cluster.Silos[s].IsRunning, $"silo {s} exited after silo {victim} was killed:\n{cluster.Silos[s].Output}");
            }

            Console.WriteLine($"[failover] reminders ticked at {clock.Elapsed.TotalSeconds:0.0} s");
            await cluster.StartSiloAsync(victim);
            Console.WriteLine($"[failover] silo {victim} restarted at {clock.Elapsed.TotalSeconds:0.0} s");
            var gateway = cluster.GatewayPort(victim);
            await WaitUntilAsync(
                async () => (await client.GetGrain<IPaxosGatewayListGrain>(0).GetGatewaysAsync()).Count(g => new Uri(g).Port == gateway) == 1,
                TimeSpan.FromSeconds(60),
                $"silo {victim} to rejoin as Active");
            var rejoined = DateTime.UtcNow;
            Console.WriteLine($"[failover] silo {victim} active at {clock.Elapsed.TotalSeconds:0.0} s");
            await WaitUntilAsync(() => Task.FromResult(writer.AllSucceededAfter(rejoined)), TimeSpan.FromSeconds(60), $"every register to be written after silo {victim} rejoined");
        }

        var acknowledged = await writer.StopAsync();
        for (var s = 0; s < 3; s++)
        {
            Assert.True(cluster.Silos[s].IsRunning, $"silo {s} exited:\n{cluster.Silos[s].Output}");
        }

        foreach (var (key, value) in acknowledged)
        {
            var stored = await client.GetGrain<IDurableRegisterGrain>(key).ReadAsync();
            Assert.True(stored.Value >= value, $"register {key}: acknowledged {value}, stored {stored.Value}");
        }

        var all2 = cluster.AllOutput();
        Assert.DoesNotContain("must terminate", all2, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("version decreased", all2, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Losing_the_majority_is_reported_clearly_and_service_resumes_when_a_silo_returns()
    {
        await using var cluster = new SiloProcessCluster();
        await cluster.StartAsync();
        var client = cluster.Client;
        using var writer = new RegisterWriter(client);
        await WaitUntilAsync(() => Task.FromResult(writer.AllSucceededAfter(DateTime.UtcNow.AddSeconds(-1))), TimeSpan.FromSeconds(60), "every register to take a write");

        // Only what the survivor prints from now on counts: on a loaded machine a start-up proposal may already
        // have timed out and been reported as a missing majority.
        var survivor = cluster.Silos[0];
        var printedBefore = survivor.Output.Length;
        string SinceLoss() => survivor.Output[printedBefore..];
        cluster.Kill(1);
        var lostAt = cluster.Kill(2);
        await WaitUntilAsync(
            () => Task.FromResult(SinceLoss().Contains("the Paxos majority is missing", StringComparison.Ordinal)),
            TimeSpan.FromSeconds(60),
            "the surviving silo to report the missing majority");
        output.WriteLine($"majority loss reported after {(DateTime.UtcNow - lostAt).TotalSeconds:0.0} s");
        Assert.True(survivor.IsRunning);

        var restart = Stopwatch.StartNew();
        var returnedAt = DateTime.UtcNow;
        var starting = cluster.StartSiloAsync(1);
        var first = await writer.FirstSuccessAfterAsync(returnedAt, TimeSpan.FromSeconds(90));
        await starting;
        output.WriteLine($"first successful write {(first - returnedAt).TotalSeconds:0.0} s after silo 1 was started again");
        Console.WriteLine($"[majority] first successful write {(first - returnedAt).TotalSeconds:0.0} s after a second silo was started again");
        await WaitUntilAsync(() => Task.FromResult(writer.AllSucceededAfter(returnedAt)), TimeSpan.FromSeconds(90), "every register to be written after the majority returned");
        Console.WriteLine($"[majority] all registers served {restart.Elapsed.TotalSeconds:0.0} s after a second silo was started again");
        Assert.True(survivor.IsRunning, survivor.Output);
        await WaitUntilAsync(
            () => Task.FromResult(SinceLoss().Contains("the Paxos majority is back", StringComparison.Ordinal)),
            TimeSpan.FromSeconds(30),
            "the surviving silo to report the majority back");

        // The silo's own report comes once per period (10 s here), not once per failed call (Orleans' warnings about
        // its failed table calls carry the same message).
        var reports = SinceLoss().Split('\n').Count(l => l.Contains("Orleans.Paxos.Grains.Storage.PaxosTableAccess[", StringComparison.Ordinal) && l.Contains("the Paxos majority is missing", StringComparison.Ordinal));
        Assert.True(reports >= 1);
        var outage = (DateTime.UtcNow - lostAt).TotalSeconds;
        Assert.True(reports <= 2 + (int)(outage / 10), $"{reports} reports in {outage:0} s");

        var acknowledged = await writer.StopAsync();
        foreach (var (key, value) in acknowledged)
        {
            var stored = await client.GetGrain<IDurableRegisterGrain>(key).ReadAsync();
            Assert.True(stored.Value >= value, $"register {key}: acknowledged {value}, stored {stored.Value}");
        }
    }

    /// <summary>Waits until <paramref name="condition"/> holds; a grain call that fails while silos come and go counts as "not yet".</summary>
    private static Task WaitUntilAsync(Func<Task<bool>> condition, TimeSpan timeout, string what) =>
        Poll.UntilAsync(condition, timeout, what, retryOn: ex => ex is OrleansException or TimeoutException or InvalidOperationException or OperationCanceledException);

    /// <summary>One writer per register, each writing 1, 2, 3, ... in order; records what was acknowledged and when.</summary>
    private sealed class RegisterWriter : IDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly Task[] _workers;
        private readonly ConcurrentDictionary<string, long> _acknowledged = new();
        private readonly ConcurrentDictionary<string, ConcurrentQueue<DateTime>> _successes = new();

        public RegisterWriter(IClusterClient client)
        {
            _workers = [.. Enumerable.Range(0, Registers).Select(i => Task.Run(() => RunAsync(client, "reg-" + i)))];
        }

        public bool AllSucceededAfter(DateTime t) =>
            Enumerable.Range(0, Registers).All(i => _successes.TryGetValue("reg-" + i, out var q) && q.Any(s => s > t));

        public DateTime LastFirstSuccessAfter(DateTime t) =>
            Enumerable.Range(0, Registers).Max(i => _successes["reg-" + i].Where(s => s > t).Min());

        public async Task<DateTime> FirstSuccessAfterAsync(DateTime t, TimeSpan timeout)
        {
            DateTime? found = null;
            await WaitUntilAsync(
                () =>
                {
                    var times = _successes.Values.SelectMany(q => q).Where(s => s > t).ToList();
                    found = times.Count > 0 ? times.Min() : null;
                    return Task.FromResult(found is not null);
                },
                timeout,
                "a successful write");
            return found!.Value;
        }

        public async Task<IReadOnlyDictionary<string, long>> StopAsync()
        {
            await _stop.CancelAsync();
            await Task.WhenAll(_workers);
            return _acknowledged;
        }

        public void Dispose()
        {
            _stop.Cancel();
            _stop.Dispose();
        }

        private async Task RunAsync(IClusterClient client, string key)
        {
            var grain = client.GetGrain<IDurableRegisterGrain>(key);
            var queue = _successes.GetOrAdd(key, _ => new ConcurrentQueue<DateTime>());
            for (long value = 1; !_stop.IsCancellationRequested; value++)
            {
                try
                {
                    await grain.WriteAsync(value).WaitAsync(TimeSpan.FromSeconds(10));
                    _acknowledged[key] = value;
                    queue.Enqueue(DateTime.UtcNow);

                    // Paced (at most ~50 writes/s per register): a steady application load, not a saturation test.
                    await Task.Delay(20, _stop.Token);
                }
                catch (OperationCanceledException) when (_stop.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    // Not acknowledged: it may or may not be stored. Keep going with the next value, after a pause
                    // of the same kind as the pacing above (a client backing off, not a wait for an event).
                    try
                    {
                        await Task.Delay(50, _stop.Token);
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                }
            }
        }
    }
}

[CollectionDefinition(nameof(OrleansOnPaxosProcessTests), DisableParallelization = true)]
public sealed class OrleansOnPaxosProcessCollection;
