using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Consensus;

public sealed class FollowerTests
{
    /// <summary>Nodes 0-2 are members; node 3 follows node 0.</summary>
    private static TestCluster WithFollower(int seed, FaultOptions? faults = null) => new(4, 1, seed, faults, configureNode: (i, o) =>
    {
        o.Members = [.. o.Members.Take(3)];
        if (i == 3)
        {
            o.FollowTo = o.Members[0];
        }
    });

    [Fact]
    public async Task A_follower_receives_every_value_and_cannot_propose()
    {
        using var cluster = WithFollower(41, new FaultOptions { DropRate = 0.03, DuplicateRate = 0.03, ReorderRate = 0.05, MaxDelay = TimeSpan.FromMilliseconds(2) });
        for (var i = 0; i < 60; i++)
        {
            await cluster.Propose(i % 3, 0, $"v{i}");
        }

        Assert.Equal(ProposeStatus.FollowerCannotPropose, (await cluster.Propose(3, 0, "from-follower")).Status);
        var target = cluster.Machines.Take(3).Max(m => m[0].Count);
        await cluster.WaitConvergedAsync(0, target, TimeSpan.FromSeconds(30));
        cluster.AssertSafety(0);
    }

    [Fact]
    public async Task A_follower_catches_up_from_the_members_when_the_followed_node_dies()
    {
        using var cluster = WithFollower(42);
        for (var i = 0; i < 20; i++)
        {
            Assert.True((await cluster.Propose(0, 0, $"a{i}")).IsOk);
        }

        cluster.Stop(0);
        for (var i = 0; i < 20; i++)
        {
            Assert.True((await cluster.Propose(1, 0, $"b{i}")).IsOk);
        }

        var target = cluster.Machines[1][0].Count;
        await cluster.WaitConvergedAsync(0, target, TimeSpan.FromSeconds(30));
        cluster.AssertSafety(0);
    }

    [Fact]
    public void A_follower_listed_as_member_is_refused()
    {
        var options = new Node.PaxosNodeOptions
        {
            MyNode = "127.0.0.1:1",
            Members = ["127.0.0.1:1", "127.0.0.1:2"],
            StoragePath = "unused",
            FollowTo = "127.0.0.1:2",
        };
        Assert.Throws<ArgumentException>(() => options.Validate());
    }
}
