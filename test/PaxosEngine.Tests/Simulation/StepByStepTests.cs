using Google.Protobuf;
using Microsoft.Extensions.Time.Testing;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Tests.Support;
using Orleans.Paxos.Engine.Groups;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Tests.Simulation;

/// <summary>
/// One real node driven step by step on fake time (<see cref="ManualLoopDriver"/>): the test plays its two peers,
/// hands it exactly the frames a scenario needs and reads every frame it sends. For rules a seeded schedule reaches
/// only rarely.
/// </summary>
public sealed class StepByStepTests
{
    private static readonly NodeId Me = NodeId.Parse("127.0.0.1:32000");
    private static readonly NodeId PeerB = NodeId.Parse("127.0.0.1:32001");
    private static readonly NodeId PeerC = NodeId.Parse("127.0.0.1:32002");

    [Fact]
    public void A_prepare_of_the_next_instance_is_no_implicit_commit_but_an_accept_is()
    {
        using var node = new SteppedNode(voteWithEmptyLog: true);
        var ballot = 5ul;
        node.Deliver(PeerB, new PaxosMsg { MsgType = (int)PaxosMsgType.Prepare, InstanceID = 0, NodeID = PeerB.Value, ProposalID = ballot });
        node.Deliver(PeerB, new PaxosMsg { MsgType = (int)PaxosMsgType.Accept, InstanceID = 0, NodeID = PeerB.Value, ProposalID = ballot, Value = Packed("x") });
        Assert.Contains(node.Sent, s => s.Message.MsgType == (int)PaxosMsgType.AcceptReply && s.Message.RejectByPromiseID == 0);

        // A proposer prepares the next instance with its old ballot after a round that failed: the ballot it carries
        // says nothing about which ballot chose instance 0, so the value accepted there must not be learned from it.
        node.Deliver(PeerB, new PaxosMsg { MsgType = (int)PaxosMsgType.Prepare, InstanceID = 1, NodeID = PeerB.Value, ProposalID = ballot });
        Assert.Equal(0ul, node.Paxos.GetNowInstanceId(0));

        // An accept of the next instance with that ballot is sent only by the proposer that got instance 0 chosen with it.
        node.Deliver(PeerB, new PaxosMsg { MsgType = (int)PaxosMsgType.Accept, InstanceID = 1, NodeID = PeerB.Value, ProposalID = ballot, Value = Packed("y") });
        Assert.Equal(1ul, node.Paxos.GetNowInstanceId(0));
        Assert.Equal("x", Unpacked(node.Paxos.GetInstanceValue(0, 0)));
    }

    [Fact]
    public void A_node_that_starts_without_its_log_proposes_above_any_ballot_its_earlier_life_used()
    {
        using var fresh = new SteppedNode(voteWithEmptyLog: false);
        Assert.NotEqual(VotingState.Voting, fresh.Paxos.GetGroupVotingState(0).State);
        var floor = PaxosGroup.FreshProposalIdFloor(fresh.Time);
        Assert.True(floor > 1UL << 40, $"floor {floor}");

        fresh.Paxos.SubmitProposal(0, "v"u8.ToArray());
        fresh.RunUntilIdle();
        var prepare = Assert.Single(fresh.Sent, s => s.To == PeerB && s.Message.MsgType == (int)PaxosMsgType.Prepare).Message;
        Assert.True(prepare.ProposalID >= floor, $"prepared with {prepare.ProposalID}, floor {floor}");

        // A node that votes from the start keeps PhxPaxos's ids: its last promise plus one.
        using var voting = new SteppedNode(voteWithEmptyLog: true);
        voting.Paxos.SubmitProposal(0, "v"u8.ToArray());
        voting.RunUntilIdle();
        Assert.Equal(1ul, Assert.Single(voting.Sent, s => s.To == PeerB && s.Message.MsgType == (int)PaxosMsgType.Prepare).Message.ProposalID);
    }

