using System.Text;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Groups;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.Tests.Support;
using Xunit.Abstractions;

namespace Orleans.Paxos.Engine.Tests.Consensus;

/// <summary>
/// Seeded runs on the in-memory network in which nodes crash and restart, lose their whole data folder, or lose
/// their index, one loss at a time, among partitions, drops, duplicates and reordering, while every node proposes.
/// After each run: every acknowledged value is at its instance on every node, no group stopped, and all converge.
/// </summary>
public sealed class LostStateSimulationTests(ITestOutputHelper output)
{
    public static TheoryData<int, int> Seeds => new()
    {
        { 3, 1401 },
        { 3, 1402 },
        { 5, 1403 },
    };

    [Theory]
    [MemberData(nameof(Seeds))]
    public Task Acknowledged_values_survive_wiped_disks_and_lost_indexes(int nodes, int seed) => Run(nodes, seed, TimeSpan.FromSeconds(6));

    /// <summary>Longer and more seeds with <c>PAXOS_SOAK_SEEDS</c> (count) and <c>PAXOS_SOAK_FIRST_SEED</c>.</summary>
    [Fact]
    public async Task Soak_lost_state_over_many_seeds()
    {
        var count = int.TryParse(Environment.GetEnvironmentVariable("PAXOS_SOAK_SEEDS"), out var c) ? c : 0;
        var first = int.TryParse(Environment.GetEnvironmentVariable("PAXOS_SOAK_FIRST_SEED"), out var f) ? f : 14000;
        for (var seed = first; seed < first + count; seed++)
        {
            await Run(seed % 2 == 0 ? 3 : 5, seed, TimeSpan.FromSeconds(20));
        }
    }

    private async Task Run(int nodeCount, int seed, TimeSpan duration)
    {
        output.WriteLine($"seed {seed}, {nodeCount} nodes");
        var faults = new FaultOptions { DropRate = 0.03, DuplicateRate = 0.03, ReorderRate = 0.05, MaxDelay = TimeSpan.FromMilliseconds(2) };
        using var cluster = new TestCluster(nodeCount, 1, seed, faults, o =>
        {
            o.ProposeTimeout = TimeSpan.FromSeconds(2);
            o.UseMembership = true;
        });
        var acknowledged = new System.Collections.Concurrent.ConcurrentBag<(ulong Instance, string Value)>();
        var gate = new SemaphoreSlim(1, 1); // the nemesis stops and starts nodes only between proposals' reads of Nodes
        using var stop = new CancellationTokenSource(duration);
        var actions = new List<string>();

        var proposers = Enumerable.Range(0, nodeCount).Select(n => Task.Run(async () =>
        {
            for (var i = 0; !stop.IsCancellationRequested; i++)
            {
                Task<ProposeResult> proposal;
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                await gate.WaitAsync();
                try
                {
                    if (cluster.Nodes[n] is not { } node)
                    {
                        proposal = Task.FromResult(ProposeResult.Timeout);
                    }
                    else
                    {
                        proposal = node.ProposeAsync(0, Encoding.UTF8.GetBytes($"n{n}-{i}"), new Engine.StateMachines.StateMachineContext(RecordingStateMachine.Id), timeout.Token);
                    }
                }
                finally
                {
                    gate.Release();
                }

                ProposeResult result;
                try
                {
                    result = await proposal;
                }
                catch (ObjectDisposedException)
                {
                    continue;
                }

                if (result.IsOk)
                {
                    acknowledged.Add((result.InstanceId, $"n{n}-{i}"));
                }
                else
                {
                    await Task.Delay(20);
                }
            }
        })).ToArray();

        var random = new Random(seed);
        while (!stop.IsCancellationRequested)
        {
            await Task.Delay(random.Next(150, 400));
            var victim = random.Next(nodeCount);
            var action = random.Next(6);

            // One loss at a time: a node's state is lost only while every node votes.
            var allVoting = Enumerable.Range(0, nodeCount).All(i => cluster.Nodes[i] is { } node && node.GetGroupVotingState(0).State == VotingState.Voting);
            if (action >= 3 && !allVoting)
            {
                action = 2;
            }

            await gate.WaitAsync();
            var started = DateTime.UtcNow;
            try
            {
                switch (action)
                {
                    case 0:
                        cluster.Network.Isolate(cluster.Ids[victim]);
                        actions.Add($"isolate {victim}");
                        break;
                    case 1:
                        cluster.Network.HealAll();
                        actions.Add("heal");
                        break;
                    case 2:
                        cluster.Stop(victim);
                        cluster.Start(victim);
                        actions.Add($"restart {victim}");
                        break;
                    case 3:
                    case 4:
                        cluster.Stop(victim);
                        Directory.Delete(Path.Combine(cluster.Root, $"node{victim}"), recursive: true);
                        cluster.Start(victim);
                        actions.Add($"wipe {victim}");
                        break;
                    default:
                        cluster.Stop(victim);
                        foreach (var file in Directory.GetFiles(Path.Combine(cluster.Root, $"node{victim}", "g0"), "index.db*"))
                        {
                            File.Delete(file);
                        }

                        cluster.Start(victim);
                        actions.Add($"drop index {victim}");
                        break;
                }
            }
            finally
            {
                gate.Release();
            }

            Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(20), $"'{actions[^1]}' took {DateTime.UtcNow - started} (seed {seed})");
        }

