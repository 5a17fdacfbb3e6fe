using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Groups;

/// <summary>
/// The voting gate's wiring: when a group with missing durable state votes again (see <see cref="VotingGate"/>).
/// While closed the acceptor neither promises nor accepts; the learner, the catch-up and the proposer work.
/// </summary>
internal sealed partial class PaxosGroup
{
    /// <summary>The state of the voting gate. Thread-safe (a snapshot).</summary>
    public VotingState VotingState => _gate.State;

    /// <summary>Why the group does not vote, or null while it votes. Thread-safe (a snapshot).</summary>
    public string? NotVotingReason => _gate.Reason;

    private int SurveyIntervalMs => Math.Clamp(_settings.AskForLearnBaseMs / 2, 50, 500);

    /// <summary>Closes the gate at start-up when the group's durable acceptor state may be incomplete.</summary>
    private void DecideVotingAtStart(ulong? maxInstance, ulong minChosen, ulong checkpoint)
    {
        if (IsFollower || _settings.VoteWithEmptyLog || (_members.Count == 1 && _members[0] == _settings.MyNodeId))
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

    private void OnVotingLoopStarted()
    {
        if (_gate.IsVoting)
        {
            return;
        }

        LogNotVoting(Index, _gate.State, _gate.Reason ?? string.Empty, Now);
        _gateTimerId = AddTimer(0, TimerKind.VotingGate);
    }

    /// <summary>While the gate is closed: survey the members and, past instance 0, run a no-op round of our own.</summary>
    private void OnVotingGateTimer(long timerId)
    {
        if (timerId != _gateTimerId || _gate.IsVoting)
        {
            return;
        }

        _gateTimerId = AddTimer(SurveyIntervalMs, TimerKind.VotingGate);
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
        SendToOthers(ask, TransportKind.Tcp);

        // At instance 0 a new group's first value stays the caller's (or the cluster id); later a no-op will do.
        if (Now > 0 && !_gate.OwnRoundPending && _learner.IsLatest && _committer.IsIdle
            && !_askingForCheckpoint && _members.Contains(_settings.MyNodeId))
        {
            var noop = new PendingProposal(ReservedSmIds.None, ReadOnlyMemory<byte>.Empty, null, explicitBatch: false, _loop.NowMs)
            {
                DeadlineMs = _loop.NowMs + Math.Max(1000, SurveyIntervalMs * 10),
            };
            _gate.OwnRoundPending = true;
            _ = noop.Completion.Task.ContinueWith(
                static (_, state) => ((PaxosGroup)state!)._loop.Post(new LoopAction(() => ((PaxosGroup)state!)._gate.OwnRoundPending = false)),
                this,
                CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default);
            TryEnqueueProposal(noop);
        }
    }

    /// <summary>Answers a member's survey with this node's instance, promise and whether it accepted a value there.</summary>
    private void AnswerSurvey(PaxosMsg ask)
    {
        var answer = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.SendNowInstanceId,
            InstanceID = ask.InstanceID,
            NodeID = _settings.MyNodeId,
            ProposalID = ask.ProposalID,
            NowInstanceID = Now,
            MinChosenInstanceID = MinChosenInstanceId,
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

        Send(ask.NodeID, answer, TransportKind.Udp);
    }

    private void OnSurveyAnswer(PaxosMsg answer)
    {
        _learner.SetSeen(answer.NowInstanceID);
        if (answer.HasSystemVariables)
        {
            Membership.UpdateFromPeer(answer.SystemVariables.Span);
        }

        if (answer.HasMasterVariables)
        {
            Master.UpdateFromPeer(answer.MasterVariables.Span);
        }

        if (_gate.IsVoting || _gate.Opening)
        {
            return;
        }

        var reported = new SurveyAnswer(
            answer.NowInstanceID,
            new Ballot(answer.RejectByPromiseID, answer.ProposalNodeID),
            answer.PreAcceptID != 0);
        if (_gate.OnSurveyAnswer(answer.ProposalID, answer.NodeID, reported, _members, _settings.MyNodeId, Now) is { } floor)
        {
            OpenGate(floor, $"every other member is at instance {Now} with nothing accepted there");
        }
    }

    /// <summary>
    /// This node's proposer got <paramref name="instanceId"/> chosen by a majority of the other members, without
    /// this acceptor's vote (the gate was closed, or the acceptor had promised a later ballot). Learn the value
    /// from the proposer and make its record (which carries the ballot as the promise) durable; a closed gate
    /// opens once it is.
    /// </summary>
    private void LearnOwnChosen(ulong instanceId, ulong proposalId)
    {
        if (instanceId != Now || _learner.IsLearned)
        {
            return;
        }

        var ballot = new Ballot(proposalId, _settings.MyNodeId);
        var value = _proposer.Value;
        _acceptor.RaisePromise(ballot);
        if (!_gate.IsVoting && !_gate.Opening)
        {
            _gate.BeginOpening(ballot);
        }

        if (!_learner.LearnFromProposer(ballot, value, new GateRecordWrite(this, $"its proposal was chosen at instance {instanceId} by a majority of the other members")))
        {
            return;
        }

        var success = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.ProposerSendSuccess,
            InstanceID = instanceId,
            NodeID = _settings.MyNodeId,
            ProposalID = proposalId,
            LastChecksum = _lastChecksum,
        };
        ExecuteLearnedValue();
        if (Now > instanceId)
        {
            SendToOthers(success, TransportKind.Udp);
        }
    }

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
        var record = _acceptor.CreateRecord(_lastChecksum);
        try
        {
            _storage.Put(Index, record.InstanceID, record.ToByteArray(), sync: true, new GateRecordWrite(this, how));
        }
        catch (LogStorageException ex)
        {
            Stop($"could not write the promise of instance {record.InstanceID}", ex);
        }
    }

    private void FinishOpening(string how)
    {
        if (_gate.IsVoting || _stoppedReason is not null)
        {
            return;
        }

        try
        {
            _storage.SetRebuilding(Index, false);
        }
        catch (LogStorageException ex)
        {
            Stop("could not record that the group votes again", ex);
            return;
        }

        _gate.Open();
        RemoveTimer(_gateTimerId);
        _gateTimerId = 0;
        LogVotingAgain(Index, how, Now, _acceptor.Promised.ToString());
    }

    /// <summary>Completion of the record that makes the raised promise durable; the gate opens on the loop.</summary>
    private sealed class GateRecordWrite(PaxosGroup group, string how) : IPutCallback
    {
        public bool AllowsCallerWrite => false;

        public void OnPutCompleted(Exception? error)
        {
            if (error is null)
            {
                group._loop.Post(new LoopAction(() => group.FinishOpening(how)));
                return;
            }

            group._loop.Post(new LoopAction(() => group.Stop("could not make the raised promise durable", error)));
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group} is {State} and does not vote: {Reason}. It learns from its peers (now at instance {Now}) and votes again once that is safe.")]
    private partial void LogNotVoting(int group, VotingState state, string reason, ulong now);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group} votes again: {How} (instance {Now}, promise {Promise}).")]
    private partial void LogVotingAgain(int group, string how, ulong now, string promise);
}