    [Fact]
    public void Nothing_runs_until_the_driver_runs_it_and_timers_fire_only_when_the_test_moves_the_clock()
    {
        using var node = new SteppedNode(voteWithEmptyLog: true);
        var proposal = node.Paxos.SubmitProposal(0, "v"u8.ToArray());
        Assert.Empty(node.Sent);

        node.RunUntilIdle();
        var prepares = node.Sent.Count(s => s.Message.MsgType == (int)PaxosMsgType.Prepare);
        Assert.Equal(2, prepares);

        // No answer: the prepare is sent again only once the fake clock passes the proposer's timeout.
        node.RunUntilIdle();
        Assert.Equal(prepares, node.Sent.Count(s => s.Message.MsgType == (int)PaxosMsgType.Prepare));
        node.Time.Advance(TimeSpan.FromSeconds(5));
        node.RunUntilIdle();
        Assert.True(node.Sent.Count(s => s.Message.MsgType == (int)PaxosMsgType.Prepare) > prepares);
        Assert.False(proposal.IsCompleted);
    }

    [Fact]
    public void With_flush_when_idle_the_next_batch_waits_briefly_for_the_callers_of_the_last_one()
    {
        using var node = new SteppedNode(voteWithEmptyLog: true, o => o.BatchFlushWhenIdle = true);
        var a = node.Paxos.SubmitProposal(0, "a"u8.ToArray(), explicitBatch: true);
        node.RunUntilIdle();
        var b = node.Paxos.SubmitProposal(0, "b"u8.ToArray(), explicitBatch: true);
        var c = node.Paxos.SubmitProposal(0, "c"u8.ToArray(), explicitBatch: true);
        node.RunUntilIdle();
        node.Deliver(PeerB, new PaxosMsg { MsgType = (int)PaxosMsgType.PrepareReply, InstanceID = 0, NodeID = PeerB.Value, ProposalID = 1 });
        Assert.Equal("a", AcceptedValues(node, 0));

        // Instance 0 is chosen: a's caller is answered while b and c wait. They wait for it to come back (three
        // values were out), instead of going as an instance of two that the returning caller's value then trails.
        node.Deliver(PeerB, new PaxosMsg { MsgType = (int)PaxosMsgType.AcceptReply, InstanceID = 0, NodeID = PeerB.Value, ProposalID = 1 });
        Assert.True(a.IsCompleted);
        Assert.Null(AcceptedValues(node, 1));
        var a2 = node.Paxos.SubmitProposal(0, "a2"u8.ToArray(), explicitBatch: true);
        node.RunUntilIdle();
        Assert.Equal("b,c,a2", AcceptedValues(node, 1));

        // Instance 1 is chosen; only one of its three callers comes back. The batch goes when the wait runs out.
        node.Deliver(PeerB, new PaxosMsg { MsgType = (int)PaxosMsgType.AcceptReply, InstanceID = 1, NodeID = PeerB.Value, ProposalID = 1 });
        Assert.All(new[] { b, c, a2 }, p => Assert.Equal(ProposeStatus.Ok, StatusOf(p)));
        node.Paxos.SubmitProposal(0, "b2"u8.ToArray(), explicitBatch: true);
        AssertGoesWhenTheWaitRunsOut(node, 2, "b2");
    }

    [Fact]
    public void A_lone_caller_never_waits_for_company()
    {
        using var node = new SteppedNode(voteWithEmptyLog: true);
        var first = node.Paxos.SubmitProposal(0, "a"u8.ToArray());
        node.RunUntilIdle();
        node.Deliver(PeerB, new PaxosMsg { MsgType = (int)PaxosMsgType.PrepareReply, InstanceID = 0, NodeID = PeerB.Value, ProposalID = 1 });
        node.Deliver(PeerB, new PaxosMsg { MsgType = (int)PaxosMsgType.AcceptReply, InstanceID = 0, NodeID = PeerB.Value, ProposalID = 1 });
        Assert.True(first.IsCompleted);

        // One value was out, and it is back: the next instance starts with it, the clock standing still.
        node.Paxos.SubmitProposal(0, "a2"u8.ToArray());
        node.RunUntilIdle();
        Assert.Equal("a2", AcceptedValues(node, 1));
    }

