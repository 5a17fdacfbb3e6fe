using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Hashing;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Groups;

/// <summary>
/// The learner: commits (ProposerSendSuccess), execution in instance order, and catch-up of a node
/// that is behind (ask-for-learn, now-instance, confirm, streamed values with acks). The catch-up
/// sender runs on the loop too, paced by timers, instead of on a thread of its own.
/// </summary>
internal sealed partial class PaxosGroup
{
    /// <summary>A value carried above this many instances' gap also ships the system and master variables.</summary>
    private const int ShipVariablesGap = 50;

    /// <summary>The receiver acknowledges every this many instances (PhxPaxos <c>LearnerReceiver_ACK_LEAD</c>).</summary>
    private const int ReceiverAckLead = 4;

    /// <summary>The sender stays at most this far ahead of the last acknowledgement (PhxPaxos <c>LearnerSender_ACK_LEAD</c>).</summary>
    private const int SenderAckLeadStart = 21;

    /// <summary>The sender gives up after this long without an acknowledgement (PhxPaxos <c>LearnerSender_ACK_TIMEOUT</c>).</summary>
    private const int SenderAckTimeoutMs = 5000;

    /// <summary>A prepared sender that is not confirmed or not sending is free again after this long.</summary>
    private const int SenderPrepareTimeoutMs = 5000;

    /// <summary>Pace of the sender's timer.</summary>
    private const int SenderTickMs = 5;

    private readonly Dictionary<ulong, long> _followers = [];
    private bool _learned;
    private ByteString _learnedValue = ByteString.Empty;
    private uint _learnedChecksum;
    private ulong _highestSeenInstanceId;
    private bool _isLearning;
    private ulong _lastAckInstanceId;
    private long _askForLearnTimerId;

    // Catch-up sender state.
    private bool _senderBusy;
    private bool _senderConfirmed;
    private ulong _senderTo;
    private ulong _senderNext;
    private ulong _senderAcked;
    private uint _senderLastChecksum;
    private long _senderLastActivityMs;
    private long _senderLastAckMs;
    private long _senderTimerId;
    private int _senderAckLead = SenderAckLeadStart;
    private double _senderBudget;
    private long _senderBudgetAtMs;

    /// <summary>This node only learns: it follows a member and never proposes or votes.</summary>
    private bool IsFollower => _settings.FollowToNodeId != 0;

    /// <summary>This node is not behind what it has seen of its peers (PhxPaxos <c>IsIMLatest</c>).</summary>
    private bool IsLatest => Now + 1 >= _highestSeenInstanceId;

    private void OnLearnerMessage(PaxosMsg message)
    {
        switch ((PaxosMsgType)message.MsgType)
        {
            case PaxosMsgType.ProposerSendSuccess:
                OnProposerSendSuccess(message);
                break;
            case PaxosMsgType.AskForLearn:
                OnAskForLearn(message);
                break;
            case PaxosMsgType.SendNowInstanceId:
                OnSendNowInstanceId(message);
                break;
            case PaxosMsgType.ConfirmAskForLearn:
                OnConfirmAskForLearn(message);
                break;
            case PaxosMsgType.SendLearnValue:
                OnSendLearnValue(message);
                break;
            case PaxosMsgType.SendLearnValueAck:
                OnSendLearnValueAck(message);
                break;
            case PaxosMsgType.AskForCheckpoint:
                OnAskForCheckpoint(message);
                break;
        }

        if (_learned)
        {
            ExecuteLearnedValue();
        }
    }

    private void OnProposerSendSuccess(PaxosMsg message)
    {
        if (message.InstanceID != Now || _learned)
        {
            return;
        }

        // Learn only if this acceptor accepted exactly the committed ballot: the value is then known locally.
        if (_acceptor.Accepted.IsNull || _acceptor.Accepted != new Consensus.Ballot(message.ProposalID, message.NodeID))
        {
            return;
        }

        _learned = true;
        _learnedValue = _acceptor.AcceptedValue;
        _learnedChecksum = _acceptor.Checksum;
        TransmitToFollowers(message.ProposalID, message.NodeID);
    }

