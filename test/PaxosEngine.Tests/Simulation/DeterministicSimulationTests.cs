using System.Diagnostics;
using Xunit.Abstractions;

namespace Orleans.Paxos.Engine.Tests.Simulation;

[CollectionDefinition(nameof(DeterministicSimulationTests), DisableParallelization = true)]
public sealed class DeterministicSimulationCollection : ICollectionFixture<SimulationReport>;

/// <summary>
/// Prints a line in the test run's own output (an xUnit diagnostic message; <c>xunit.runner.json</c> turns them on),
/// where a passing test's output would not show: the simulation's count of schedules.
/// </summary>
public sealed class SimulationReport(IMessageSink diagnostics)
{
    public void Print(string line) => diagnostics.OnMessage(new Xunit.Sdk.DiagnosticMessage(line));
}

/// <summary>
/// Seeded whole-cluster runs on fake time (see <see cref="Simulation"/>): 3 and 5 nodes, 1 and 2 groups,
/// frames dropped, duplicated, delayed and reordered, partitions, crashes that lose unsynced writes, lost
/// disks and lost indexes. A failing seed is printed with its trace; set <c>PAXOS_SIM_SEED</c> to replay it
/// (<see cref="Replays_one_seed"/>), <c>PAXOS_SIM_SCHEDULES</c> and <c>PAXOS_SIM_FIRST_SEED</c> for more seeds.
/// Runs alone: it keeps both cores busy, which would only slow the real-time tests beside it.
/// </summary>
[Collection(nameof(DeterministicSimulationTests))]
public sealed class DeterministicSimulationTests(ITestOutputHelper output, SimulationReport report)
{
    private const int DefaultSchedules = 5000;

    [Fact]
    public void Thousands_of_seeded_schedules_lose_and_change_no_chosen_value()
    {
        var count = int.TryParse(Environment.GetEnvironmentVariable("PAXOS_SIM_SCHEDULES"), out var c) ? c : DefaultSchedules;
        var first = int.TryParse(Environment.GetEnvironmentVariable("PAXOS_SIM_FIRST_SEED"), out var f) ? f : 1;
        var started = Stopwatch.GetTimestamp();
        long acknowledged = 0, chosen = 0, crashes = 0, stranded = 0;
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        Parallel.For(first, first + count, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, seed =>
        {
            using var sim = new Simulation(seed, ShapeOf(seed));
            if (sim.Run() is { } violation)
            {
                failures.Add(violation);
                return;
            }

            Interlocked.Add(ref acknowledged, sim.Acknowledged);
            Interlocked.Add(ref chosen, sim.ChosenInstances);
            Interlocked.Add(ref crashes, sim.Crashes);
            if (sim.IsStranded)
            {
                Interlocked.Increment(ref stranded);
            }
        });

        var elapsed = Stopwatch.GetElapsedTime(started);
        output.WriteLine($"{count} seeded schedules (seeds {first}..{first + count - 1}) in {elapsed.TotalSeconds:F1} s: {acknowledged} proposals acknowledged, {chosen} instances chosen, {crashes} crashes, {stranded} ended with a group too many of whose members lost their log to vote again, {failures.Count} failed");
        report.Print($"Deterministic simulation: {count} seeded schedules in {elapsed.TotalSeconds:F1} s, {failures.Count} failed, {stranded} stranded");
        foreach (var failure in failures.OrderBy(SeedOf).Take(20))
        {
            output.WriteLine(failure);
        }

        if (!failures.IsEmpty)
        {
            var firstFailure = failures.OrderBy(SeedOf).First();
            Replay(SeedOf(firstFailure));
            Assert.Fail($"{failures.Count} of {count} schedules broke an invariant; the first: {firstFailure}");
        }
    }

    [Fact]
    public void A_seed_replays_exactly()
    {
        const int seed = 4242;
        var runs = new List<(string? Violation, IReadOnlyList<string> Trace, int Chosen, int Acknowledged)>();
        for (var i = 0; i < 2; i++)
        {
            using var sim = new Simulation(seed, ShapeOf(seed) with { KeepTrace = true });
            runs.Add((sim.Run(), sim.Trace, sim.ChosenInstances, sim.Acknowledged));
        }

        Assert.Null(runs[0].Violation);
        Assert.True(runs[0].Chosen > 0 && runs[0].Trace.Count > 3);
        Assert.Equal(runs[0].Trace, runs[1].Trace);
        Assert.Equal(runs[0].Chosen, runs[1].Chosen);
        Assert.Equal(runs[0].Acknowledged, runs[1].Acknowledged);
    }

    [Fact]
    public void Without_fsync_the_simulation_sees_a_reply_leave_before_its_record_is_durable()
    {
        // The checks are only worth something if they fail: with acceptor fsync off a promise is answered
        // while its record is still in the page cache.
        var found = Enumerable.Range(1, 50)
            .Select(seed =>
            {
                using var sim = new Simulation(seed, ShapeOf(seed) with { Sync = false });
                return sim.Run();
            })
            .FirstOrDefault(v => v is not null);
        Assert.NotNull(found);
        Assert.Contains("before its record was durable", found);
    }

    /// <summary>Runs the seed in <c>PAXOS_SIM_SEED</c> (default 1) with its trace printed.</summary>
    [Fact]
    public void Replays_one_seed()
    {
        var seed = int.TryParse(Environment.GetEnvironmentVariable("PAXOS_SIM_SEED"), out var s) ? s : 1;
        Assert.Null(Replay(seed));
    }

    private static SimulationOptions ShapeOf(int seed) => (seed & 3) switch
    {
        0 => new SimulationOptions { Nodes = 3, Groups = 1 },
        1 => new SimulationOptions { Nodes = 3, Groups = 2, UseMaster = true },
        2 => new SimulationOptions { Nodes = 5, Groups = 1, UseMaster = true },
        _ => new SimulationOptions { Nodes = 5, Groups = 2 },
    };

    private static int SeedOf(string violation) => int.Parse(violation.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);

    private string? Replay(int seed)
    {
        var level = Enum.TryParse<Microsoft.Extensions.Logging.LogLevel>(Environment.GetEnvironmentVariable("PAXOS_SIM_LOG"), out var l) ? l : Microsoft.Extensions.Logging.LogLevel.Information;
        using var sim = new Simulation(seed, ShapeOf(seed) with { KeepTrace = true, LogLevel = level });
        var violation = sim.Run();
        output.WriteLine($"seed {seed}, {sim.Options.Nodes} nodes, {sim.Options.Groups} groups:");
        foreach (var line in sim.Trace)
        {
            output.WriteLine(line);
        }

        return violation;
    }
}
