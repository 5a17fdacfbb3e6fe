using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Engine.Groups;

/// <summary>Message dispatch: gid and membership checks, the checksum chain, the retry queue.</summary>
internal sealed partial class PaxosGroup
{
    /// <summary>Messages for future instances are kept at most this far ahead (PhxPaxos <c>RETRY_QUEUE_MAX_LEN</c>).</summary>
    private const int RetryQueueMaxLength = 300;

    private void OnPaxosMessage(PaxosMsg message, ulong headerGid)
    {
        // While waiting for a checkpoint the log is about to be replaced: take part in nothing (as PhxPaxos).
        if (_stoppedReason is not null || _installer.IsAskingForCheckpoint)
        {
            return;
        }

        // Frames from another cluster (both gids known and different) are refused.
        if (Gid != 0 && headerGid != 0 && headerGid != Gid)
        {
            LogGidMismatch(Index, headerGid, Gid, message.NodeID);
            return;
        }

        switch ((PaxosMsgType)message.MsgType)
        {
            case PaxosMsgType.Prepare:
            case PaxosMsgType.Accept:
                // A follower never votes; nor does a group whose durable state may be incomplete (VotingGate).
                if (IsFollower || !_voting.IsVoting || !IsValidSender(message.NodeID))
                {
                    return;
                }

                // A node that lost its cluster id sends gid 0: it may learn, but must not steer an established group.
                if (Gid != 0 && headerGid == 0)
                {
                    LogGidZeroVote(Index, message.NodeID, Gid);
                    return;
                }

                if (!ChecksumMatches(message))
                {
                    return;
                }

                OnAcceptorMessage(message, isRetry: false);
                break;
            case PaxosMsgType.PrepareReply:
            case PaxosMsgType.AcceptReply:
                if (IsFollower || !IsValidSender(message.NodeID))
                {
                    return;
                }

                OnProposerMessage(message);
                break;
            case PaxosMsgType.AskForLearn:
            case PaxosMsgType.SendLearnValue:
            case PaxosMsgType.ProposerSendSuccess:
            case PaxosMsgType.SendNowInstanceId:
            case PaxosMsgType.ConfirmAskForLearn:
            case PaxosMsgType.SendLearnValueAck:
            case PaxosMsgType.AskForCheckpoint:
                if (!ChecksumMatches(message))
                {
                    return;
                }

                OnLearnerMessage(message);
                break;
            default:
                LogInvalidType(Index, message.MsgType, message.NodeID);
                return;
        }

        AfterWork();
    }

    private void OnProposerMessage(PaxosMsg reply)
    {
        if (reply.InstanceID != Now)
        {
            if (reply.InstanceID + 1 == Now)
            {
                _proposer.OnExpiredReply(reply);
            }

            return;
        }

        if (reply.MsgType == (int)PaxosMsgType.PrepareReply)
        {
            _proposer.OnPrepareReply(reply);
        }
        else
        {
            _proposer.OnAcceptReply(reply);
        }
    }

    private void OnAcceptorMessage(PaxosMsg message, bool isRetry)
    {
        if (message.InstanceID == Now + 1)
        {
            // A message for the next instance implies the current one was chosen with its ballot
            // (implicit commit): learn it first if this acceptor accepted exactly that ballot.
            var implied = message.Clone();
            implied.InstanceID = Now;
            implied.MsgType = (int)PaxosMsgType.ProposerSendSuccess;
            OnLearnerMessage(implied);
        }

        if (message.InstanceID == Now)
        {
            var isPrepare = message.MsgType == (int)PaxosMsgType.Prepare;
            var reply = isPrepare
                ? _acceptor.OnPrepare(message, _lastChecksum, out var record)
                : _acceptor.OnAccept(message, _lastChecksum, out record);
            if (record is null)
            {
                Send(message.NodeID, reply, Transport.TransportKind.Udp);
            }
            else
            {
                PersistThenReply(record, reply, message.NodeID);
            }
        }
        else if (!isRetry && message.InstanceID > Now && message.InstanceID >= _learner.HighestSeenInstanceId)
        {
            if (message.InstanceID < Now + RetryQueueMaxLength)
            {
                if (_retryQueue.Count >= RetryQueueMaxLength)
                {
                    _retryQueue.Dequeue();
                }

                _retryQueue.Enqueue(message);
            }
            else
            {
                _retryQueue.Clear();
            }
        }
    }

