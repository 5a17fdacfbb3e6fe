namespace Orleans.Paxos.Engine.Protocol;

/// <summary>The command carried in <see cref="Header.Cmdid"/> (PhxPaxos <c>MsgCmd</c>).</summary>
public enum MessageCommand
{
    /// <summary>The body is a <see cref="PaxosMsg"/>.</summary>
    PaxosMsg = 1,

    /// <summary>The body is a <see cref="CheckpointMsg"/>.</summary>
    CheckpointMsg = 2,
}

/// <summary>The value of <see cref="PaxosMsg.MsgType"/> (PhxPaxos <c>PaxosMsgType</c>).</summary>
public enum PaxosMsgType
{
    /// <summary>Proposer asks acceptors for a promise.</summary>
    Prepare = 1,

    /// <summary>Acceptor's answer to <see cref="Prepare"/>.</summary>
    PrepareReply = 2,

    /// <summary>Proposer asks acceptors to accept a value.</summary>
    Accept = 3,

    /// <summary>Acceptor's answer to <see cref="Accept"/>.</summary>
    AcceptReply = 4,

    /// <summary>Learner asks peers how far they are.</summary>
    AskForLearn = 5,

    /// <summary>A chosen value streamed to a learner that is behind.</summary>
    SendLearnValue = 6,

    /// <summary>Proposer announces that its accepted ballot was chosen (commit).</summary>
    ProposerSendSuccess = 7,

    /// <summary>Defined by PhxPaxos, never sent.</summary>
    ProposalSendNewValue = 8,

    /// <summary>Answer to <see cref="AskForLearn"/>: the sender's current instance.</summary>
    SendNowInstanceId = 9,

    /// <summary>Learner confirms it wants to learn from this peer.</summary>
    ConfirmAskForLearn = 10,

    /// <summary>Learner acknowledges streamed values.</summary>
    SendLearnValueAck = 11,

    /// <summary>Learner asks for a checkpoint because the log it needs was cleaned.</summary>
    AskForCheckpoint = 12,

    /// <summary>Defined by PhxPaxos, never sent (rejected as invalid).</summary>
    OnAskForCheckpoint = 13,
}

/// <summary>The value of <see cref="CheckpointMsg.MsgType"/>.</summary>
public enum CheckpointMsgType
{
    /// <summary>A chunk of checkpoint files (begin, data or end).</summary>
    SendFile = 1,

    /// <summary>The receiver's acknowledgement of a <see cref="SendFile"/>.</summary>
    SendFileAck = 2,
}

/// <summary>The flag of a <see cref="CheckpointMsgType.SendFile"/> message.</summary>
public enum CheckpointSendFileFlag
{
    /// <summary>Start of a transfer.</summary>
    Begin = 1,

    /// <summary>A data chunk.</summary>
    Ing = 2,

    /// <summary>End of a transfer.</summary>
    End = 3,
}

/// <summary>The flag of a <see cref="CheckpointMsgType.SendFileAck"/> message.</summary>
public enum CheckpointSendFileAckFlag
{
    /// <summary>Chunk accepted.</summary>
    Ok = 1,

    /// <summary>Chunk refused; the transfer ends.</summary>
    Fail = 2,
}

/// <summary>Reserved state machine ids (PhxPaxos <c>def.h</c>).</summary>
public static class ReservedSmIds
{
    /// <summary>No state machine: the value is chosen and logged but executed by none.</summary>
    public const int None = 0;

    /// <summary>The built-in membership state machine (SystemVariables).</summary>
    public const int SystemVariables = 100000000;

    /// <summary>The built-in master-election state machine (MasterVariables).</summary>
    public const int Master = 100000001;

    /// <summary>A batch of values (<see cref="BatchPaxosValues"/>).</summary>
    public const int Batch = 100000002;
}
