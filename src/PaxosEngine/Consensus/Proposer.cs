using Google.Protobuf;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Consensus;

/// <summary>What the proposer needs from its group: membership, messaging and timers.</summary>
internal interface IProposerHost
{
    /// <summary>This node.</summary>
    ulong MyNodeId { get; }

    /// <summary>Votes needed for a majority of the current membership.</summary>
    int Quorum { get; }

    /// <summary>Members in the current membership.</summary>
    int MemberCount { get; }

    /// <summary>Checksum of the previous instance's chosen value.</summary>
    uint LastChecksum { get; }

    /// <summary>Sends a Prepare to every member, this node's acceptor first.</summary>
    void BroadcastPrepare(PaxosMsg prepare);

    /// <summary>Sends an Accept to every member, this node's acceptor last.</summary>
    void BroadcastAccept(PaxosMsg accept);

    /// <summary>A majority accepted <paramref name="proposalId"/> in <paramref name="instanceId"/>: the value is chosen.</summary>
    void OnChosen(ulong instanceId, ulong proposalId);

    /// <summary>Arms a proposer timer; returns its id.</summary>
    long AddTimer(int delayMs, TimerKind kind);

    /// <summary>Cancels a timer (0 is ignored).</summary>
    void RemoveTimer(long timerId);

    /// <summary>A random back-off before retrying a round (PhxPaxos: 10–39 ms).</summary>
    int RetryDelayMs();
}

/// <summary>Proposer timeouts (PhxPaxos's inside options).</summary>
internal readonly record struct ProposerTimeouts(int StartPrepareMs, int StartAcceptMs, int MaxPrepareMs, int MaxAcceptMs)
{
    public static readonly ProposerTimeouts Default = new(2000, 1000, 8000, 8000);
}

/// <summary>
/// The proposer of one group (PhxPaxos <c>Proposer</c>). Owned by the group's loop thread; no locks.
/// A proposer that won a Prepare keeps its ballot and skips Prepare for later instances until
/// someone rejects it.
/// </summary>
internal sealed class Proposer
{
    private readonly IProposerHost _host;
    private readonly ProposerTimeouts _timeouts;
    private readonly HashSet<ulong> _received = [];
    private readonly HashSet<ulong> _promisedOrAccepted = [];
    private readonly HashSet<ulong> _rejected = [];
    private ulong _highestOtherProposalId;
    private Ballot _highestOtherPreAccept;
    private long _prepareTimerId;
    private long _acceptTimerId;
    private ulong _timeoutInstanceId;
    private int _prepareTimeoutMs;
    private int _acceptTimeoutMs;

    public Proposer(IProposerHost host, ProposerTimeouts timeouts)
    {
        _host = host;
        _timeouts = timeouts;
        _prepareTimeoutMs = timeouts.StartPrepareMs;
        _acceptTimeoutMs = timeouts.StartAcceptMs;
    }

    /// <summary>The instance this proposer works on.</summary>
    public ulong InstanceId { get; set; }

    /// <summary>The current proposal number (starts at 1, or the restored promise + 1).</summary>
    public ulong ProposalId { get; set; } = 1;

    /// <summary>The value being proposed: this node's, or one adopted from a Prepare reply.</summary>
    public ByteString Value { get; private set; } = ByteString.Empty;

    /// <summary>In a prepare round.</summary>
    public bool IsPreparing { get; private set; }

    /// <summary>In an accept round.</summary>
    public bool IsAccepting { get; private set; }

    /// <summary>Prepare may be skipped (this ballot was promised by a majority and nobody rejected since).</summary>
    public bool CanSkipPrepare { get; private set; }

    /// <summary>Someone rejected this proposer's ballot in the current round.</summary>
    public bool WasRejectedBySomeone { get; private set; }

    /// <summary>Working on a value.</summary>
    public bool IsWorking => IsPreparing || IsAccepting;

    /// <summary>Starts proposing <paramref name="value"/> in the current instance (keeps an adopted value).</summary>
    public void NewValue(ByteString value)
    {
        if (Value.IsEmpty)
        {
            Value = value;
        }

        _prepareTimeoutMs = _timeouts.StartPrepareMs;
        _acceptTimeoutMs = _timeouts.StartAcceptMs;
        if (CanSkipPrepare && !WasRejectedBySomeone)
        {
            Accept();
        }
        else
        {
            Prepare(WasRejectedBySomeone);
        }
    }

    /// <summary>Resets per-instance state; the ballot and the skip-prepare right survive.</summary>
    public void NewInstance()
    {
        InstanceId++;
        StartNewRound();
        _highestOtherProposalId = 0;
        Value = ByteString.Empty;
        ExitPrepare();
        ExitAccept();
    }

    /// <summary>Forces the next proposal through Prepare (after a local execution failure).</summary>
    public void CancelSkipPrepare() => CanSkipPrepare = false;

    /// <summary>
    /// The instance just finished was not chosen by this proposer's own accept round: the next
    /// proposal must go through Prepare with a new ballot. Otherwise a message of the next instance
    /// carrying this proposer's ballot would make an acceptor that accepted this ballot's value in the
    /// finished instance learn it by implicit commit, although another value was chosen there.
    /// </summary>
    public void OnChosenElsewhere()
    {
        CanSkipPrepare = false;
        WasRejectedBySomeone = true;
    }

    /// <summary>Stops working on the current value (e.g. the group stopped).</summary>
    public void Abandon()
    {
        ExitPrepare();
        ExitAccept();
    }

