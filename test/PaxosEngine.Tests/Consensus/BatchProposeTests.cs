using System.Text;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Tests.Checkpoints;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Consensus;

/// <summary>BatchProposeAsync: which values share an instance, when a batch goes, and what each caller gets back.</summary>
public sealed class BatchProposeTests
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(30);

    private static Task<ProposeResult> Batch(TestCluster cluster, string value) =>
        cluster.Node(0).BatchProposeAsync(0, Encoding.UTF8.GetBytes(value), new StateMachineContext(RecordingStateMachine.Id));

    [Fact]
    public async Task Values_that_wait_while_an_instance_is_in_flight_share_the_next_one_and_each_gets_its_index_and_output()
    {
        using var cluster = new TestCluster(3, 1, seed: 41);

        // A first value while every node is connected: every group votes (a new group waits for its peers'
        // answers before it does), so the value below is the one in flight.
        Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(0, 0, "warm-up")).Status);
        await cluster.WaitConvergedAsync(0, 1, Generous);

        // The first value's instance cannot finish while node 0 is cut off, so the next five gather behind it.
        cluster.Network.Isolate(cluster.Ids[0]);
        var underWay = 0;
        cluster.Network.SendObserver = (from, _, frame) =>
        {
            if (from == cluster.Ids[0]
                && FrameCodec.TryDecode(frame, FrameCodec.DefaultMaxFrameLength, out var decoded) == FrameError.None
                && decoded!.Paxos is { MsgType: (int)PaxosMsgType.Prepare or (int)PaxosMsgType.Accept, InstanceID: 1 })
            {
                Interlocked.Exchange(ref underWay, 1);
            }
        };
        var first = Batch(cluster, "first");
        await KvCluster.WaitUntil(() => Volatile.Read(ref underWay) == 1, "the first value's instance to be under way", Generous);
        var rest = Enumerable.Range(0, 5).Select(i => Batch(cluster, $"v{i}")).ToArray();
        await KvCluster.WaitUntil(() => cluster.Node(0).GetWaitingProposals(0) == 6, "six waiting proposals", Generous);
        Assert.False(first.IsCompleted);
        cluster.Network.HealAll();

        var firstResult = await first.WaitAsync(Generous);
        var results = await Task.WhenAll(rest).WaitAsync(Generous);
        Assert.Equal(ProposeStatus.Ok, firstResult.Status);
        Assert.All(results, r => Assert.Equal(ProposeStatus.Ok, r.Status));
        var seen = $"first at {firstResult.InstanceId} (batch index {firstResult.BatchIndex}), the others at {string.Join(",", results.Select(r => $"{r.InstanceId}/{r.BatchIndex}"))}; executed: "
            + string.Join(" | ", Enumerable.Range(0, 3).Select(n => string.Join(",", cluster.Machines[n][0].Snapshot().Select(e => $"{e.Instance}:{Encoding.UTF8.GetString(e.Value)}"))));
        Assert.True(results.Select(r => r.InstanceId).Distinct().Count() == 1, seen);
        Assert.True(results[0].InstanceId > firstResult.InstanceId, seen);
        Assert.Equal([0, 1, 2, 3, 4], results.Select(r => r.BatchIndex).Order());
        for (var i = 0; i < results.Length; i++)
        {
            Assert.Equal($"executed:v{i}", results[i].Output);
        }

        await cluster.WaitConvergedAsync(0, 7, Generous);
        cluster.AssertSafety(0);
        var executed = cluster.Machines[2][0].Snapshot();
        Assert.Equal(["warm-up", "first", "v0", "v1", "v2", "v3", "v4"], executed.Select(e => Encoding.UTF8.GetString(e.Value)));
    }

    [Fact]
    public async Task With_flush_when_idle_a_batch_value_on_an_idle_group_goes_at_once_without_waiting_for_the_batch_delay()
    {
        using var cluster = new TestCluster(3, 1, seed: 42, configure: o =>
        {
            o.BatchFlushWhenIdle = true;
            o.BatchCount = 5;
            o.BatchDelay = TimeSpan.FromMinutes(10);
        });

        var result = await Batch(cluster, "alone").WaitAsync(Generous);
        Assert.Equal(ProposeStatus.Ok, result.Status);
        Assert.Equal(0, result.BatchIndex);
        Assert.Equal("executed:alone", result.Output);
    }

    [Fact]
    public async Task By_default_PhxPaxos_rule_a_batch_waits_for_its_count_even_without_automatic_batching()
    {
        // Group 1 shares node 0's loop thread with group 0: a proposal there is handled after the work the two
        // values below queued on that loop, so once it is chosen, group 0 has decided what to do with them.
        using var cluster = new TestCluster(3, 2, seed: 43, configure: o =>
        {
            o.AutoBatch = false;
            o.BatchCount = 3;
            o.BatchDelay = TimeSpan.FromMinutes(10);
            o.LoopThreadCount = 1;
        });

        var proposed = 0;
        cluster.Network.SendObserver = (from, _, frame) =>
        {
            if (from == cluster.Ids[0] && PaxosFrames.TryRead(frame, 0, out var message) && message.MsgType is (int)PaxosMsgType.Prepare or (int)PaxosMsgType.Accept)
            {
                Interlocked.Exchange(ref proposed, 1);
            }
        };
        var two = new[] { Batch(cluster, "a"), Batch(cluster, "b") };
        Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(0, 1, "after-the-two")).Status);
        Assert.Equal(0, Volatile.Read(ref proposed));
        Assert.All(two, t => Assert.False(t.IsCompleted, "two values must wait for the third (batch count 3)"));
        Assert.Equal(0ul, cluster.Node(0).GetNowInstanceId(0));

        var results = await Task.WhenAll([.. two, Batch(cluster, "c")]).WaitAsync(Generous);
        Assert.All(results, r => Assert.Equal(ProposeStatus.Ok, r.Status));
        Assert.All(results, r => Assert.Equal(0ul, r.InstanceId));
        Assert.Equal([0, 1, 2], results.Select(r => r.BatchIndex).Order());
        Assert.Equal(["executed:a", "executed:b", "executed:c"], results.Select(r => (string?)r.Output));
    }

    [Fact]
    public async Task By_default_PhxPaxos_rule_a_lone_value_goes_when_the_batch_delay_is_up()
    {
        using var cluster = new TestCluster(3, 1, seed: 44, configure: o =>
        {
            o.BatchCount = 5;
            o.BatchDelay = TimeSpan.FromMilliseconds(300);
        });

        var started = System.Diagnostics.Stopwatch.StartNew();
        var result = await Batch(cluster, "late").WaitAsync(Generous);
        Assert.Equal(ProposeStatus.Ok, result.Status);
        Assert.True(started.Elapsed >= TimeSpan.FromMilliseconds(250), $"went after {started.Elapsed.TotalMilliseconds:0} ms, before the 300 ms delay");
    }

    [Fact]
    public async Task Plain_proposals_never_share_an_instance_when_automatic_batching_is_off()
    {
        using var cluster = new TestCluster(3, 1, seed: 45, configure: o => o.AutoBatch = false);
        cluster.Network.Isolate(cluster.Ids[0]);
        var all = Enumerable.Range(0, 4).Select(i => cluster.Propose(0, 0, $"p{i}")).ToArray();
        await KvCluster.WaitUntil(() => cluster.Node(0).GetWaitingProposals(0) == 4, "four waiting proposals", Generous);
        cluster.Network.HealAll();
        var results = await Task.WhenAll(all).WaitAsync(Generous);
        Assert.All(results, r => Assert.Equal(ProposeStatus.Ok, r.Status));
        Assert.Equal(4, results.Select(r => r.InstanceId).Distinct().Count());
    }
}
