using System.Text;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Consensus;

public sealed class ClusterTests
{
    [Fact]
    public async Task A_value_is_chosen_executed_everywhere_and_returned_with_its_output()
    {
        using var cluster = new TestCluster(3, 1, seed: 1);
        var result = await cluster.Propose(0, 0, "hello");
        Assert.Equal(ProposeStatus.Ok, result.Status);
        Assert.Equal(0ul, result.InstanceId);
        Assert.Equal("executed:hello", result.Output);
        await cluster.WaitConvergedAsync(0, 1, TimeSpan.FromSeconds(10));
        cluster.AssertSafety(0);
        Assert.Equal(1ul, cluster.Node(1).GetNowInstanceId(0));
        var value = cluster.Node(2).GetInstanceValue(0, 0);
        Assert.Equal("hello", Encoding.UTF8.GetString(value.Values[0].Value));
    }

    [Fact]
    public async Task Sequential_proposals_from_one_node_take_consecutive_instances()
    {
        using var cluster = new TestCluster(3, 1, seed: 2);
        for (var i = 0; i < 20; i++)
        {
            var r = await cluster.Propose(0, 0, $"v{i}");
            Assert.Equal(ProposeStatus.Ok, r.Status);
            Assert.Equal((ulong)i, r.InstanceId);
        }

        await cluster.WaitConvergedAsync(0, 20, TimeSpan.FromSeconds(10));
        cluster.AssertSafety(0);
    }
}