        var finished = await Task.WhenAny(Task.WhenAll(proposers), Task.Delay(TimeSpan.FromSeconds(30)));
        Assert.True(finished != null && proposers.All(p => p.IsCompleted), $"proposers did not finish (seed {seed}); nemesis: {string.Join(", ", actions)}");
        cluster.Network.HealAll();
        output.WriteLine($"{acknowledged.Count} acknowledged; nemesis: {string.Join(", ", actions)}");
        Assert.True(acknowledged.Count > 0, $"nothing was acknowledged (seed {seed})");

        // Everybody votes again, a new value is chosen, and every node learns up to it.
        await Checkpoints.KvCluster.WaitUntil(
            () => Enumerable.Range(0, nodeCount).All(i => cluster.Node(i).GetGroupVotingState(0).State == VotingState.Voting),
            $"every node to vote (seed {seed})",
            TimeSpan.FromSeconds(60));
        ProposeResult after = ProposeResult.Timeout;
        for (var attempt = 0; attempt < 20 && !after.IsOk; attempt++)
        {
            after = await cluster.Propose(attempt % nodeCount, 0, $"after-{attempt}");
        }

        Assert.True(after.IsOk, $"no proposal succeeds after healing (seed {seed}): {after.Status}");
        await Checkpoints.KvCluster.WaitUntil(
            () => Enumerable.Range(0, nodeCount).All(i => cluster.Node(i).GetNowInstanceId(0) > after.InstanceId),
            $"every node to learn instance {after.InstanceId} (seed {seed})",
            TimeSpan.FromSeconds(60));

        foreach (var (instance, value) in acknowledged)
        {
            for (var n = 0; n < nodeCount; n++)
            {
                var chosen = cluster.Node(n).GetInstanceValue(0, instance);
                Assert.True(chosen.Status == InstanceValueStatus.Ok, $"node {n} lacks instance {instance} (seed {seed})");
                Assert.True(
                    chosen.Values.Any(v => Encoding.UTF8.GetString(v.Value) == value),
                    $"node {n} has [{string.Join("|", chosen.Values.Select(v => Encoding.UTF8.GetString(v.Value)))}] at instance {instance}, where {value} was acknowledged (seed {seed})");
            }
        }

        var gids = Enumerable.Range(0, nodeCount).Select(n => cluster.Node(n).GetMembership(0).Gid).Distinct().ToList();
        Assert.True(gids.Count == 1 && gids[0] != 0, $"the nodes hold cluster ids {string.Join(",", gids)} (seed {seed})");
        for (var n = 0; n < nodeCount; n++)
        {
            Assert.Null(cluster.Node(n).GetGroupStoppedReason(0));
        }

        cluster.AssertSafety(0);
    }
}
