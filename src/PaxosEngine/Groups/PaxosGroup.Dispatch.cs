using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Groups;

/// <summary>Messages in and out: gid and membership checks, routing to the roles, sending.</summary>
internal sealed partial class PaxosGroup
{
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
                // A follower never votes; a group whose durable state may be incomplete (VotingGate) does not
                // vote either, but observes the accepts so that it can learn the live instances (OnAcceptorMessage).
                if (IsFollower || !IsValidSender(message.NodeID))
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

    private bool IsValidSender(ulong nodeId) => Gid == 0 || _members.Contains(nodeId);

    private void Send(ulong to, PaxosMsg message, TransportKind kind)
    {
        if (to == _settings.MyNodeId)
        {
            _loop.Post(new InboundMessage(this, message, Gid, counted: false));
            return;
        }

        var frame = FrameCodec.Encode(Index, Gid, message);
        _transport.Send(new NodeId(to), frame, kind);
    }

    private void SendToOthers(PaxosMsg message, TransportKind kind)
    {
        byte[]? frame = null;
        foreach (var member in _members)
        {
            if (member == _settings.MyNodeId)
            {
                continue;
            }

            frame ??= FrameCodec.Encode(Index, Gid, message);
            _transport.Send(new NodeId(member), frame, kind);
        }
    }

    /// <summary>An inbound or local message for a group.</summary>
    private sealed class InboundMessage(PaxosGroup group, PaxosMsg message, ulong headerGid, bool counted) : ILoopWork
    {
        public void Run()
        {
            if (counted)
            {
                Interlocked.Decrement(ref group._inboundCount);
            }

            group.OnPaxosMessage(message, headerGid);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: refused a frame from node {Node} with gid {HeaderGid}; this cluster's gid is {Gid}.")]
    private partial void LogGidMismatch(int group, ulong headerGid, ulong gid, ulong node);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Group {Group}: refused a prepare or accept with gid 0 from node {Node}; this cluster's gid is {Gid}.")]
    private partial void LogGidZeroVote(int group, ulong node, ulong gid);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: refused a checkpoint message from node {Peer} (gid {HeaderGid}): not a member of this cluster.")]
    private partial void LogCheckpointMessageRefused(int group, NodeId peer, ulong headerGid);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: refused a message of unknown type {Type} from node {Node}.")]
    private partial void LogInvalidType(int group, int type, ulong node);
}
