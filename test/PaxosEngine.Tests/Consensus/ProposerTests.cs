using Google.Protobuf;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Tests.Consensus;

public sealed class ProposerTests
{
    private sealed class Host : IProposerHost
    {
        public List<PaxosMsg> Prepares { get; } = [];

        public List<PaxosMsg> Accepts { get; } = [];

        public List<(ulong Instance, ulong ProposalId)> Chosen { get; } = [];

        public List<(int Delay, TimerKind Kind)> Timers { get; } = [];

        public ulong MyNodeId => 1;

        public int Quorum => 2;

        public int MemberCount => 3;

        public uint LastChecksum => 77;

        public void BroadcastPrepare(PaxosMsg prepare) => Prepares.Add(prepare);

        public void BroadcastAccept(PaxosMsg accept) => Accepts.Add(accept);

        public void OnChosen(ulong instanceId, ulong proposalId) => Chosen.Add((instanceId, proposalId));

        public long AddTimer(int delayMs, TimerKind kind)
        {
            Timers.Add((delayMs, kind));
            return Timers.Count;
        }

        public void RemoveTimer(long timerId)
        {
        }

        public int RetryDelayMs() => 15;
    }

    private static PaxosMsg Promise(ulong from, ulong proposalId, ulong preAcceptId = 0, ulong preAcceptNode = 0, string? value = null)
    {
        var m = new PaxosMsg { MsgType = 2, NodeID = from, ProposalID = proposalId, PreAcceptID = preAcceptId, PreAcceptNodeID = preAcceptNode };
        if (value is not null)
        {
            m.Value = ByteString.CopyFromUtf8(value);
        }

        return m;
    }

    private static PaxosMsg Reject(ulong from, ulong proposalId, ulong promised) =>
        new() { MsgType = 2, NodeID = from, ProposalID = proposalId, RejectByPromiseID = promised };

    private static PaxosMsg RejectAccept(ulong from, ulong proposalId, ulong promised) =>
        new() { MsgType = 4, NodeID = from, ProposalID = proposalId, RejectByPromiseID = promised };

    [Fact]
    public void First_value_prepares_then_accepts_on_a_majority_of_promises()
    {
        var host = new Host();
        var proposer = new Proposer(host, ProposerTimeouts.Default);
        proposer.NewValue(ByteString.CopyFromUtf8("mine"));
        Assert.Single(host.Prepares);
        Assert.Equal(2000, host.Timers[0].Delay);

        proposer.OnPrepareReply(Promise(1, 1));
        Assert.Empty(host.Accepts);
        proposer.OnPrepareReply(Promise(2, 1));
        var accept = Assert.Single(host.Accepts);
        Assert.Equal("mine", accept.Value.ToStringUtf8());
        Assert.Equal(77u, accept.LastChecksum);
        Assert.True(proposer.CanSkipPrepare);
    }

    [Fact]
    public void Adopts_the_value_of_the_highest_accepted_ballot()
    {
        var host = new Host();
        var proposer = new Proposer(host, ProposerTimeouts.Default);
        proposer.NewValue(ByteString.CopyFromUtf8("mine"));
        proposer.OnPrepareReply(Promise(2, 1, preAcceptId: 1, preAcceptNode: 5, value: "older"));
        proposer.OnPrepareReply(Promise(3, 1, preAcceptId: 1, preAcceptNode: 9, value: "newer"));
        Assert.Equal("newer", Assert.Single(host.Accepts).Value.ToStringUtf8());
    }

    [Fact]
    public void A_majority_of_rejections_retries_with_a_higher_ballot()
    {
        var host = new Host();
        var proposer = new Proposer(host, ProposerTimeouts.Default);
        proposer.NewValue(ByteString.CopyFromUtf8("mine"));
        proposer.OnPrepareReply(Reject(2, 1, promised: 40));
        proposer.OnPrepareReply(Reject(3, 1, promised: 41));
        Assert.Equal((15, TimerKind.PrepareTimeout), host.Timers[^1]);
        proposer.OnTimeout(TimerKind.PrepareTimeout, host.Timers.Count);
        Assert.Equal(2, host.Prepares.Count);
        Assert.Equal(42ul, host.Prepares[1].ProposalID);
    }

    [Fact]
    public void A_majority_of_rejected_accepts_backs_off_then_prepares_a_ballot_above_the_highest_promise()
    {
        var host = new Host();
        var proposer = new Proposer(host, ProposerTimeouts.Default);
        proposer.NewValue(ByteString.CopyFromUtf8("mine"));
        proposer.OnPrepareReply(Promise(1, 1));
        proposer.OnPrepareReply(Promise(2, 1));
        Assert.Single(host.Accepts);

        proposer.OnAcceptReply(RejectAccept(2, 1, promised: 50));
        proposer.OnAcceptReply(RejectAccept(3, 1, promised: 51));

        // Not chosen, nothing sent at once: the retry waits for the host's random back-off, not the accept timeout.
        Assert.Empty(host.Chosen);
        Assert.Single(host.Prepares);
        Assert.Equal((15, TimerKind.AcceptTimeout), host.Timers[^1]);

        proposer.OnTimeout(TimerKind.AcceptTimeout, host.Timers.Count);
        Assert.Equal(2, host.Prepares.Count);
        Assert.Equal(52ul, host.Prepares[1].ProposalID);
        Assert.Equal("mine", proposer.Value.ToStringUtf8());
        Assert.False(proposer.CanSkipPrepare);
    }

