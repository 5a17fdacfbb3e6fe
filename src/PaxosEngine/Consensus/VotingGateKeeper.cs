using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Groups;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Consensus;

/// <summary>What the voting gate keeper needs from its group beyond <see cref="IPeerHost"/>.</summary>
internal interface IVotingHost : IPeerHost
{
    /// <summary>The members of the group's current membership.</summary>
    IReadOnlyList<ulong> Members { get; }

    /// <summary>This node is not behind what it has seen of its peers (the learner's view).</summary>
    bool IsLatest { get; }

    /// <summary>The committer has nothing in flight and nothing waiting.</summary>
    bool IsCommitterIdle { get; }

    /// <summary>The group waits for a checkpoint and takes part in nothing meanwhile.</summary>
    bool IsAskingForCheckpoint { get; }

    /// <summary>A member reported <paramref name="instanceId"/> as its current instance (raises the learner's view).</summary>
    void OnPeerInstanceSeen(ulong instanceId);

    /// <summary>Queues a proposal made by the group itself; false when it was refused (and completed).</summary>
    bool TryEnqueueProposal(PendingProposal proposal);
}

/// <summary>
/// Decides when a group with missing durable state votes again (see <see cref="VotingGate"/>): closes the gate at
/// start-up, surveys the members and runs no-op rounds while it is closed, answers the members' surveys, and opens
/// the gate once the raised promise is durable. While the gate is closed the acceptor neither promises nor accepts;
/// the learner, the catch-up and the proposer work.
/// </summary>
/// <remarks><see cref="State"/> and <see cref="Reason"/> may be read from any thread; the rest runs on the group's loop thread.</remarks>
internal sealed partial class VotingGateKeeper
{
    private readonly IVotingHost _host;
    private readonly GroupSettings _settings;
    private readonly Acceptor _acceptor;
    private readonly ILogStorage _storage;
    private readonly SystemVariablesStateMachine _membership;
    private readonly MasterStateMachine _master;
    private readonly VotingGate _gate;
    private readonly ILogger _logger;
    private long _gateTimerId;

    public VotingGateKeeper(
        IVotingHost host,
        GroupSettings settings,
        Acceptor acceptor,
        ILogStorage storage,
        SystemVariablesStateMachine membership,
        MasterStateMachine master,
        VotingGate gate,
        ILogger logger)
    {
        _host = host;
        _settings = settings;
        _acceptor = acceptor;
        _storage = storage;
        _membership = membership;
        _master = master;
        _gate = gate;
        _logger = logger;
    }

    /// <summary>The state of the voting gate. Thread-safe (a snapshot).</summary>
    public VotingState State => _gate.State;

    /// <summary>Why the group does not vote, or null while it votes. Thread-safe (a snapshot).</summary>
    public string? Reason => _gate.Reason;

    /// <summary>The acceptor promises and accepts.</summary>
    public bool IsVoting => _gate.IsVoting;

    private ulong Now => _host.CurrentInstanceId;

    private int Index => _host.GroupIndex;

    private int SurveyIntervalMs => Math.Clamp(_settings.AskForLearnBaseMs / 2, 50, 500);

