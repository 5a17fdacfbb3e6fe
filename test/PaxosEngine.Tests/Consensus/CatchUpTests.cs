using System.Collections.Concurrent;
using System.Diagnostics;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Tests.Support;
using Xunit.Abstractions;

namespace Orleans.Paxos.Engine.Tests.Consensus;

/// <summary>
/// Catch-up of a lagging node from its peers' logs (PhxPaxos ask-for-learn and <c>LearnerSender</c>): it asks,
/// a peer answers with its instance, the lagging node confirms and the peer streams the values, paced by
/// <c>LearnerSendQps</c>.
/// </summary>
public sealed class CatchUpTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_lagging_node_asks_its_peers_and_learns_every_value_it_missed_without_new_proposals()
    {
        using var cluster = new TestCluster(3, 1, seed: 511);
        await cluster.WaitVotingAsync(0, Generous);
        Assert.True((await cluster.Propose(0, 0, "before")).IsOk);
        await cluster.WaitConvergedAsync(0, 1, Generous);

        cluster.Network.Isolate(cluster.Ids[2]);
        var behind = cluster.Node(2).GetNowInstanceId(0);
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(i % 2, 0, $"missed-{i}")).Status);
        }

        Assert.Equal(behind, cluster.Node(2).GetNowInstanceId(0));
        var asks = new ConcurrentQueue<ulong>();
        var learned = new ConcurrentQueue<ulong>();
        cluster.Network.SendObserver = (from, to, frame) =>
        {
            if (from == cluster.Ids[2] && PaxosFrames.Is(frame, 0, PaxosMsgType.AskForLearn, out var ask))
            {
                asks.Enqueue(ask.InstanceID);
            }
            else if (to == cluster.Ids[2] && PaxosFrames.Is(frame, 0, PaxosMsgType.SendLearnValue, out var value))
            {
                learned.Enqueue(value.InstanceID);
            }
        };

        // Nothing is proposed from here on: the only way node 2 gets the values is to ask for them.
        cluster.Network.HealAll();
        await cluster.WaitConvergedAsync(0, 21, Generous);
        cluster.AssertSafety(0);
        Assert.Contains(behind, asks);
        Assert.Equal(Enumerable.Range((int)behind, 20).Select(i => (ulong)i), learned.Distinct().Order());
        Assert.Equal(cluster.Node(0).GetNowInstanceId(0), cluster.Node(2).GetNowInstanceId(0));
    }

    [Fact]
    public async Task Catch_up_values_are_sent_no_faster_than_LearnerSendQps()
    {
        const int Qps = 40;
        const int Missed = 120;
        using var cluster = new TestCluster(3, 1, seed: 512, configure: o => o.LearnerSendQps = Qps);
        await cluster.WaitVotingAsync(0, Generous);
        cluster.Network.Isolate(cluster.Ids[2]);
        for (var i = 0; i < Missed; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(i % 2, 0, $"missed-{i}")).Status);
        }

        // Streamed values (those that ask for an acknowledgement), with when and by whom they were sent.
        var clock = Stopwatch.StartNew();
        var sent = new ConcurrentQueue<(NodeId From, ulong Instance, TimeSpan At)>();
        cluster.Network.SendObserver = (from, to, frame) =>
        {
            if (to == cluster.Ids[2] && PaxosFrames.Is(frame, 0, PaxosMsgType.SendLearnValue, out var value) && value.Flag == 1)
            {
                sent.Enqueue((from, value.InstanceID, clock.Elapsed));
            }
        };

        cluster.Network.HealAll();
        await cluster.WaitConvergedAsync(0, Missed, Generous);
        cluster.AssertSafety(0);

        // A sender starts with no budget and earns Qps values a second, holding at most Qps unspent: over its
        // whole stream it cannot have sent more than Qps per second of its duration plus one second's worth.
        Assert.True(sent.Count >= Missed / 2, $"only {sent.Count} values were streamed");
        foreach (var stream in sent.GroupBy(s => s.From))
        {
            var count = stream.Count();
            var span = (stream.Max(s => s.At) - stream.Min(s => s.At)).TotalSeconds;
            output.WriteLine($"{stream.Key} streamed {count} values over {span:0.00} s");
            Assert.True(count <= (Qps * span) + Qps + 1, $"{stream.Key} streamed {count} values in {span:0.00} s, faster than {Qps} a second");
        }
    }
}