    [Fact]
    public void Plain_proposals_wait_briefly_for_the_callers_of_the_last_instance_until_a_wait_runs_out()
    {
        using var node = new SteppedNode(voteWithEmptyLog: true);
        node.Paxos.SubmitProposal(0, "a"u8.ToArray());
        node.RunUntilIdle();
        node.Paxos.SubmitProposal(0, "b"u8.ToArray());
        node.RunUntilIdle();
        node.Deliver(PeerB, new PaxosMsg { MsgType = (int)PaxosMsgType.PrepareReply, InstanceID = 0, NodeID = PeerB.Value, ProposalID = 1 });
        Assert.Equal("a", AcceptedValues(node, 0));

        // Two callers: a's is answered while b waits, and b waits for it instead of going alone.
        node.Deliver(PeerB, new PaxosMsg { MsgType = (int)PaxosMsgType.AcceptReply, InstanceID = 0, NodeID = PeerB.Value, ProposalID = 1 });
        Assert.Null(AcceptedValues(node, 1));
        node.Paxos.SubmitProposal(0, "a2"u8.ToArray());
        node.RunUntilIdle();
        Assert.Equal("b,a2", AcceptedValues(node, 1));

        // Neither caller comes back in time: the value that arrives later goes when the window is up.
        node.Deliver(PeerB, new PaxosMsg { MsgType = (int)PaxosMsgType.AcceptReply, InstanceID = 1, NodeID = PeerB.Value, ProposalID = 1 });
        node.Paxos.SubmitProposal(0, "x"u8.ToArray());
        AssertGoesWhenTheWaitRunsOut(node, 2, "x");

        // After a wait that ran out, the next instances start at once: y waits behind x, and goes as soon as x is
        // chosen although two values were out.
        node.Paxos.SubmitProposal(0, "y"u8.ToArray());
        node.RunUntilIdle();
        node.Deliver(PeerB, new PaxosMsg { MsgType = (int)PaxosMsgType.AcceptReply, InstanceID = 2, NodeID = PeerB.Value, ProposalID = 1 });
        Assert.Equal("y", AcceptedValues(node, 3));
    }

    /// <summary>
    /// The values waiting for <paramref name="instance"/> stay until the wait for the last instance's callers is over
    /// (the window, and the clock's tick after it), then go as <paramref name="expected"/>.
    /// </summary>
    private static void AssertGoesWhenTheWaitRunsOut(SteppedNode node, ulong instance, string expected)
    {
        node.RunUntilIdle();
        Assert.Null(AcceptedValues(node, instance));
        node.Time.Advance(TimeSpan.FromMilliseconds(Committer.GatherWindowMs));
        node.RunUntilIdle();
        Assert.Null(AcceptedValues(node, instance));
        node.Time.Advance(TimeSpan.FromMilliseconds(1));
        node.RunUntilIdle();
        Assert.Equal(expected, AcceptedValues(node, instance));
    }

    /// <summary>The proposal's outcome once the loop completed it, or null while it is still waiting (never blocks).</summary>
    private static ProposeStatus? StatusOf(PendingProposal proposal) =>
        proposal.Completion.Task.IsCompleted ? proposal.Completion.Task.Result.Status : null;

    /// <summary>The values of the accept the node sent to peer B for <paramref name="instance"/>, comma-separated, or null when it sent none.</summary>
    private static string? AcceptedValues(SteppedNode node, ulong instance)
    {
        var accept = node.Sent.LastOrDefault(s => s.To == PeerB && s.Message.MsgType == (int)PaxosMsgType.Accept && s.Message.InstanceID == instance).Message;
        return accept is null ? null : string.Join(",", ValueCodec.Expand(accept.Value.Span).Select(v => System.Text.Encoding.ASCII.GetString(v.Value)));
    }

    private static ByteString Packed(string value) => ByteString.CopyFrom(ValueCodec.Pack(ReservedSmIds.None, System.Text.Encoding.ASCII.GetBytes(value)));

    private static string Unpacked(InstanceValueResult result) =>
        result.Status == InstanceValueStatus.Ok ? System.Text.Encoding.ASCII.GetString(Assert.Single(result.Values).Value) : result.Status.ToString();

    /// <summary>A node on a manual loop, fake time, a log in memory that completes every write at once, and a transport that only records.</summary>
    private sealed class SteppedNode : IDisposable
    {
        private readonly ManualLoopDriver _driver = new();
        private readonly RecordingTransport _transport = new();