    /// <summary>Closes the gate at start-up when the group's durable acceptor state may be incomplete.</summary>
    public void DecideAtStart(ulong? maxInstance, ulong minChosen, ulong checkpoint)
    {
        var members = _host.Members;
        if (_settings.FollowToNodeId != 0 || _settings.VoteWithEmptyLog || (members.Count == 1 && members[0] == _settings.MyNodeId))
        {
            // A follower never votes; a single member has nobody to learn from; the option restores PhxPaxos's behaviour.
            return;
        }

        if (_storage.IsRebuilding(Index))
        {
            _gate.Close(VotingState.Rebuilding, "it stopped while rebuilding, before it could vote again");
        }
        else if (_storage.WasIndexRebuilt(Index) && _storage.WasTailCutAtOpen(Index))
        {
            // The data files hold every promise and accept, so a rebuilt index alone does not stop the vote;
            // but without the index's record of what was fsynced, the cut tail may have held durable ones.
            _gate.Close(VotingState.Rebuilding, "its index was rebuilt from the data files and the end of its log was cut as a torn write, which may have held fsynced promises");
        }
        else if (maxInstance is null && minChosen == 0 && checkpoint == StateMachineCheckpoint.None)
        {
            _gate.Close(VotingState.Surveying, "it has no log: a new group, or a node whose data folder was emptied");
        }
        else if (maxInstance is null)
        {
            _gate.Close(VotingState.Rebuilding, $"its log is empty but its state starts at instance {Math.Max(minChosen, checkpoint == StateMachineCheckpoint.None ? 0 : checkpoint + 1)}, so its promises are gone");
        }

        if (!_gate.IsVoting)
        {
            // Durable before anything is learned: a restart before the gate opens must not find a log and vote.
            _storage.SetRebuilding(Index, true);
        }
    }

    /// <summary>Starts surveying when the gate is closed; loop thread, at start.</summary>
    public void OnLoopStarted()
    {
        if (_gate.IsVoting)
        {
            return;
        }

        LogNotVoting(Index, _gate.State, _gate.Reason ?? string.Empty, Now);
        _gateTimerId = _host.AddTimer(0, TimerKind.VotingGate);
    }

    /// <summary>While the gate is closed: survey the members and, past instance 0, run a no-op round of our own.</summary>
    public void OnTimer(long timerId)
    {
        if (timerId != _gateTimerId || _gate.IsVoting)
        {
            return;
        }

        _gateTimerId = _host.AddTimer(SurveyIntervalMs, TimerKind.VotingGate);
        if (_gate.Opening)
        {
            return;
        }

        var ask = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.AskForLearn,
            InstanceID = Now,
            NodeID = _settings.MyNodeId,
            ProposalID = _gate.NextSurvey(),
        };
        _host.SendToOthers(ask, TransportKind.Tcp);