    [Fact]
    public void A_back_off_timer_of_an_instance_that_ended_does_nothing()
    {
        var host = new Host();
        var proposer = new Proposer(host, ProposerTimeouts.Default);
        proposer.NewValue(ByteString.CopyFromUtf8("a"));
        proposer.OnPrepareReply(Reject(2, 1, promised: 40));
        proposer.OnPrepareReply(Reject(3, 1, promised: 41));
        var backOff = host.Timers.Count;

        // The instance was chosen elsewhere meanwhile; the late timer must not start a round for the old instance.
        proposer.NewInstance();
        proposer.OnTimeout(TimerKind.PrepareTimeout, backOff);
        Assert.Single(host.Prepares);
    }

    [Fact]
    public void One_rejection_in_a_chosen_round_makes_the_next_instance_prepare_a_new_ballot()
    {
        var host = new Host();
        var proposer = new Proposer(host, ProposerTimeouts.Default);
        proposer.NewValue(ByteString.CopyFromUtf8("a"));
        proposer.OnPrepareReply(Promise(1, 1));
        proposer.OnPrepareReply(Promise(2, 1));
        proposer.OnAcceptReply(new PaxosMsg { MsgType = 4, NodeID = 1, ProposalID = 1 });
        proposer.OnAcceptReply(RejectAccept(3, 1, promised: 9));
        proposer.OnAcceptReply(new PaxosMsg { MsgType = 4, NodeID = 2, ProposalID = 1 });
        Assert.Equal((0ul, 1ul), Assert.Single(host.Chosen));

        // The right to skip Prepare is gone. As in PhxPaxos the highest promise seen is per instance, so the new
        // ballot is just the next one; an acceptor that still holds the higher promise rejects it with that.
        proposer.NewInstance();
        proposer.NewValue(ByteString.CopyFromUtf8("b"));
        Assert.Single(host.Accepts);
        Assert.Equal(2, host.Prepares.Count);
        Assert.Equal(2ul, host.Prepares[1].ProposalID);
    }

    [Fact]
    public void A_rejection_that_arrives_after_its_instance_still_raises_the_next_ballot()
    {
        var host = new Host();
        var proposer = new Proposer(host, ProposerTimeouts.Default);
        proposer.NewValue(ByteString.CopyFromUtf8("a"));
        proposer.OnPrepareReply(Promise(1, 1));
        proposer.OnPrepareReply(Promise(2, 1));
        proposer.OnAcceptReply(new PaxosMsg { MsgType = 4, NodeID = 1, ProposalID = 1 });
        proposer.OnAcceptReply(new PaxosMsg { MsgType = 4, NodeID = 2, ProposalID = 1 });
        proposer.NewInstance();

        // A slower acceptor's rejection of instance 0 (PhxPaxos OnExpiredAcceptReply).
        proposer.OnExpiredReply(RejectAccept(3, 1, promised: 30));
        proposer.NewValue(ByteString.CopyFromUtf8("b"));
        Assert.Equal(2, host.Prepares.Count);
        Assert.Equal(31ul, host.Prepares[1].ProposalID);
    }

    [Fact]
    public void Majority_accept_chooses_and_next_instance_skips_prepare()
    {
        var host = new Host();
        var proposer = new Proposer(host, ProposerTimeouts.Default);
        proposer.NewValue(ByteString.CopyFromUtf8("a"));
        proposer.OnPrepareReply(Promise(1, 1));
        proposer.OnPrepareReply(Promise(2, 1));
        proposer.OnAcceptReply(new PaxosMsg { MsgType = 4, NodeID = 1, ProposalID = 1 });
        proposer.OnAcceptReply(new PaxosMsg { MsgType = 4, NodeID = 3, ProposalID = 1 });
        Assert.Equal((0ul, 1ul), Assert.Single(host.Chosen));

        proposer.NewInstance();
        proposer.NewValue(ByteString.CopyFromUtf8("b"));
        Assert.Single(host.Prepares);
        Assert.Equal(2, host.Accepts.Count);
        Assert.Equal(1ul, host.Accepts[1].InstanceID);
    }

    [Fact]
    public void After_an_instance_chosen_elsewhere_the_next_value_prepares_a_new_ballot()
    {
        var host = new Host();
        var proposer = new Proposer(host, ProposerTimeouts.Default);
        proposer.NewValue(ByteString.CopyFromUtf8("a"));
        proposer.OnPrepareReply(Promise(1, 1));
        proposer.OnPrepareReply(Promise(2, 1));
        proposer.NewInstance();
        proposer.OnChosenElsewhere();
        proposer.NewValue(ByteString.CopyFromUtf8("b"));
        Assert.Equal(2, host.Prepares.Count);
        Assert.Equal(2ul, host.Prepares[1].ProposalID);
    }

    [Fact]
    public void Replies_for_another_proposal_are_ignored()
    {
        var host = new Host();
        var proposer = new Proposer(host, ProposerTimeouts.Default);
        proposer.NewValue(ByteString.CopyFromUtf8("a"));
        proposer.OnPrepareReply(Promise(2, 99));
        proposer.OnPrepareReply(Promise(3, 99));
        Assert.Empty(host.Accepts);
    }

    [Fact]
    public void Timeouts_double_up_to_the_cap()
    {
        var host = new Host();
        var proposer = new Proposer(host, ProposerTimeouts.Default);
        proposer.NewValue(ByteString.CopyFromUtf8("a"));
        for (var i = 0; i < 4; i++)
        {
            proposer.OnTimeout(TimerKind.PrepareTimeout, host.Timers.Count);
        }

        Assert.Equal([2000, 4000, 8000, 8000, 8000], host.Timers.Select(t => t.Delay));
    }
}
