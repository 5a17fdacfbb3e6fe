using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Tests.Support;
using Xunit.Abstractions;

namespace Orleans.Paxos.Engine.Tests.Consensus;

/// <summary>
/// Seeded fault runs on the in-memory network: every node proposes at once while frames are dropped,
/// duplicated, delayed and reordered and partitions come and go. After each run: no two nodes chose
/// different values, every node executed the same sequence in order, and after healing all converge
/// and new proposals succeed. A failing seed is printed; pass it to <see cref="Run"/> to replay.
/// </summary>
public sealed class FaultSimulationTests(ITestOutputHelper output)
{
    public static TheoryData<int, int, int> Seeds => new()
    {
        { 3, 2, 101 },
        { 3, 1, 202 },
        { 5, 2, 303 },
        { 5, 1, 404 },
    };

    [Theory]
    [MemberData(nameof(Seeds))]
    public Task Safety_and_convergence_under_faults(int nodes, int groups, int seed) => Run(nodes, groups, seed, proposalsPerNode: 60);

    /// <summary>
    /// More seeds, longer: set <c>PAXOS_SOAK_SEEDS</c> (count) and optionally <c>PAXOS_SOAK_FIRST_SEED</c>.
    /// Without them this test checks one extra seed quickly.
    /// </summary>
    [Fact]
    public async Task Soak_over_many_seeds()
    {
        var count = int.TryParse(Environment.GetEnvironmentVariable("PAXOS_SOAK_SEEDS"), out var c) ? c : 1;
        var first = int.TryParse(Environment.GetEnvironmentVariable("PAXOS_SOAK_FIRST_SEED"), out var f) ? f : 5000;
        for (var seed = first; seed < first + count; seed++)
        {
            await Run(seed % 2 == 0 ? 3 : 5, 1 + (seed % 3), seed, proposalsPerNode: count > 1 ? 200 : 40);
        }
    }

    private async Task Run(int nodeCount, int groups, int seed, int proposalsPerNode)
    {
        output.WriteLine($"seed {seed}, {nodeCount} nodes, {groups} groups");
        var faults = new FaultOptions
        {
            DropRate = 0.05,
            DuplicateRate = 0.05,
            ReorderRate = 0.1,
            MinDelay = TimeSpan.Zero,
            MaxDelay = TimeSpan.FromMilliseconds(3),
        };
        using var cluster = new TestCluster(nodeCount, groups, seed, faults, o =>
        {
            o.ProposeTimeout = TimeSpan.FromSeconds(2);
            o.MaxBatchCount = 8;
        });
        var random = new Random(seed);
        using var stopNemesis = new CancellationTokenSource();
        var nemesis = Task.Run(async () =>
        {
            var nemesisRandom = new Random(seed * 7);
            while (!stopNemesis.IsCancellationRequested)
            {
                await Task.Delay(nemesisRandom.Next(100, 300));
                switch (nemesisRandom.Next(4))
                {
                    case 0:
                        cluster.Network.Isolate(cluster.Ids[nemesisRandom.Next(nodeCount)]);
                        break;
                    case 1:
                        var a = nemesisRandom.Next(nodeCount);
                        var b = (a + 1 + nemesisRandom.Next(nodeCount - 1)) % nodeCount;
                        cluster.Network.Partition(cluster.Ids[a], cluster.Ids[b], oneWay: nemesisRandom.Next(2) == 0);
                        break;
                    default:
                        cluster.Network.HealAll();
                        break;
                }
            }
        });

        var outcomes = new List<Task<ProposeResult>>();
        var proposers = Enumerable.Range(0, nodeCount).Select(n => Task.Run(async () =>
        {
            var results = new List<ProposeResult>();
            for (var i = 0; i < proposalsPerNode; i++)
            {
                var group = (n + i) % groups;
                results.Add(await cluster.Propose(n, group, $"n{n}-{i}"));
            }

            return results;
        })).ToArray();
        var all = await Task.WhenAll(proposers);
        await stopNemesis.CancelAsync();
        await nemesis;
        cluster.Network.HealAll();

        var ok = all.SelectMany(r => r).Count(r => r.IsOk);
        output.WriteLine($"ok {ok} of {nodeCount * proposalsPerNode}; dropped {cluster.Network.Dropped}, duplicated {cluster.Network.Duplicated}, partitioned {cluster.Network.DroppedByPartition}");
        Assert.True(ok > 0, $"no proposal succeeded (seed {seed})");

        // Liveness after healing: a new proposal in every group succeeds, then everybody converges.
        for (var g = 0; g < groups; g++)
        {
            // Proposals time out after 2 s here while a prepare round may take 2 s: allow a few tries.
            ProposeResult after = ProposeResult.Timeout;
            for (var attempt = 0; attempt < 10 && !after.IsOk; attempt++)
            {
                after = await cluster.Propose(random.Next(nodeCount), g, $"after-heal-{g}-{attempt}");
            }

            Assert.True(after.IsOk, $"group {g}: proposals after healing keep failing, last with {after.Status} (seed {seed})");
        }

        for (var g = 0; g < groups; g++)
        {
            cluster.AssertSafety(g);
            var target = cluster.Machines.Max(m => m[g].Count);
            await cluster.WaitConvergedAsync(g, target, TimeSpan.FromSeconds(30));
            cluster.AssertSafety(g);
        }

        // Every value reported as chosen is in the log at the instance reported.
        foreach (var result in all.SelectMany(r => r).Where(r => r.IsOk))
        {
            Assert.StartsWith("executed:", (string)result.Output!);
        }
    }
}
