using Orleans.Paxos.Engine.Groups;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Tests.Checkpoints;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Consensus;

/// <summary>Lease timing is observed on the real clock, so these run alone rather than beside the heavy simulations.</summary>
[CollectionDefinition(nameof(MasterTests), DisableParallelization = true)]
public sealed class MasterTestsCollection
{
}

[Collection(nameof(MasterTests))]
public sealed class MasterTests
{
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(1);

    private static TestCluster MasterCluster(int seed, FaultOptions? faults = null) => new(3, 1, seed, faults, o =>
    {
        o.UseMaster = true;
        o.MasterLease = Lease;
    });

    [Fact]
    public async Task A_master_is_elected_and_every_node_agrees()
    {
        using var cluster = MasterCluster(31);
        var master = await WaitForMaster(cluster, [0, 1, 2]);
        await WaitUntil(() => Enumerable.Range(0, 3).All(i => cluster.Node(i).GetMaster(0).Node == master), "all nodes see the master");
        Assert.Single(Enumerable.Range(0, 3), i => cluster.Node(i).IsMaster(0));
    }

    [Fact]
    public async Task Never_two_masters_at_once_under_faults()
    {
        var faults = new FaultOptions { DropRate = 0.05, DuplicateRate = 0.05, ReorderRate = 0.1, MaxDelay = TimeSpan.FromMilliseconds(3) };
        using var cluster = MasterCluster(32, faults);

        // A new group votes once every member has answered its survey; the isolations below start after that.
        await KvCluster.WaitUntil(
            () => Enumerable.Range(0, 3).All(i => cluster.Node(i).GetGroupVotingState(0).State == VotingState.Voting),
            "every node to vote",
            TimeSpan.FromSeconds(30));
        var random = new Random(32);
        var deadline = DateTime.UtcNow.AddSeconds(8);
        while (DateTime.UtcNow < deadline)
        {
            if (random.Next(20) == 0)
            {
                cluster.Network.Isolate(cluster.Ids[random.Next(3)]);
            }
            else if (random.Next(10) == 0)
            {
                cluster.Network.HealAll();
            }

            var masters = Enumerable.Range(0, 3).Count(i => cluster.Node(i).IsMaster(0));
            Assert.True(masters <= 1, $"{masters} nodes hold the lease at once (seed 32)");
            await Task.Delay(5); // the sampling interval
        }

        // Not a vacuous pass: once the faults stop, the group elects a master (how often one held the lease meanwhile
        // depends on the machine's load; the deterministic simulation checks both on fake time).
        cluster.Network.HealAll();
        await WaitForMaster(cluster, [0, 1, 2]);
        Assert.True(Enumerable.Range(0, 3).Count(i => cluster.Node(i).IsMaster(0)) <= 1);
    }

    [Fact]
    public async Task The_master_changes_within_about_a_lease_after_it_dies()
    {
        using var cluster = MasterCluster(33);
        var master = await WaitForMaster(cluster, [0, 1, 2]);
        var index = Array.IndexOf(cluster.Ids, master);
        cluster.Stop(index);
        var started = DateTime.UtcNow;
        var others = Enumerable.Range(0, 3).Where(i => i != index).ToArray();
        var next = await WaitForMaster(cluster, others);
        Assert.NotEqual(master, next);
        // About one lease to expire plus a renewal round; generous for a loaded machine.
        Assert.True(DateTime.UtcNow - started < Lease * 6, $"took {DateTime.UtcNow - started}");
    }

    [Fact]
    public async Task The_master_changes_after_it_is_partitioned_away()
    {
        using var cluster = MasterCluster(34);
        var master = await WaitForMaster(cluster, [0, 1, 2]);
        var index = Array.IndexOf(cluster.Ids, master);
        cluster.Network.Isolate(master);
        var others = Enumerable.Range(0, 3).Where(i => i != index).ToArray();
        var next = await WaitForMaster(cluster, others);
        Assert.NotEqual(master, next);

        // The isolated former master cannot renew: its own view lapses too.
        await WaitUntil(() => !cluster.Node(index).IsMaster(0), "the isolated node to drop its lease");
    }

    [Fact]
    public async Task DropMaster_hands_over_promptly()
    {
        using var cluster = MasterCluster(35);
        var master = await WaitForMaster(cluster, [0, 1, 2]);
        var index = Array.IndexOf(cluster.Ids, master);
        var started = DateTime.UtcNow;
        cluster.Node(index).DropMaster(0);
        var others = Enumerable.Range(0, 3).Where(i => i != index).ToArray();
        var next = await WaitForMaster(cluster, others);
        Assert.NotEqual(master, next);
        Assert.True(DateTime.UtcNow - started < Lease * 4, $"hand-over took {DateTime.UtcNow - started}");
    }

    [Fact]
    public async Task A_restarted_former_master_does_not_assume_its_old_lease()
    {
        using var cluster = MasterCluster(36);
        var master = await WaitForMaster(cluster, [0, 1, 2]);
        var index = Array.IndexOf(cluster.Ids, master);
        var version = cluster.Node(index).GetMaster(0).Version;
        cluster.Stop(index);
        cluster.Network.Isolate(master);
        cluster.Start(index);
        Assert.False(cluster.Node(index).IsMaster(0));
        Assert.Equal(version, cluster.Node(index).GetMaster(0).Version);
        cluster.Network.HealAll();
    }

    private static async Task<NodeId> WaitForMaster(TestCluster cluster, int[] nodes)
    {
        NodeId found = NodeId.Null;
        await WaitUntil(
            () =>
            {
                foreach (var i in nodes)
                {
                    if (cluster.Node(i).IsMaster(0))
                    {
                        found = cluster.Ids[i];
                        return true;
                    }
                }

                return false;
            },
            "a master");
        return found;
    }

    private static async Task WaitUntil(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"timed out waiting for {what}");
            }

            await Task.Delay(10);
        }
    }
}
