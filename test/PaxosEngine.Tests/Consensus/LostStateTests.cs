using System.Text;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Groups;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Tests.Checkpoints;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Consensus;

/// <summary>
/// A node that lost its data folder or its index must not vote until that is safe (the voting gate): it learns
/// first, so it can neither vote away values it had accepted nor fork the cluster id.
/// </summary>
/// <remarks>
/// Runs alone, with the telemetry tests: one test reads the not-voting gauge of node 0, whose series every other
/// test cluster's node 0 (the same address) also reports while its new group surveys.
/// </remarks>
[Collection(Telemetry.TelemetryCollection.Name)]
public sealed class LostStateTests
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(30);

    /// <summary>
    /// The scenario of a wiped disk: values chosen by nodes {0,2} while node 1 is down; node 2's folder is emptied
    /// and it restarts; node 0 is cut off; node 1 proposes. Without the gate node 2 promises and accepts with no
    /// memory of its accepts, and node 1's value is chosen at instance 3 over the three acknowledged ones.
    /// </summary>
    [Fact]
    public async Task A_node_restarted_with_an_empty_folder_does_not_vote_away_acknowledged_values()
    {
        using var cluster = new TestCluster(3, 1, seed: 141, configure: o => o.ProposeTimeout = TimeSpan.FromSeconds(3));
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(0, 0, $"v{i}")).Status);
        }

        await cluster.WaitConvergedAsync(0, 3, Generous);
        cluster.Stop(1);
        var acknowledged = new List<(ulong Instance, string Value)>();
        for (var i = 0; i < 3; i++)
        {
            var result = await cluster.Propose(0, 0, $"acked-{i}");
            Assert.Equal(ProposeStatus.Ok, result.Status);
            acknowledged.Add((result.InstanceId, $"acked-{i}"));
        }

        Assert.Equal([3UL, 4UL, 5UL], acknowledged.Select(a => a.Instance));

        // Node 2 loses its disk and comes back empty; node 0 is cut off; node 1 comes back.
        cluster.Stop(2);
        Directory.Delete(Path.Combine(cluster.Root, "node2"), recursive: true);
        cluster.Network.Isolate(cluster.Ids[0]);
        cluster.Start(2);
        cluster.Start(1);
        Assert.NotEqual(VotingState.Voting, cluster.Node(2).GetGroupVotingState(0).State);
        Assert.NotNull(cluster.Node(2).GetGroupVotingState(0).Reason);

        // Nodes 1 and 2 are a majority of connected nodes, but node 2 may not vote: nothing can be chosen.
        var during = await cluster.Propose(1, 0, "after-1");
        Assert.NotEqual(ProposeStatus.Ok, during.Status);
        Assert.NotEqual(VotingState.Voting, cluster.Node(2).GetGroupVotingState(0).State);

        // Once node 0 is back, node 2 learns every acknowledged value and votes again; new values follow them.
        cluster.Network.HealAll();
        await KvCluster.WaitUntil(() => cluster.Node(2).GetGroupVotingState(0).State == VotingState.Voting, "node 2 to vote again", Generous);
        var after = await ProposeUntilOk(cluster, 1, "after-2");
        Assert.True(after.InstanceId >= 6, $"a new value was chosen at instance {after.InstanceId}, over an acknowledged one");
        await KvCluster.WaitUntil(() => Enumerable.Range(0, 3).All(n => cluster.Node(n).GetNowInstanceId(0) > after.InstanceId), "every node to learn the new value", Generous);
        for (var n = 0; n < 3; n++)
        {
            Assert.Null(cluster.Node(n).GetGroupStoppedReason(0));
            foreach (var (instance, value) in acknowledged)
            {
                var chosen = cluster.Node(n).GetInstanceValue(0, instance);
                Assert.Equal(InstanceValueStatus.Ok, chosen.Status);
                Assert.Equal(value, Encoding.UTF8.GetString(chosen.Values[0].Value));
            }
        }

        cluster.AssertSafety(0);
    }

    /// <summary>A wiped node of a running cluster rejoins by itself: it catches up, gets a no-op chosen by the others, and votes.</summary>
    [Fact]
    public async Task A_wiped_node_rebuilds_and_votes_again_while_the_others_keep_choosing()
    {
        using var cluster = new TestCluster(3, 1, seed: 142);
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(i % 3, 0, $"v{i}")).Status);
        }

        await cluster.WaitConvergedAsync(0, 5, Generous);
        using var capture = new Telemetry.MeterCapture();
        cluster.Stop(1);
        Directory.Delete(Path.Combine(cluster.Root, "node1"), recursive: true);

        // Cut off at first, so that it stays where it started while the state is read.
        cluster.Network.Isolate(cluster.Ids[1]);
        cluster.Start(1);
        Assert.Equal(VotingState.Surveying, cluster.Node(1).GetGroupVotingState(0).State);
        capture.ObserveGauges();
        Assert.Equal(1, capture.Gauge("paxos.group.not_voting", ("paxos.node", cluster.Ids[1].ToString()), ("paxos.group", "0")));
        Assert.Equal(0, capture.Gauge("paxos.group.not_voting", ("paxos.node", cluster.Ids[0].ToString()), ("paxos.group", "0")));
        cluster.Network.HealAll();

        // The other two keep choosing values meanwhile.
        for (var i = 5; i < 8; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(0, 0, $"v{i}")).Status);
        }

        await KvCluster.WaitUntil(() => cluster.Node(1).GetGroupVotingState(0).State == VotingState.Voting, "node 1 to vote again", Generous);
        capture.ObserveGauges();
        Assert.Equal(0, capture.Gauge("paxos.group.not_voting", ("paxos.node", cluster.Ids[1].ToString()), ("paxos.group", "0")));

        // Now node 1 is needed: with node 2 down, nodes 0 and 1 must choose together.
        cluster.Stop(2);
        Assert.Equal(ProposeStatus.Ok, (await ProposeUntilOk(cluster, 1, "with-node-1")).Status);
        cluster.Start(2);
        await KvCluster.WaitUntil(() => Enumerable.Range(0, 3).All(n => cluster.Node(n).GetNowInstanceId(0) == cluster.Node(0).GetNowInstanceId(0)), "every node at the same instance", Generous);
        cluster.AssertSafety(0);
    }

    /// <summary>
    /// A node that does not vote still follows a busy group: it learns each new instance from the accept it saw
    /// and the commit that names its ballot, not only by catch-up (which ends where the sender was, so that in a
    /// busy group it would always stay a few instances behind and could neither propose nor vote again).
    /// </summary>
    [Fact]
    public async Task A_node_that_does_not_vote_learns_the_live_instances_from_their_accepts_and_commits()
    {
        using var cluster = new TestCluster(3, 1, seed: 147);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(0, 0, $"v{i}")).Status);
        }

        await cluster.WaitConvergedAsync(0, 3, Generous);
        cluster.Stop(2);
        Directory.Delete(Path.Combine(cluster.Root, "node2"), recursive: true);

        // Node 2's gate stays closed: its own rounds (prepares) and the answers to its surveys are dropped.
        // Later it may not ask at all (no catch-up either): all it hears of new instances is their accepts and commits.
        var mayAsk = 1;
        cluster.Network.DropFilter = (from, to, frame) =>
            FrameCodec.TryDecode(frame, FrameCodec.DefaultMaxFrameLength, out var decoded) == FrameError.None
            && decoded!.Paxos is { } m
            && ((from == cluster.Ids[2] && (m.MsgType == (int)PaxosMsgType.Prepare || (m.MsgType == (int)PaxosMsgType.AskForLearn && Volatile.Read(ref mayAsk) == 0)))
                || (to == cluster.Ids[2] && m.MsgType == (int)PaxosMsgType.SendNowInstanceId && m.ProposalID != 0));
        cluster.Start(2);
        await KvCluster.WaitUntil(() => cluster.Node(2).GetNowInstanceId(0) == cluster.Node(0).GetNowInstanceId(0), "node 2 to catch up", Generous);
        Volatile.Write(ref mayAsk, 0);
        Assert.NotEqual(VotingState.Voting, cluster.Node(2).GetGroupVotingState(0).State);
        for (var i = 3; i < 13; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(0, 0, $"v{i}")).Status);
        }

        var head = cluster.Node(0).GetNowInstanceId(0);
        await KvCluster.WaitUntil(() => cluster.Node(2).GetNowInstanceId(0) >= head, "node 2 to follow the live instances", Generous);
        Assert.NotEqual(VotingState.Voting, cluster.Node(2).GetGroupVotingState(0).State);
        cluster.Network.DropFilter = null;
        await KvCluster.WaitUntil(() => cluster.Node(2).GetGroupVotingState(0).State == VotingState.Voting, "node 2 to vote again", Generous);
        cluster.AssertSafety(0);
    }

    /// <summary>A wiped node that restarts after learning part of the log, before it votes again, still does not vote.</summary>
    [Fact]
    public async Task A_node_restarted_while_rebuilding_keeps_rebuilding()
    {
        using var cluster = new TestCluster(3, 1, seed: 145);
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(0, 0, $"v{i}")).Status);
        }

        await cluster.WaitConvergedAsync(0, 5, Generous);
        cluster.Stop(1);
        Directory.Delete(Path.Combine(cluster.Root, "node1"), recursive: true);

        // It can learn from node 0 but cannot reach node 2, so it can neither finish the survey nor get a no-op chosen.
        cluster.Network.Partition(cluster.Ids[1], cluster.Ids[2]);
        cluster.Start(1);
        await KvCluster.WaitUntil(() => cluster.Node(1).GetNowInstanceId(0) == 5, "node 1 to learn the log", Generous);
        Assert.Equal(VotingState.Surveying, cluster.Node(1).GetGroupVotingState(0).State);

        // Its log is no longer empty, yet after a restart it must not vote with the promises it lost.
        cluster.Stop(1);
        cluster.Start(1);
        var (state, reason) = cluster.Node(1).GetGroupVotingState(0);
        Assert.Equal(VotingState.Rebuilding, state);
        Assert.Contains("stopped while rebuilding", reason, StringComparison.Ordinal);

        cluster.Network.HealAll();
        await KvCluster.WaitUntil(() => cluster.Node(1).GetGroupVotingState(0).State == VotingState.Voting, "node 1 to vote again", Generous);

        // And once it voted again, a restart keeps it voting.
        cluster.Stop(1);
        cluster.Start(1);
        Assert.Equal(VotingState.Voting, cluster.Node(1).GetGroupVotingState(0).State);
        cluster.Stop(2);
        Assert.Equal(ProposeStatus.Ok, (await ProposeUntilOk(cluster, 1, "with-node-1")).Status);
    }

    /// <summary>
    /// A deleted index and a torn tail: without the index's record of what was fsynced, the cut tail may have
    /// held durable promises, so the node rebuilds before it votes. Losing the index while rebuilding keeps it
    /// rebuilding (the marker is also a file beside the index).
    /// </summary>
    [Fact]
    public async Task A_deleted_index_with_a_torn_tail_or_while_rebuilding_does_not_vote()
    {
        using var cluster = new TestCluster(3, 1, seed: 146);
        for (var i = 0; i < 4; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(0, 0, $"v{i}")).Status);
        }

        await cluster.WaitConvergedAsync(0, 4, Generous);
        cluster.Stop(1);
        DeleteIndex(cluster, 1);
        AppendTornRecord(Path.Combine(cluster.Root, "node1", "g0", "vfile"));
        cluster.Start(1);
        var (state, reason) = cluster.Node(1).GetGroupVotingState(0);
        Assert.Equal(VotingState.Rebuilding, state);
        Assert.Contains("torn write", reason, StringComparison.Ordinal);

        // Cut off from node 2 it cannot vote again; its index is lost once more meanwhile.
        cluster.Network.Partition(cluster.Ids[1], cluster.Ids[2]);
        cluster.Stop(1);
        DeleteIndex(cluster, 1);
        cluster.Start(1);
        Assert.Equal(VotingState.Rebuilding, cluster.Node(1).GetGroupVotingState(0).State);

        cluster.Network.HealAll();
        await KvCluster.WaitUntil(() => cluster.Node(1).GetGroupVotingState(0).State == VotingState.Voting, "node 1 to vote again", Generous);
        cluster.Stop(2);
        Assert.Equal(ProposeStatus.Ok, (await ProposeUntilOk(cluster, 1, "with-node-1")).Status);
        cluster.Start(2);
        await KvCluster.WaitUntil(() => Enumerable.Range(0, 3).All(n => cluster.Node(n).GetNowInstanceId(0) == cluster.Node(0).GetNowInstanceId(0)), "every node at the same instance", Generous);
        cluster.AssertSafety(0);

        // A record cut short after the last one of the last data file: what a crash mid-write leaves.
        static void AppendTornRecord(string vfile)
        {
            var last = Directory.GetFiles(vfile, "*.f").OrderBy(f => int.Parse(Path.GetFileNameWithoutExtension(f), System.Globalization.CultureInfo.InvariantCulture)).Last();
            using var handle = File.OpenHandle(last, FileMode.Open, FileAccess.ReadWrite);
            var length = RandomAccess.GetLength(handle);
            var header = new byte[4];
            long offset = 0;
            while (offset + 4 <= length && RandomAccess.Read(handle, header, offset) == 4 && BitConverter.ToInt32(header) is var size and > 0)
            {
                offset += 4 + size;
            }

            RandomAccess.Write(handle, new byte[] { 64, 0, 0, 0, 1, 2, 3 }, offset);
        }
    }

    /// <summary>
    /// A deleted index: the node rebuilds it from its data files, recovers the cluster id from the log, never
    /// proposes a new one, and the group keeps one cluster id on every node.
    /// </summary>
    [Fact]
    public async Task A_deleted_index_is_rebuilt_and_the_cluster_id_is_recovered_not_forked()
    {
        using var cluster = new TestCluster(3, 1, seed: 143, configure: o => o.UseMembership = true);
        for (var i = 0; i < 4; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(0, 0, $"v{i}")).Status);
        }

        await KvCluster.WaitUntil(() => Enumerable.Range(0, 3).All(n => cluster.Node(n).GetMembership(0).Gid != 0 && cluster.Node(n).GetNowInstanceId(0) >= 4), "the cluster id on every node", Generous);
        var gid = cluster.Node(0).GetMembership(0).Gid;
        cluster.Stop(1);
        DeleteIndex(cluster, 1);
        cluster.Start(1);
        Assert.Equal(gid, cluster.Node(1).GetMembership(0).Gid);

        // Its data files were whole, and they hold every promise and accept: it votes at once.
        Assert.Equal(VotingState.Voting, cluster.Node(1).GetGroupVotingState(0).State);

        // The rebuilt node proposes: its value is chosen after the others, under the same cluster id.
        var result = await ProposeUntilOk(cluster, 1, "from-rebuilt");
        Assert.True(result.InstanceId >= 4);
        await KvCluster.WaitUntil(() => cluster.Node(1).GetGroupVotingState(0).State == VotingState.Voting, "node 1 to vote again", Generous);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(i, 0, $"w{i}")).Status);
        }

        await KvCluster.WaitUntil(() => Enumerable.Range(0, 3).All(n => cluster.Node(n).GetNowInstanceId(0) == cluster.Node(0).GetNowInstanceId(0)), "every node at the same instance", Generous);
        for (var n = 0; n < 3; n++)
        {
            Assert.Equal(gid, cluster.Node(n).GetMembership(0).Gid);
            Assert.Null(cluster.Node(n).GetGroupStoppedReason(0));
        }

        cluster.AssertSafety(0);
    }

    /// <summary>A brand-new cluster whose members all start empty bootstraps by itself: every member answers the survey.</summary>
    [Fact]
    public async Task A_new_cluster_bootstraps_once_every_member_has_started()
    {
        using var cluster = new TestCluster(3, 2, seed: 144, startNodes: 2);
        Assert.Equal(VotingState.Surveying, cluster.Node(0).GetGroupVotingState(0).State);

        // Two of three cannot tell a new group from a member that lost its disk: they wait for the third.
        var early = await cluster.Node(0).ProposeAsync(0, "early"u8.ToArray(), null, new CancellationTokenSource(TimeSpan.FromMilliseconds(500)).Token);
        Assert.NotEqual(ProposeStatus.Ok, early.Status);
        cluster.Start(2);
        await KvCluster.WaitUntil(() => Enumerable.Range(0, 3).All(n => cluster.Node(n).GetGroupVotingState(1).State == VotingState.Voting), "every node to vote", Generous);
        Assert.Equal(ProposeStatus.Ok, (await ProposeUntilOk(cluster, 0, "first")).Status);
        Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(2, 1, "other-group")).Status);
    }

    private static async Task<ProposeResult> ProposeUntilOk(TestCluster cluster, int node, string value)
    {
        var deadline = DateTime.UtcNow + Generous;
        while (true)
        {
            var result = await cluster.Propose(node, 0, value);
            if (result.Status == ProposeStatus.Ok || DateTime.UtcNow > deadline)
            {
                Assert.Equal(ProposeStatus.Ok, result.Status);
                return result;
            }
        }
    }

    /// <summary>Deletes a stopped node's group-0 index with its SQLite side files.</summary>
    private static void DeleteIndex(TestCluster cluster, int node)
    {
        foreach (var file in Directory.GetFiles(Path.Combine(cluster.Root, $"node{node}", "g0"), "index.db*"))
        {
            File.Delete(file);
        }
    }
}
