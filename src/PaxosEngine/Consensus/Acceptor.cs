using Google.Protobuf;
using Orleans.Paxos.Engine.Hashing;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Consensus;

/// <summary>
/// The acceptor of one group (PhxPaxos <c>Acceptor</c>). Owned by the group's loop thread; no locks.
/// It decides; the caller persists the returned record before sending the reply. The promise is kept
/// across instances, which is what makes skipping Prepare safe.
/// </summary>
internal sealed class Acceptor
{
    private readonly ulong _myNodeId;

    public Acceptor(ulong myNodeId) => _myNodeId = myNodeId;

    /// <summary>The instance being decided.</summary>
    public ulong InstanceId { get; set; }

    /// <summary>The highest ballot promised (kept across instances).</summary>
    public Ballot Promised { get; private set; }

    /// <summary>The ballot accepted in this instance, or null.</summary>
    public Ballot Accepted { get; private set; }

    /// <summary>The value accepted in this instance (empty when none).</summary>
    public ByteString AcceptedValue { get; private set; } = ByteString.Empty;

    /// <summary>The chained value checksum of the accepted value.</summary>
    public uint Checksum { get; private set; }

    /// <summary>Restores the state from the last record in the log.</summary>
    public void Restore(AcceptorStateData record)
    {
        InstanceId = record.InstanceID;
        Promised = new Ballot(record.PromiseID, record.PromiseNodeID);
        Accepted = new Ballot(record.AcceptedID, record.AcceptedNodeID);
        AcceptedValue = record.AcceptedValue;
        Checksum = record.Checksum;
    }

    /// <summary>Raises the promise to at least <paramref name="floor"/> (a node that may have forgotten promises; see <c>VotingGate</c>).</summary>
    public void RaisePromise(Ballot floor)
    {
        if (floor > Promised)
        {
            Promised = floor;
        }
    }

    /// <summary>
    /// Moves to <paramref name="instanceId"/> (past instances the state machines already executed): the
    /// accepted value is forgotten, the promise is kept.
    /// </summary>
    public void MoveTo(ulong instanceId)
    {
        InstanceId = instanceId;
        Accepted = Ballot.Null;
        AcceptedValue = ByteString.Empty;
        Checksum = 0;
    }

    /// <summary>Moves to the next instance: the accepted value is forgotten, the promise is kept.</summary>
    public void NewInstance()
    {
        InstanceId++;
        Accepted = Ballot.Null;
        AcceptedValue = ByteString.Empty;
        Checksum = 0;
    }

    /// <summary>Handles a Prepare. When <paramref name="record"/> is not null it must be durable before the reply is sent.</summary>
    public PaxosMsg OnPrepare(PaxosMsg prepare, uint lastChecksum, out AcceptorStateData? record)
    {
        var reply = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.PrepareReply,
            InstanceID = InstanceId,
            NodeID = _myNodeId,
            ProposalID = prepare.ProposalID,
        };
        var ballot = new Ballot(prepare.ProposalID, prepare.NodeID);
        if (ballot >= Promised)
        {
            reply.PreAcceptID = Accepted.ProposalId;
            reply.PreAcceptNodeID = Accepted.NodeId;
            if (Accepted.ProposalId > 0)
            {
                reply.Value = AcceptedValue;
            }

            Promised = ballot;
            record = CreateRecord(lastChecksum);
        }
        else
        {
            reply.RejectByPromiseID = Promised.ProposalId;
            record = null;
        }

        return reply;
    }

    /// <summary>Handles an Accept. When <paramref name="record"/> is not null it must be durable before the reply is sent.</summary>
    public PaxosMsg OnAccept(PaxosMsg accept, uint lastChecksum, out AcceptorStateData? record)
    {
        var reply = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.AcceptReply,
            InstanceID = InstanceId,
            NodeID = _myNodeId,
            ProposalID = accept.ProposalID,
        };
        var ballot = new Ballot(accept.ProposalID, accept.NodeID);
        if (ballot >= Promised)
        {
            Promised = ballot;
            Accepted = ballot;
            AcceptedValue = accept.Value;
            record = CreateRecord(lastChecksum);
        }
        else
        {
            reply.RejectByPromiseID = Promised.ProposalId;
            record = null;
        }

        return reply;
    }

    /// <summary>
    /// Builds the log record of the current state, chaining the value checksum from the previous
    /// instance's (0 when that is unknown, as PhxPaxos does).
    /// </summary>
    public AcceptorStateData CreateRecord(uint lastChecksum)
    {
        if (InstanceId > 0 && lastChecksum == 0)
        {
            Checksum = 0;
        }
        else if (!AcceptedValue.IsEmpty)
        {
            Checksum = SkipCrc32.Compute(lastChecksum, AcceptedValue.Span, SkipCrc32.ValueSkip);
        }

        return new AcceptorStateData
        {
            InstanceID = InstanceId,
            PromiseID = Promised.ProposalId,
            PromiseNodeID = Promised.NodeId,
            AcceptedID = Accepted.ProposalId,
            AcceptedNodeID = Accepted.NodeId,
            AcceptedValue = AcceptedValue,
            Checksum = Checksum,
        };
    }
}
