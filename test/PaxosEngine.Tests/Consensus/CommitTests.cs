using System.Collections.Concurrent;
using System.Text;
using System.Threading.Channels;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Tests.Support;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Tests.Consensus;

/// <summary>
/// How a chosen value reaches a node and the proposer's caller (PhxPaxos <c>Instance</c> and <c>Committer</c>):
/// the retry queue for messages of a later instance, the implicit commit carried by the next instance's
/// messages, and a proposal whose instance another value took.
/// </summary>
public sealed class CommitTests
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task An_accept_for_the_next_instance_waits_in_the_retry_queue_and_the_instance_after_commits_it_implicitly()
    {
        // No ask-for-learn while the test runs: node 2 learns only from the messages the test lets through.
        using var cluster = new TestCluster(3, 1, seed: 501, configure: o => o.AskForLearnInterval = TimeSpan.FromMinutes(10));
        await cluster.WaitVotingAsync(0, Generous);
        Assert.Equal(0ul, Ok(await cluster.Propose(0, 0, "a0")).InstanceId);
        await cluster.WaitConvergedAsync(0, 1, Generous);

        // Instance 1 is chosen by nodes 0 and 1; what node 0 sends node 2 about it is held back.
        var held = new ConcurrentQueue<byte[]>();
        var seen = new ConcurrentQueue<(NodeId From, NodeId To, PaxosMsg Message)>();
        cluster.Network.SendObserver = (from, to, frame) =>
        {
            if (PaxosFrames.TryRead(frame, 0, out var message))
            {
                seen.Enqueue((from, to, message));
                if (from == cluster.Ids[0] && to == cluster.Ids[2] && message.InstanceID == 1)
                {
                    held.Enqueue(frame);
                }
            }
        };
        cluster.Network.Partition(cluster.Ids[0], cluster.Ids[2], oneWay: true);
        Assert.Equal(1ul, Ok(await cluster.Propose(0, 0, "a1")).InstanceId);
        await Polling.WaitUntilAsync(() => Sent(seen, cluster.Ids[0], cluster.Ids[2], PaxosMsgType.ProposerSendSuccess, 1), Generous, "node 0 to send the commit of instance 1");
        cluster.Network.HealAll();

        // Instance 2: node 2, still at instance 1, gets the accept and the commit. It can take neither now; the
        // accept waits in its retry queue (and the commit is for an instance it is not at).
        Assert.Equal(2ul, Ok(await cluster.Propose(0, 0, "a2")).InstanceId);
        await Polling.WaitUntilAsync(() => Sent(seen, cluster.Ids[0], cluster.Ids[2], PaxosMsgType.ProposerSendSuccess, 2), Generous, "node 0 to send the commit of instance 2");
        Assert.Equal(1ul, cluster.Node(2).GetNowInstanceId(0));
        Assert.False(Sent(seen, cluster.Ids[2], cluster.Ids[0], PaxosMsgType.AcceptReply, 2));

        // The held messages of instance 1 arrive late, after everything above (one delivery queue per node).
        using var late = cluster.Network.CreateTransport(NodeId.Parse("127.0.0.1:1999"));
        Assert.Contains(held, f => PaxosFrames.Is(f, 0, PaxosMsgType.Accept, out _));
        foreach (var frame in held)
        {
            late.Send(cluster.Ids[2], frame, TransportKind.Udp);
        }

        // Node 2 learns instance 1, then takes the queued accept of instance 2 and answers it.
        await Polling.WaitUntilAsync(() => Sent(seen, cluster.Ids[2], cluster.Ids[0], PaxosMsgType.AcceptReply, 2), Generous, "node 2 to answer the queued accept of instance 2");
        Assert.Equal(2ul, cluster.Node(2).GetNowInstanceId(0));
        Assert.Equal(["a0", "a1"], Values(cluster, 2));

        // Nothing else tells node 2 that instance 2 was chosen, until the accept of instance 3 carries the same
        // ballot: it commits instance 2 implicitly, then instance 3 is committed as usual.
        Assert.Equal(3ul, Ok(await cluster.Propose(0, 0, "a3")).InstanceId);
        await cluster.WaitConvergedAsync(0, 4, Generous);
        cluster.AssertSafety(0);
        Assert.Equal(["a0", "a1", "a2", "a3"], Values(cluster, 2));
        Assert.Equal([0ul, 1ul, 2ul, 3ul], cluster.Machines[2][0].Snapshot().Select(e => e.Instance));
        Assert.DoesNotContain(seen, s => s.Message.MsgType is (int)PaxosMsgType.SendLearnValue);
    }

    [Fact]
    public async Task A_proposal_whose_instance_another_value_took_is_proposed_again_in_the_next_instance()
    {
        using var cluster = new TestCluster(3, 1, seed: 502);
        var (result, lost) = await ProposeWhileLosing(cluster, losses: 1);
        Assert.Equal(ProposeStatus.Ok, result.Status);
        Assert.Equal(lost[0] + 1, result.InstanceId);
        Assert.Equal("executed:x", result.Output);

        await cluster.WaitConvergedAsync(0, 3, Generous);
        cluster.AssertSafety(0);
        var executed = cluster.Machines[0][0].Snapshot().Select(e => (e.Instance, Encoding.UTF8.GetString(e.Value))).ToList();
        Assert.Contains((lost[0], "y0"), executed);
        Assert.Contains((lost[0] + 1, "x"), executed);
    }

    [Fact]
    public async Task A_proposal_that_loses_three_instances_in_a_row_is_reported_as_a_conflict()
    {
        using var cluster = new TestCluster(3, 1, seed: 503);
        var (result, lost) = await ProposeWhileLosing(cluster, losses: 3);
        Assert.Equal(ProposeStatus.Conflict, result.Status);
        Assert.Equal(lost[2], result.InstanceId);
        Assert.Equal([lost[0], lost[0] + 1, lost[0] + 2], lost);

        // The value was never chosen; the others' values were, in the instances it lost.
        Assert.True(Ok(await cluster.Propose(1, 0, "after")).InstanceId > lost[2]);
        await cluster.WaitConvergedAsync(0, 5, Generous);
        cluster.AssertSafety(0);
        for (var n = 0; n < 3; n++)
        {
            var executed = cluster.Machines[n][0].Snapshot().Select(e => (e.Instance, Encoding.UTF8.GetString(e.Value))).ToList();
            Assert.DoesNotContain(executed, e => e.Item2 == "x");
            Assert.Equal([(lost[0], "y0"), (lost[1], "y1"), (lost[2], "y2")], executed.Where(e => e.Item2.StartsWith('y')));
        }
    }

    /// <summary>
    /// Node 0 proposes "x"; each time its round goes out, node 0 is cut off before any other node hears of it,
    /// node 1 gets "y{i}" chosen in that instance, and the network heals so that node 0 learns "y{i}" (catch-up).
    /// Returns x's result and the instances it lost.
    /// </summary>
    private static async Task<(ProposeResult Result, List<ulong> Lost)> ProposeWhileLosing(TestCluster cluster, int losses)
    {
        await cluster.WaitVotingAsync(0, Generous);
        Ok(await cluster.Propose(1, 0, "start"));
        await cluster.WaitConvergedAsync(0, 1, Generous);

        var cut = Channel.CreateUnbounded<ulong>();
        var cutter = new Cutter { MinInstance = cluster.Node(0).GetNowInstanceId(0), Armed = 1 };
        cluster.Network.SendObserver = (from, to, frame) =>
        {
            if (from == cluster.Ids[0]
                && PaxosFrames.TryRead(frame, 0, out var message)
                && message.MsgType is (int)PaxosMsgType.Prepare or (int)PaxosMsgType.Accept
                && message.InstanceID >= Volatile.Read(ref cutter.MinInstance)
                && Interlocked.Exchange(ref cutter.Armed, 0) == 1)
            {
                // Before this frame goes: node 0's round for the instance reaches nobody.
                cluster.Network.Isolate(cluster.Ids[0]);
                cut.Writer.TryWrite(message.InstanceID);
            }
        };

        var proposal = cluster.Propose(0, 0, "x");
        var lost = new List<ulong>();
        for (var i = 0; i < losses; i++)
        {
            var instance = await cut.Reader.ReadAsync().AsTask().WaitAsync(Generous);
            Assert.False(proposal.IsCompleted, $"x completed with {(proposal.IsCompleted ? proposal.Result.Status : default)} before losing instance {instance}");
            var other = Ok(await cluster.Propose(1, 0, $"y{i}"));
            Assert.Equal(instance, other.InstanceId);
            lost.Add(instance);

            // Node 0's late retries of the lost instance pass; its next attempt, in a later instance, is cut again.
            Volatile.Write(ref cutter.MinInstance, instance + 1);
            Volatile.Write(ref cutter.Armed, i + 1 < losses ? 1 : 0);
            cluster.Network.HealAll();
        }

        var result = await proposal.WaitAsync(Generous);
        cluster.Network.SendObserver = null;
        return (result, lost);
    }

    private static bool Sent(ConcurrentQueue<(NodeId From, NodeId To, PaxosMsg Message)> seen, NodeId from, NodeId to, PaxosMsgType type, ulong instance) =>
        seen.Any(s => s.From == from && s.To == to && s.Message.MsgType == (int)type && s.Message.InstanceID == instance);

    private static List<string> Values(TestCluster cluster, int node) =>
        [.. cluster.Machines[node][0].Snapshot().Select(e => Encoding.UTF8.GetString(e.Value))];

    private static ProposeResult Ok(ProposeResult result)
    {
        Assert.Equal(ProposeStatus.Ok, result.Status);
        return result;
    }

    private sealed class Cutter
    {
        public ulong MinInstance;
        public int Armed;
    }
}