        // At instance 0 a new group's first value stays the caller's (or the cluster id); later a no-op will do.
        if (Now > 0 && !_gate.OwnRoundPending && _host.IsLatest && _host.IsCommitterIdle
            && !_host.IsAskingForCheckpoint && _host.IsMember(_settings.MyNodeId))
        {
            var noop = new PendingProposal(ReservedSmIds.None, ReadOnlyMemory<byte>.Empty, null, explicitBatch: false, _host.NowMs)
            {
                DeadlineMs = _host.NowMs + Math.Max(1000, SurveyIntervalMs * 10),
            };
            _gate.OwnRoundPending = true;
            noop.OnCompleted(() => _host.Post(() => _gate.OwnRoundPending = false));
            _host.TryEnqueueProposal(noop);
        }
    }

    /// <summary>Answers a member's survey with this node's instance, promise and whether it accepted a value there.</summary>
    public void AnswerSurvey(PaxosMsg ask)
    {
        var answer = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.SendNowInstanceId,
            InstanceID = ask.InstanceID,
            NodeID = _settings.MyNodeId,
            ProposalID = ask.ProposalID,
            NowInstanceID = Now,
            MinChosenInstanceID = _host.MinChosenInstanceId,
            RejectByPromiseID = _acceptor.Promised.ProposalId,
            ProposalNodeID = _acceptor.Promised.NodeId,
            PreAcceptID = _acceptor.Accepted.ProposalId,
            PreAcceptNodeID = _acceptor.Accepted.NodeId,
        };
        if (_storage.GetSystemVariables(Index) is { } system)
        {
            answer.SystemVariables = ByteString.CopyFrom(system);
        }

        if (_storage.GetMasterVariables(Index) is { } master)
        {
            answer.MasterVariables = ByteString.CopyFrom(master);
        }

        _host.Send(ask.NodeID, answer, TransportKind.Udp);
    }

    /// <summary>A member answered this node's survey: the gate opens once every other member answered that it is safe.</summary>
    public void OnSurveyAnswer(PaxosMsg answer)
    {
        _host.OnPeerInstanceSeen(answer.NowInstanceID);
        if (answer.HasSystemVariables)
        {
            _membership.UpdateFromPeer(answer.SystemVariables.Span);
        }

        if (answer.HasMasterVariables)
        {
            _master.UpdateFromPeer(answer.MasterVariables.Span);
        }

        if (_gate.IsVoting || _gate.Opening)
        {
            return;
        }

        var reported = new SurveyAnswer(
            answer.NowInstanceID,
            new Ballot(answer.RejectByPromiseID, answer.ProposalNodeID),
            answer.PreAcceptID != 0);
        if (_gate.OnSurveyAnswer(answer.ProposalID, answer.NodeID, reported, _host.Members, _settings.MyNodeId, Now) is { } floor)
        {
            OpenGate(floor, $"every other member is at instance {Now} with nothing accepted there");
        }
    }

    /// <summary>
    /// This node's proposer got <paramref name="ballot"/> chosen by a majority of the other members, without this
    /// acceptor's vote: a closed gate begins to open (it opens once the learned record is durable; see
    /// <see cref="OpenWhenDurable"/>).
    /// </summary>
    public void OnOwnRoundChosen(Ballot ballot)
    {
        if (!_gate.IsVoting && !_gate.Opening)
        {
            _gate.BeginOpening(ballot);
        }
    }

    /// <summary>The completion for the record that makes the raised promise durable: the gate opens on the loop when it is.</summary>
    public IPutCallback OpenWhenDurable(string how) => new GateRecordWrite(this, how);

    /// <summary>Raises the promise to <paramref name="floor"/>, makes it durable when it changed, then votes.</summary>
    private void OpenGate(Ballot floor, string how)
    {
        if (floor <= _acceptor.Promised)
        {
            FinishOpening(how);
            return;
        }

        _acceptor.RaisePromise(floor);
        _gate.BeginOpening(floor);
        var record = _acceptor.CreateRecord(_host.LastChecksum);
        try
        {
            var bytes = MessageBytes.Rent(record, out var length);
            _storage.PutRented(Index, record.InstanceID, bytes, length, sync: true, new GateRecordWrite(this, how));
        }
        catch (LogStorageException ex)
        {
            _host.Stop($"could not write the promise of instance {record.InstanceID}", ex);
        }
    }

    private void FinishOpening(string how)
    {
        if (_gate.IsVoting || _host.IsStopped)
        {
            return;
        }

        try
        {
            _storage.SetRebuilding(Index, false);
        }
        catch (LogStorageException ex)
        {
            _host.Stop("could not record that the group votes again", ex);
            return;
        }

        _gate.Open();
        _host.RemoveTimer(_gateTimerId);
        _gateTimerId = 0;
        LogVotingAgain(Index, how, Now, _acceptor.Promised.ToString());
    }

    /// <summary>Completion of the record that makes the raised promise durable; the gate opens on the loop.</summary>
    private sealed class GateRecordWrite(VotingGateKeeper keeper, string how) : IPutCallback
    {
        public bool AllowsCallerWrite => false;

        public void OnPutCompleted(Exception? error)
        {
            if (error is null)
            {
                keeper._host.Post(() => keeper.FinishOpening(how));
                return;
            }

            keeper._host.Post(() => keeper._host.Stop("could not make the raised promise durable", error));
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group} is {State} and does not vote: {Reason}. It learns from its peers (now at instance {Now}) and votes again once that is safe.")]
    private partial void LogNotVoting(int group, VotingState state, string reason, ulong now);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group} votes again: {How} (instance {Now}, promise {Promise}).")]
    private partial void LogVotingAgain(int group, string how, ulong now, string promise);
}