    /// <summary>Pushes the value just learned to the followers of this node (PhxPaxos <c>TransmitToFollower</c>).</summary>
    private void TransmitToFollowers(ulong proposalId, ulong proposalNodeId)
    {
        if (_followers.Count == 0)
        {
            return;
        }

        var nowMs = _loop.NowMs;
        var value = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.SendLearnValue,
            InstanceID = Now,
            NodeID = _settings.MyNodeId,
            ProposalNodeID = proposalNodeId,
            ProposalID = proposalId,
            Value = _learnedValue,
            LastChecksum = _lastChecksum,
        };
        byte[]? frame = null;
        List<ulong>? expired = null;
        foreach (var (follower, until) in _followers)
        {
            if (until < nowMs)
            {
                (expired ??= []).Add(follower);
                continue;
            }

            frame ??= FrameCodec.Encode(Index, Gid, value);
            _transport.Send(new NodeId(follower), frame, TransportKind.Tcp);
        }

        foreach (var follower in expired ?? [])
        {
            _followers.Remove(follower);
        }
    }

    private void ExecuteLearnedValue()
    {
        var instance = Now;
        var contexts = _committer.GetContextsIfMine(instance, _learnedValue);
        if (!StateMachines.Execute(instance, _learnedValue, contexts))
        {
            // The value stays learned; execution is retried on the next learner message.
            _committer.OnExecuteFailed(instance, contexts is not null);
            _proposer.CancelSkipPrepare();
            return;
        }

        if (_chosenByMeInstance != instance)
        {
            _proposer.OnChosenElsewhere();
        }

        _lastChecksum = _learnedChecksum;
        var value = _learnedValue;
        NewInstance();

        // Callers are told only after the new instance is published: once ProposeAsync returns, the
        // node's current instance is past the one it reports.
        _committer.OnInstanceExecuted(instance, contexts is not null);
        Chosen?.Invoke(instance, value);
        if (_senderBusy && _senderConfirmed)
        {
            SendLearnValues();
        }
    }

    private void ResetLearnedValue()
    {
        _learned = false;
        _learnedValue = ByteString.Empty;
        _learnedChecksum = 0;
    }

    private void SetSeen(ulong instanceId)
    {
        if (instanceId > _highestSeenInstanceId)
        {
            _highestSeenInstanceId = instanceId;
        }
    }

    private void ArmAskForLearnTimer(int? delayMs = null)
    {
        RemoveTimer(_askForLearnTimerId);
        _askForLearnTimerId = AddTimer(
            delayMs ?? (_settings.AskForLearnBaseMs + _random.Next(_settings.AskForLearnJitterMs)),
            TimerKind.AskForLearn);
    }

    private void OnAskForLearnTimer(long timerId)
    {
        if (timerId != _askForLearnTimerId)
        {
            return;
        }

        _askForLearnTimerId = 0;
        _isLearning = false;
        var ask = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.AskForLearn,
            InstanceID = Now,
            NodeID = _settings.MyNodeId,
        };
        if (IsFollower)
        {
            // Asks the followed node to push every value it learns (and still asks the others to catch up).
            ask.ProposalNodeID = _settings.FollowToNodeId;
        }

        SendToOthers(ask, TransportKind.Tcp);
        ArmAskForLearnTimer();
    }

    private void OnAskForLearn(PaxosMsg message)
    {
        // Only a member's progress can tell this node it is behind. Taken from anyone (as PhxPaxos does), one
        // stray datagram naming a far instance would keep this node from proposing for good: it would wait to
        // catch up with instances nobody has. Followers still ask and are served below.
        if (_members.Contains(message.NodeID))
        {
            SetSeen(message.InstanceID);
        }

        if (message.ProposalID != 0 && message.NodeID != _settings.MyNodeId && _members.Contains(message.NodeID))
        {
            AnswerSurvey(message);
        }

        if (message.ProposalNodeID == _settings.MyNodeId && message.NodeID != _settings.MyNodeId)
        {
            // A follower of this node: push it every value learned here for three ask intervals.
            _followers[message.NodeID] = _loop.NowMs + (3L * (_settings.AskForLearnBaseMs + _settings.AskForLearnJitterMs));
        }

        if (message.InstanceID >= Now)
        {
            return;
        }

        if (message.InstanceID >= MinChosenInstanceId && !TryPrepareSender(message.InstanceID, message.NodeID))
        {
            // Busy serving someone else: an asker just one behind still gets that one value.
            if (message.InstanceID + 1 == Now)
            {
                var record = TryReadRecord(message.InstanceID);
                if (record is not null)
                {
                    Send(message.NodeID, CreateLearnValue(record, 0, needAck: false), TransportKind.Tcp);
                }
            }

            return;
        }

        var reply = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.SendNowInstanceId,
            InstanceID = message.InstanceID,
            NodeID = _settings.MyNodeId,
            NowInstanceID = Now,
            MinChosenInstanceID = MinChosenInstanceId,
        };
        if (Now - message.InstanceID > ShipVariablesGap)
        {
            if (_storage.GetSystemVariables(Index) is { } system)
            {
                reply.SystemVariables = ByteString.CopyFrom(system);
            }

            if (_storage.GetMasterVariables(Index) is { } master)
            {
                reply.MasterVariables = ByteString.CopyFrom(master);
            }
        }

        Send(message.NodeID, reply, TransportKind.Udp);
    }

    private void OnSendNowInstanceId(PaxosMsg message)
    {
        // The answer to our AskForLearn, which goes to members only: from anyone else it is not an answer, and its
        // instance (see OnAskForLearn) or system variables must not be taken.
        if (!_members.Contains(message.NodeID))
        {
            return;
        }

        if (message.ProposalID != 0)
        {
            // Only an answer to this node's survey carries a proposal id (the survey's nonce).
            OnSurveyAnswer(message);
            return;
        }

        SetSeen(message.NowInstanceID);
        if (message.HasSystemVariables && Membership.UpdateFromPeer(message.SystemVariables.Span))
        {
            // The membership changed under us: everything else waits for the next round.
            return;
        }

        if (message.HasMasterVariables)
        {
            Master.UpdateFromPeer(message.MasterVariables.Span);
        }

        if (message.InstanceID != Now || message.NowInstanceID <= Now)
        {
            return;
        }

        if (message.MinChosenInstanceID > Now)
        {
            LogNeedCheckpoint(Index, Now, message.MinChosenInstanceID, new NodeId(message.NodeID));
            Telemetry.EngineInstruments.AddForGroup(Telemetry.EngineInstruments.CheckpointsNeeded, Index);
            OnPeerCleanedPastUs(message);
            return;
        }

        if (!_isLearning)
        {
            _isLearning = true;
            Send(message.NodeID, new PaxosMsg
            {
                MsgType = (int)PaxosMsgType.ConfirmAskForLearn,
                InstanceID = Now,
                NodeID = _settings.MyNodeId,
            }, TransportKind.Udp);
        }
    }

    private void OnSendLearnValue(PaxosMsg message)
    {
        if (message.InstanceID != Now || _learned)
        {
            if (message.InstanceID < Now && message.Flag == 1)
            {
                SendLearnValueAck(message.NodeID, force: false);
            }

            return;
        }

        // Write the learned record (no fsync: a majority holds it durably already), then learn it.
        if (!TryWriteLearnedRecord(new Consensus.Ballot(message.ProposalID, message.ProposalNodeID), message.Value, sync: false, new LearnedWrite(this, Now), out var checksum))
        {
            return;
        }

        _learned = true;
        Telemetry.EngineInstruments.AddForGroup(Telemetry.EngineInstruments.LearnValuesReceived, Index);
        _learnedValue = message.Value;
        _learnedChecksum = checksum;
        if (message.Flag == 1)
        {
            ArmAskForLearnTimer();
            SendLearnValueAck(message.NodeID, force: false);
        }
    }

    /// <summary>
    /// Writes the record of a value learned for the current instance: accepted with <paramref name="ballot"/>.
    /// Its promise is the higher of that ballot and this acceptor's promise, so that learning never lowers
    /// the promise a restart restores (PhxPaxos writes the learned ballot as the promise too).
    /// </summary>
    private bool TryWriteLearnedRecord(Consensus.Ballot ballot, ByteString value, bool sync, IPutCallback callback, out uint checksum)
    {
        checksum = Now > 0 && _lastChecksum == 0
            ? 0u
            : value.IsEmpty ? 0u : SkipCrc32.Compute(_lastChecksum, value.Span, SkipCrc32.ValueSkip);
        var promise = _acceptor.Promised > ballot ? _acceptor.Promised : ballot;
        var record = new AcceptorStateData
        {
            InstanceID = Now,
            PromiseID = promise.ProposalId,
            PromiseNodeID = promise.NodeId,
            AcceptedID = ballot.ProposalId,
            AcceptedNodeID = ballot.NodeId,
            AcceptedValue = value,
            Checksum = checksum,
        };
        try
        {
            _storage.Put(Index, Now, record.ToByteArray(), sync, callback);
            return true;
        }
        catch (LogStorageException ex)
        {
            Stop($"could not write learned instance {Now}", ex);
            return false;
        }
    }

    private void SendLearnValueAck(ulong to, bool force)
    {
        if (!force && Now < _lastAckInstanceId + ReceiverAckLead)
        {
            return;
        }

        _lastAckInstanceId = Now;
        Send(to, new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.SendLearnValueAck,
            InstanceID = Now,
            NodeID = _settings.MyNodeId,
        }, TransportKind.Udp);
    }

    private bool TryPrepareSender(ulong beginInstance, ulong to)
    {
        var nowMs = _loop.NowMs;
        if (_senderBusy && nowMs - _senderLastActivityMs < SenderPrepareTimeoutMs)
        {
            return false;
        }

        StopSender();
        _senderBusy = true;
        _senderConfirmed = false;
        _senderTo = to;
        _senderNext = beginInstance;
        _senderAcked = beginInstance;
        _senderLastActivityMs = nowMs;
        return true;
    }

    private void OnConfirmAskForLearn(PaxosMsg message)
    {
        if (!_senderBusy || _senderConfirmed || message.InstanceID != _senderNext || message.NodeID != _senderTo)
        {
            return;
        }

        _senderConfirmed = true;

        // PhxPaxos sends the first value of a catch-up with checksum 0, so the learner cannot check it
        // against its chain. This node sends the checksum of the instance before it when it still holds
        // that record: the learner then stops before executing a value of a different history.
        _senderLastChecksum = _senderNext > MinChosenInstanceId && _senderNext > 0 ? TryReadRecord(_senderNext - 1)?.Checksum ?? 0 : 0;
        _senderLastAckMs = _loop.NowMs;
        _senderBudget = 0;
        _senderBudgetAtMs = _loop.NowMs;
        LogCatchUpStarted(Index, new NodeId(_senderTo), _senderNext, Now);
        SendLearnValues();
        _senderTimerId = AddTimer(SenderTickMs, TimerKind.LearnerSender);
    }

    private void OnSendLearnValueAck(PaxosMsg message)
    {
        if (!_senderBusy || !_senderConfirmed || message.NodeID != _senderTo || message.InstanceID <= _senderAcked)
        {
            return;
        }

        _senderAcked = message.InstanceID;
        _senderLastAckMs = _loop.NowMs;
        SendLearnValues();
    }

    private void OnLearnerSenderTimer(long timerId)
    {
        if (timerId != _senderTimerId || !_senderBusy)
        {
            return;
        }

        _senderTimerId = 0;
        var nowMs = _loop.NowMs;
        if (nowMs - _senderLastAckMs > SenderAckTimeoutMs)
        {
            // The learner went quiet: shrink the window for next time and free the sender.
            if (_senderAckLead - 4 > 4)
            {
                _senderAckLead -= 4;
            }

            LogCatchUpAbandoned(Index, new NodeId(_senderTo), _senderNext);
            StopSender();
            return;
        }

        // Done once everything this node holds was sent and the learner acknowledged all but its ack lead. A
        // sender that kept following the learner in a busy group would stay busy for good, and every other
        // node that falls behind would find no sender (PhxPaxos's sender also ends at the instance it reached).
        if (_senderNext >= Now && _senderAcked + ReceiverAckLead >= _senderNext)
        {
            LogCatchUpDone(Index, new NodeId(_senderTo), _senderNext);
            _senderAckLead = SenderAckLeadStart;
            StopSender();
            return;
        }

        SendLearnValues();
        _senderTimerId = AddTimer(SenderTickMs, TimerKind.LearnerSender);
    }

    private void SendLearnValues()
    {
        var nowMs = _loop.NowMs;
        var qps = Math.Max(1, _settings.LearnerSendQps / Math.Max(1, _settings.GroupCount));
        _senderBudget = Math.Min(qps, _senderBudget + ((nowMs - _senderBudgetAtMs) * qps / 1000.0));
        _senderBudgetAtMs = nowMs;
        while (_senderNext < Now && _senderNext <= _senderAcked + (ulong)_senderAckLead && _senderBudget >= 1)
        {
            var record = TryReadRecord(_senderNext);
            if (record is null)
            {
                LogCatchUpMissingRecord(Index, _senderNext, new NodeId(_senderTo));
                StopSender();
                return;
            }

            Send(_senderTo, CreateLearnValue(record, _senderLastChecksum, needAck: true), TransportKind.Tcp);
            Telemetry.EngineInstruments.AddForGroup(Telemetry.EngineInstruments.LearnValuesSent, Index);
            _senderLastChecksum = record.Checksum;
            _senderNext++;
            _senderBudget--;
            _senderLastActivityMs = nowMs;
        }
    }

    private void StopSender()
    {
        RemoveTimer(_senderTimerId);
        _senderTimerId = 0;
        _senderBusy = false;
        _senderConfirmed = false;
    }

    private PaxosMsg CreateLearnValue(AcceptorStateData record, uint lastChecksum, bool needAck)
    {
        var message = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.SendLearnValue,
            InstanceID = record.InstanceID,
            NodeID = _settings.MyNodeId,
            ProposalNodeID = record.AcceptedNodeID,
            ProposalID = record.AcceptedID,
            Value = record.AcceptedValue,
            LastChecksum = lastChecksum,
        };
        if (needAck)
        {
            message.Flag = 1;
        }

        return message;
    }

    private AcceptorStateData? TryReadRecord(ulong instanceId)
    {
        try
        {
            return ReadRecord(instanceId);
        }
        catch (LogStorageException ex)
        {
            LogReadFailed(Index, instanceId, ex);
            return null;
        }
    }

    /// <summary>Completion of a learned value's write: only a failure needs the loop (the group stops).</summary>
    private sealed class LearnedWrite(PaxosGroup group, ulong instance) : IPutCallback
    {
        public void OnPutCompleted(Exception? error)
        {
            if (error is not null)
            {
                group._loop.Post(new LoopAction(() => group.Stop($"could not write learned instance {instance}", error)));
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group} is at instance {Now} but peer {Peer} already cleaned its log up to {MinChosen}: a checkpoint is needed.")]
    private partial void LogNeedCheckpoint(int group, ulong now, ulong minChosen, NodeId peer);

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: {Peer} caught up (sent up to instance {Next}); the catch-up sender is free.")]
    private partial void LogCatchUpDone(int group, NodeId peer, ulong next);

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: sending instances {From}..{To} to {Peer} to catch it up.")]
    private partial void LogCatchUpStarted(int group, NodeId peer, ulong from, ulong to);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: catch-up of {Peer} abandoned at instance {Next}: no acknowledgement.")]
    private partial void LogCatchUpAbandoned(int group, NodeId peer, ulong next);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: instance {Instance} is not in the log; cannot catch up {Peer} from the log.")]
    private partial void LogCatchUpMissingRecord(int group, ulong instance, NodeId peer);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group}: reading instance {Instance} failed.")]
    private partial void LogReadFailed(int group, ulong instance, Exception ex);
}
