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

    [Fact]
    public async Task A_proposal_without_a_majority_times_out_and_cancellation_is_honoured()
    {
        using var cluster = new TestCluster(3, 1, seed: 3, configure: o => o.ProposeTimeout = TimeSpan.FromMilliseconds(500));
        cluster.Network.Isolate(cluster.Ids[0]);
        var started = DateTime.UtcNow;
        var r = await cluster.Propose(0, 0, "lonely");
        Assert.Equal(ProposeStatus.Timeout, r.Status);
        Assert.InRange(DateTime.UtcNow - started, TimeSpan.FromMilliseconds(400), TimeSpan.FromSeconds(5));

        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
        var cancelled = await cluster.Node(0).ProposeAsync(0, new byte[] { 1 }, null, cts.Token);
        Assert.Equal(ProposeStatus.Timeout, cancelled.Status);

        cluster.Network.HealAll();
        ProposeResult ok = ProposeResult.Timeout;
        for (var i = 0; i < 20 && !ok.IsOk; i++)
        {
            ok = await cluster.Propose(1, 0, $"healed-{i}");
        }

        Assert.True(ok.IsOk);
    }

    [Fact]
    public async Task Beyond_MaxWaitingProposals_a_proposal_is_refused_at_once_with_TooManyWaiting()
    {
        using var cluster = new TestCluster(3, 1, seed: 5, configure: o => o.MaxWaitingProposals = 3);
        await cluster.WaitVotingAsync(0, TimeSpan.FromSeconds(30));

        // Cut off from the others, node 0's proposals wait: three are allowed, the fourth is refused before it waits.
        cluster.Network.Isolate(cluster.Ids[0]);
        var waiting = Enumerable.Range(0, 3).Select(i => cluster.Propose(0, 0, $"waiting-{i}")).ToArray();
        Assert.Equal(3, cluster.Node(0).GetWaitingProposals(0));
        var refused = cluster.Propose(0, 0, "one-too-many");
        Assert.True(refused.IsCompleted, "the refusal must not wait");
        Assert.Equal(ProposeStatus.TooManyWaiting, (await refused).Status);
        Assert.All(waiting, t => Assert.False(t.IsCompleted));
        Assert.Equal(3, cluster.Node(0).GetWaitingProposals(0));

        // The limit is per node and group: node 1 still proposes.
        Assert.True((await cluster.Propose(1, 0, "elsewhere")).IsOk);

        // Once the waiting proposals complete, room is made again.
        cluster.Network.HealAll();
        var results = await Task.WhenAll(waiting).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.All(results, r => Assert.Equal(ProposeStatus.Ok, r.Status));
        await Polling.WaitUntilAsync(() => cluster.Node(0).GetWaitingProposals(0) == 0, TimeSpan.FromSeconds(30), "node 0 to count its proposals done");
        Assert.True((await cluster.Propose(0, 0, "room-again")).IsOk);
        await cluster.WaitConvergedAsync(0, 5, TimeSpan.FromSeconds(30));
        cluster.AssertSafety(0);
        Assert.DoesNotContain(cluster.Machines[0][0].Snapshot(), e => Encoding.UTF8.GetString(e.Value) == "one-too-many");
    }

    [Fact]
    public async Task Proposals_still_waiting_when_the_node_is_disposed_complete_with_NodeStopped()
    {
        using var cluster = new TestCluster(3, 1, seed: 6, configure: o => o.ProposeTimeout = Timeout.InfiniteTimeSpan);
        await cluster.WaitVotingAsync(0, TimeSpan.FromSeconds(30));
        cluster.Network.Isolate(cluster.Ids[0]);
        var waiting = Enumerable.Range(0, 3).Select(i => cluster.Node(0).ProposeAsync(0, new byte[] { (byte)i })).ToArray();
        Assert.Equal(3, cluster.Node(0).GetWaitingProposals(0));

        cluster.Node(0).Dispose();
        var results = await Task.WhenAll(waiting).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.All(results, r => Assert.Equal(ProposeStatus.NodeStopped, r.Status));
    }

    [Fact]
    public async Task Bad_requests_get_typed_results()
    {
        using var cluster = new TestCluster(3, 2, seed: 4, configure: o => o.MaxValueSize = 2048);
        Assert.Equal(ProposeStatus.InvalidGroup, (await cluster.Node(0).ProposeAsync(7, new byte[] { 1 })).Status);
        Assert.Equal(ProposeStatus.ValueTooLarge, (await cluster.Node(0).ProposeAsync(0, new byte[4096])).Status);
        Assert.Throws<ArgumentOutOfRangeException>(() => cluster.Node(0).GetNowInstanceId(-1));
    }
}
