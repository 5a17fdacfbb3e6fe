using System.Text;
using Google.Protobuf;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Tests.Checkpoints;
using Orleans.Paxos.Engine.Tests.Support;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Tests.Consensus;

/// <summary>The rolling value checksum (PhxPaxos <c>ChecksumLogic</c>): a history that differs stops the group, nothing else.</summary>
public sealed class ChecksumChainTests
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_message_whose_checksum_contradicts_the_history_stops_only_that_group_on_that_node()
    {
        var logs = new CollectingLoggerFactory();
        using var cluster = new TestCluster(3, 2, seed: 77, startNodes: 0) { LoggerFactory = logs };
        for (var i = 0; i < 3; i++)
        {
            cluster.Start(i);
        }

        ProposeResult last = ProposeResult.Timeout;
        for (var i = 0; i < 3; i++)
        {
            last = await cluster.Propose(0, 0, $"v{i}");
            Assert.Equal(ProposeStatus.Ok, last.Status);
        }

        // Every node past the last value: a node's state machine runs before the node publishes its next instance,
        // so executed counts alone can be read while a node still reports the instance it just executed.
        var now = last.InstanceId + 1;
        await KvCluster.WaitUntil(() => Enumerable.Range(0, 3).All(i => cluster.Node(i).GetNowInstanceId(0) == now), $"every node to reach instance {now}", Generous);
        await cluster.WaitConvergedAsync(0, 3, Generous);

        // An accept for node 1's current instance whose "checksum of the previous instance" is not node 1's:
        // the sender's log differs from this node's, so accepting anything more could only spread the damage.
        using var stranger = cluster.Network.CreateTransport(NodeId.Parse("127.0.0.1:1999"));
        var accept = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.Accept,
            InstanceID = now,
            NodeID = cluster.Ids[2].Value,
            ProposalID = 1_000,
            ProposalNodeID = cluster.Ids[2].Value,
            Value = ByteString.CopyFromUtf8("diverged"),
            LastChecksum = 0x0BAD_F00D,
        };
        stranger.Send(cluster.Ids[1], FrameCodec.Encode(0, 0, accept), TransportKind.Udp);

        await KvCluster.WaitUntil(() => cluster.Node(1).GetGroupStoppedReason(0) is not null, "node 1's group 0 to stop", Generous);
        Assert.Contains("checksum mismatch", cluster.Node(1).GetGroupStoppedReason(0), StringComparison.Ordinal);
        await KvCluster.WaitUntil(() => logs.Lines.Any(l => l.Contains("Critical: Group 0 STOPPED", StringComparison.Ordinal) && l.Contains("checksum mismatch", StringComparison.Ordinal)), "the STOPPED log line", Generous);

        // Nothing of the diverged message was taken, the node's other group works, and so do the others.
        Assert.Equal(now, cluster.Node(1).GetNowInstanceId(0));
        Assert.Equal(ProposeStatus.GroupStopped, (await cluster.Propose(1, 0, "on-the-stopped-group")).Status);
        Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(1, 1, "other-group")).Status);
        var still = await cluster.Propose(0, 0, "still-chosen");
        Assert.Equal(ProposeStatus.Ok, still.Status);
        Assert.Equal(now, still.InstanceId);
        Assert.Null(cluster.Node(0).GetGroupStoppedReason(0));
        Assert.Null(cluster.Node(2).GetGroupStoppedReason(0));

        // Node 0 reported the value chosen; node 2 learns it a moment later.
        await KvCluster.WaitUntil(() => cluster.Node(2).GetNowInstanceId(0) > now, "node 2 to learn the value", Generous);
        var chosen = cluster.Node(2).GetInstanceValue(0, now);
        Assert.Equal(InstanceValueStatus.Ok, chosen.Status);
        Assert.Equal("still-chosen", Encoding.UTF8.GetString(chosen.Values[0].Value));
    }

    [Fact]
    public async Task The_first_value_of_a_catch_up_is_checked_against_the_learners_history()
    {
        using var cluster = new TestCluster(3, 1, seed: 79);
        Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(0, 0, "a0")).Status);
        Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(0, 0, "a1")).Status);
        await cluster.WaitConvergedAsync(0, 2, Generous);
        cluster.Stop(2);
        for (var i = 2; i < 6; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(0, 0, $"b{i}")).Status);
        }

        // While node 2 is down its history diverges: its record of instance 0 now carries another checksum. It
        // restarts at instance 1 (its last record, whose outcome it learns again) and catches up from there.
        var options = new Engine.Storage.LogStorageOptions { RootPath = Path.Combine(cluster.Root, "node2"), GroupCount = 1, DataFileSize = 1 << 20 };
        byte[] first, second;
        using (var storage = new Engine.Storage.FileLogStorage(options))
        {
            var record = AcceptorStateData.Parser.ParseFrom(storage.Get(0, 0));
            record.Checksum ^= 0x5A5A_5A5A;
            first = record.ToByteArray();
            second = storage.Get(0, 1)!;
        }

        Directory.Delete(Path.Combine(options.RootPath, "g0"), recursive: true);
        using (var storage = new Engine.Storage.FileLogStorage(options))
        {
            await storage.PutAsync(0, 0, first, sync: true);
            await storage.PutAsync(0, 1, second, sync: true);
        }

        cluster.Start(2);
        await KvCluster.WaitUntil(() => cluster.Node(2).GetGroupStoppedReason(0) is not null, "node 2's group 0 to stop", Generous);
        Assert.Contains("checksum mismatch at instance 1", cluster.Node(2).GetGroupStoppedReason(0), StringComparison.Ordinal);

        // It stopped before executing anything of the other history: the first value sent was checked too.
        Assert.Equal(1UL, cluster.Node(2).GetNowInstanceId(0));
        Assert.DoesNotContain(cluster.Machines[2][0].Snapshot(), e => e.Instance >= 1);
    }

    [Fact]
    public async Task A_message_with_the_matching_checksum_is_taken()
    {
        using var cluster = new TestCluster(3, 1, seed: 78);
        Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(0, 0, "a")).Status);
        await cluster.WaitConvergedAsync(0, 1, Generous);

        // Every later instance carries the checksum chain; a run of proposals from every node must never trip it.
        for (var i = 0; i < 12; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(i % 3, 0, $"b{i}")).Status);
        }

        await cluster.WaitConvergedAsync(0, 13, Generous);
        cluster.AssertSafety(0);
        for (var n = 0; n < 3; n++)
        {
            Assert.Null(cluster.Node(n).GetGroupStoppedReason(0));
        }
    }
}
