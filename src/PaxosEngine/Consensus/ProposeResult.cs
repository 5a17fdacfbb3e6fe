namespace Orleans.Paxos.Engine.Consensus;

/// <summary>The outcome of a proposal (PhxPaxos <c>PaxosTryCommitRet</c>, as a type).</summary>
public enum ProposeStatus
{
    /// <summary>The value was chosen and executed locally.</summary>
    Ok = 0,

    /// <summary>Another value was chosen in the instance, three times in a row (PhxPaxos 14). The value was not chosen.</summary>
    Conflict = 14,

    /// <summary>The value was chosen but the local state machine failed to execute it (PhxPaxos 15); execution is retried.</summary>
    ExecuteFailed = 15,

    /// <summary>This node is a follower and cannot propose (PhxPaxos 16).</summary>
    FollowerCannotPropose = 16,

    /// <summary>This node is not in the group's membership (PhxPaxos 17).</summary>
    NotMember = 17,

    /// <summary>The packed value is larger than the maximum value size (PhxPaxos 18).</summary>
    ValueTooLarge = 18,

    /// <summary>No result within the timeout or before cancellation (PhxPaxos 404). The value may or may not be chosen later.</summary>
    Timeout = 404,

    /// <summary>Refused at once: too many proposals waiting, or adaptive rejection (PhxPaxos 405). The value was not proposed.</summary>
    TooManyWaiting = 405,

    /// <summary>The group stopped (storage failure or a checksum mismatch); see the log. The value may or may not be chosen.</summary>
    GroupStopped = 500,

    /// <summary>No such group on this node. The value was not proposed.</summary>
    InvalidGroup = -5,

    /// <summary>The node is shutting down. The value may or may not be chosen.</summary>
    NodeStopped = 501,
}

/// <summary>The result of a proposal made through <see cref="Node.PaxosNode"/>.</summary>
/// <param name="Status">What happened.</param>
/// <param name="InstanceId">The instance the value was chosen in (valid when <see cref="Status"/> is Ok or ExecuteFailed).</param>
/// <param name="BatchIndex">The value's position in its instance when several values shared it; 0 otherwise.</param>
/// <param name="Output">What the local state machine set in <see cref="StateMachines.StateMachineContext.Output"/>.</param>
public sealed record ProposeResult(ProposeStatus Status, ulong InstanceId = 0, int BatchIndex = 0, object? Output = null)
{
    /// <summary>Whether the value was chosen and executed.</summary>
    public bool IsOk => Status == ProposeStatus.Ok;

    internal static readonly ProposeResult TooManyWaiting = new(ProposeStatus.TooManyWaiting);
    internal static readonly ProposeResult Timeout = new(ProposeStatus.Timeout);
    internal static readonly ProposeResult ValueTooLarge = new(ProposeStatus.ValueTooLarge);
    internal static readonly ProposeResult InvalidGroup = new(ProposeStatus.InvalidGroup);
    internal static readonly ProposeResult NodeStopped = new(ProposeStatus.NodeStopped);
    internal static readonly ProposeResult GroupStopped = new(ProposeStatus.GroupStopped);
}