    public void Prepare(bool needNewBallot)
    {
        ExitAccept();
        IsPreparing = true;
        CanSkipPrepare = false;
        WasRejectedBySomeone = false;
        _highestOtherPreAccept = Ballot.Null;
        if (needNewBallot)
        {
            ProposalId = Math.Max(ProposalId, _highestOtherProposalId) + 1;
        }

        var prepare = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.Prepare,
            InstanceID = InstanceId,
            NodeID = _host.MyNodeId,
            ProposalID = ProposalId,
        };
        StartNewRound();
        AddPrepareTimer(0);
        _host.BroadcastPrepare(prepare);
    }

    public void OnPrepareReply(PaxosMsg reply)
    {
        if (!IsPreparing || reply.ProposalID != ProposalId)
        {
            return;
        }

        _received.Add(reply.NodeID);
        if (reply.RejectByPromiseID == 0)
        {
            _promisedOrAccepted.Add(reply.NodeID);
            var preAccepted = new Ballot(reply.PreAcceptID, reply.PreAcceptNodeID);
            if (!preAccepted.IsNull && preAccepted > _highestOtherPreAccept)
            {
                _highestOtherPreAccept = preAccepted;
                Value = reply.Value;
            }
        }
        else
        {
            _rejected.Add(reply.NodeID);
            WasRejectedBySomeone = true;
            _highestOtherProposalId = Math.Max(_highestOtherProposalId, reply.RejectByPromiseID);
        }

        if (_promisedOrAccepted.Count >= _host.Quorum)
        {
            CanSkipPrepare = true;
            Accept();
        }
        else if (_rejected.Count >= _host.Quorum || _received.Count >= _host.MemberCount)
        {
            AddPrepareTimer(_host.RetryDelayMs());
        }
    }

    public void OnAcceptReply(PaxosMsg reply)
    {
        if (!IsAccepting || reply.ProposalID != ProposalId)
        {
            return;
        }

        _received.Add(reply.NodeID);
        if (reply.RejectByPromiseID == 0)
        {
            _promisedOrAccepted.Add(reply.NodeID);
        }
        else
        {
            _rejected.Add(reply.NodeID);
            WasRejectedBySomeone = true;
            _highestOtherProposalId = Math.Max(_highestOtherProposalId, reply.RejectByPromiseID);
        }

        if (_promisedOrAccepted.Count >= _host.Quorum)
        {
            ExitAccept();
            _host.OnChosen(InstanceId, ProposalId);
        }
        else if (_rejected.Count >= _host.Quorum || _received.Count >= _host.MemberCount)
        {
            AddAcceptTimer(_host.RetryDelayMs());
        }
    }

    /// <summary>A reply for the previous instance: a rejection still raises the ballot to beat.</summary>
    public void OnExpiredReply(PaxosMsg reply)
    {
        if (reply.RejectByPromiseID != 0)
        {
            WasRejectedBySomeone = true;
            _highestOtherProposalId = Math.Max(_highestOtherProposalId, reply.RejectByPromiseID);
        }
    }

    public void OnTimeout(TimerKind kind, long timerId)
    {
        if (kind == TimerKind.PrepareTimeout)
        {
            if (timerId != _prepareTimerId)
            {
                return;
            }

            _prepareTimerId = 0;
        }
        else
        {
            if (timerId != _acceptTimerId)
            {
                return;
            }

            _acceptTimerId = 0;
        }

        if (InstanceId != _timeoutInstanceId)
        {
            return;
        }

        Prepare(WasRejectedBySomeone);
    }

    private void Accept()
    {
        ExitPrepare();
        IsAccepting = true;
        var accept = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.Accept,
            InstanceID = InstanceId,
            NodeID = _host.MyNodeId,
            ProposalID = ProposalId,
            Value = Value,
            LastChecksum = _host.LastChecksum,
        };
        StartNewRound();
        AddAcceptTimer(0);
        _host.BroadcastAccept(accept);
    }

    private void StartNewRound()
    {
        _received.Clear();
        _promisedOrAccepted.Clear();
        _rejected.Clear();
    }

    private void ExitPrepare()
    {
        if (IsPreparing)
        {
            IsPreparing = false;
            _host.RemoveTimer(_prepareTimerId);
            _prepareTimerId = 0;
        }
    }

    private void ExitAccept()
    {
        if (IsAccepting)
        {
            IsAccepting = false;
            _host.RemoveTimer(_acceptTimerId);
            _acceptTimerId = 0;
        }
    }

    private void AddPrepareTimer(int delayMs)
    {
        _host.RemoveTimer(_prepareTimerId);
        _timeoutInstanceId = InstanceId;
        if (delayMs > 0)
        {
            _prepareTimerId = _host.AddTimer(delayMs, TimerKind.PrepareTimeout);
            return;
        }

        _prepareTimerId = _host.AddTimer(_prepareTimeoutMs, TimerKind.PrepareTimeout);
        _prepareTimeoutMs = Math.Min(_prepareTimeoutMs * 2, _timeouts.MaxPrepareMs);
    }

    private void AddAcceptTimer(int delayMs)
    {
        _host.RemoveTimer(_acceptTimerId);
        _timeoutInstanceId = InstanceId;
        if (delayMs > 0)
        {
            _acceptTimerId = _host.AddTimer(delayMs, TimerKind.AcceptTimeout);
            return;
        }

        _acceptTimerId = _host.AddTimer(_acceptTimeoutMs, TimerKind.AcceptTimeout);
        _acceptTimeoutMs = Math.Min(_acceptTimeoutMs * 2, _timeouts.MaxAcceptMs);
    }
}