        public SteppedNode(bool voteWithEmptyLog, Action<PaxosNodeOptions>? configure = null)
        {
            var options = new PaxosNodeOptions
            {
                MyNode = Me.ToString(),
                Members = [Me.ToString(), PeerB.ToString(), PeerC.ToString()],
                StoragePath = "/stepped",
                VoteWithEmptyLog = voteWithEmptyLog,
            };
            configure?.Invoke(options);
            Paxos = new PaxosNode(options, loggerFactory: null, _transport, new InstantLog(), Time, _driver);
            Paxos.Start();
            RunUntilIdle();
        }

        public FakeTimeProvider Time { get; } = new(new DateTimeOffset(2026, 12, 1, 0, 0, 0, TimeSpan.Zero));

        public PaxosNode Paxos { get; }

        public List<(NodeId To, PaxosMsg Message)> Sent => _transport.Sent;

        public void Deliver(NodeId from, PaxosMsg message)
        {
            Assert.Equal(from.Value, message.NodeID);
            _transport.Sink!.OnFrame(FrameCodec.Encode(0, 0, message), TransportKind.Udp);
            RunUntilIdle();
        }

        public void RunUntilIdle()
        {
            _driver.RunUntilIdle(static _ => 0);
            Assert.Empty(_driver.Failures);
        }

        public void Dispose() => Paxos.Dispose();
    }

    /// <summary>Keeps every Paxos message the node sends; delivers nothing by itself.</summary>
    private sealed class RecordingTransport : ITransport
    {
        public List<(NodeId To, PaxosMsg Message)> Sent { get; } = [];

        public IFrameSink? Sink { get; private set; }

        public NodeId LocalNode => Me;

        public void Start(IFrameSink sink) => Sink = sink;

        public bool Send(NodeId destination, byte[] frame, TransportKind preferred)
        {
            if (PaxosFrames.TryRead(frame, 0, out var message))
            {
                Sent.Add((destination, message));
            }

            return true;
        }

        public void Dispose()
        {
        }
    }

    /// <summary>A log in memory whose writes are durable as soon as they are made.</summary>
    private sealed class InstantLog : ILogStorage
    {
        private readonly SortedDictionary<ulong, byte[]> _records = [];
        private byte[]? _system;
        private byte[]? _master;
        private ulong _minChosen;
        private bool _rebuilding;

        public int GroupCount => 1;

        public string GetGroupDirectory(int groupIndex) => "/stepped/g0";

        public Task PutAsync(int groupIndex, ulong instanceId, ReadOnlyMemory<byte> acceptorStateData, bool sync)
        {
            _records[instanceId] = acceptorStateData.ToArray();
            return Task.CompletedTask;
        }

        public void Put(int groupIndex, ulong instanceId, ReadOnlyMemory<byte> acceptorStateData, bool sync, IPutCallback callback)
        {
            _records[instanceId] = acceptorStateData.ToArray();
            callback.OnPutCompleted(null);
        }

        public byte[]? Get(int groupIndex, ulong instanceId) => _records.GetValueOrDefault(instanceId);

        public ulong? GetMaxInstanceId(int groupIndex) => _records.Count == 0 ? null : _records.Keys.Max();

        public void DeleteBefore(int groupIndex, ulong instanceId)
        {
            foreach (var key in _records.Keys.Where(k => k < instanceId).ToList())
            {
                _records.Remove(key);
            }
        }

        public ulong GetMinChosenInstanceId(int groupIndex) => _minChosen;

        public void SetMinChosenInstanceId(int groupIndex, ulong instanceId) => _minChosen = instanceId;

        public byte[]? GetSystemVariables(int groupIndex) => _system;

        public void SetSystemVariables(int groupIndex, ReadOnlySpan<byte> value) => _system = value.ToArray();

        public byte[]? GetMasterVariables(int groupIndex) => _master;

        public void SetMasterVariables(int groupIndex, ReadOnlySpan<byte> value) => _master = value.ToArray();

        public void ClearAllLog(int groupIndex)
        {
            _records.Clear();
            _minChosen = 0;
        }

        public bool IsRebuilding(int groupIndex) => _rebuilding;

        public void SetRebuilding(int groupIndex, bool rebuilding) => _rebuilding = rebuilding;

        public void Dispose()
        {
        }
    }
}