    private void DealWithRetryQueue()
    {
        var handledCurrent = false;
        while (_retryQueue.TryPeek(out var message))
        {
            if (message.InstanceID > Now + 1)
            {
                break;
            }

            if (message.InstanceID == Now + 1)
            {
                // The next instance is only retried once a message for the current one was.
                if (!handledCurrent)
                {
                    break;
                }

                _retryQueue.Dequeue();
                OnAcceptorMessage(message, isRetry: true);
                continue;
            }

            _retryQueue.Dequeue();
            if (message.InstanceID == Now)
            {
                handledCurrent = true;
                OnAcceptorMessage(message, isRetry: true);
            }
        }
    }

    /// <summary>Hands a learner message to the role that takes it, then executes a value that became learned.</summary>
    private void OnLearnerMessage(PaxosMsg message)
    {
        switch ((PaxosMsgType)message.MsgType)
        {
            case PaxosMsgType.ProposerSendSuccess:
                _learner.OnProposerSendSuccess(message);
                break;
            case PaxosMsgType.AskForLearn:
                _learner.OnAskForLearn(message);
                break;
            case PaxosMsgType.SendNowInstanceId:
                _learner.OnSendNowInstanceId(message);
                break;
            case PaxosMsgType.ConfirmAskForLearn:
                _learnerSender.OnConfirmAskForLearn(message);
                break;
            case PaxosMsgType.SendLearnValue:
                _learner.OnSendLearnValue(message);
                break;
            case PaxosMsgType.SendLearnValueAck:
                _learnerSender.OnSendLearnValueAck(message);
                break;
            case PaxosMsgType.AskForCheckpoint:
                _checkpointServer.OnAskForCheckpoint(message);
                break;
        }

        if (_learner.IsLearned)
        {
            ExecuteLearnedValue();
        }
    }

    /// <summary>Executes the learned value in the state machines and moves every role to the next instance.</summary>
    private void ExecuteLearnedValue()
    {
        var instance = Now;
        var value = _learner.LearnedValue;
        var contexts = _committer.GetContextsIfMine(instance, value);
        if (!StateMachines.Execute(instance, value, contexts))
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

        _lastChecksum = _learner.LearnedChecksum;
        NewInstance();

        // Callers are told only after the new instance is published: once ProposeAsync returns, the
        // node's current instance is past the one it reports.
        _committer.OnInstanceExecuted(instance, contexts is not null);
        Chosen?.Invoke(instance, value);
        _learnerSender.OnInstanceExecuted();
    }

    /// <summary>A checkpoint transfer message: acknowledgements go to the server, chunks to the installer.</summary>
    private void OnCheckpointMessage(CheckpointMsg message, ulong headerGid)
    {
        if (_stoppedReason is not null)
        {
            return;
        }

        if ((Gid != 0 && headerGid != 0 && headerGid != Gid) || !IsValidSender(message.NodeID))
        {
            LogCheckpointMessageRefused(Index, new NodeId(message.NodeID), headerGid);
            return;
        }

        if (message.MsgType == (int)CheckpointMsgType.SendFileAck)
        {
            _checkpointServer.OnAck(message);
            return;
        }

        if (message.MsgType != (int)CheckpointMsgType.SendFile)
        {
            return;
        }

        if (_installer.OnSendFile(message))
        {
            AfterWork();
        }
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

    /// <summary>
    /// The rolling checksum check (PhxPaxos <c>ChecksumLogic</c>). A mismatch means this node's history
    /// differs from the sender's: the group stops loudly instead of diverging.
    /// </summary>
    private bool ChecksumMatches(PaxosMsg message)
    {
        if (message.LastChecksum == 0 || message.InstanceID != Now)
        {
            return true;
        }

        if (Now > 0 && _lastChecksum == 0)
        {
            _lastChecksum = message.LastChecksum;
            return true;
        }

        if (message.LastChecksum == _lastChecksum)
        {
            return true;
        }

        Stop($"checksum mismatch at instance {Now}: node {new NodeId(message.NodeID)} has {message.LastChecksum} for instance {Now - 1}, this node has {_lastChecksum}");
        return false;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: refused a frame from node {Node} with gid {HeaderGid}; this cluster's gid is {Gid}.")]
    private partial void LogGidMismatch(int group, ulong headerGid, ulong gid, ulong node);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Group {Group}: refused a prepare or accept with gid 0 from node {Node}; this cluster's gid is {Gid}.")]
    private partial void LogGidZeroVote(int group, ulong node, ulong gid);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: refused a checkpoint message from node {Peer} (gid {HeaderGid}): not a member of this cluster.")]
    private partial void LogCheckpointMessageRefused(int group, NodeId peer, ulong headerGid);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group}: reading instance {Instance} failed.")]
    private partial void LogReadFailed(int group, ulong instance, Exception ex);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: refused a message of unknown type {Type} from node {Node}.")]
    private partial void LogInvalidType(int group, int type, ulong node);
}
