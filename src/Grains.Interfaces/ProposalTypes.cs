namespace Orleans.Paxos.Grains;

/// <summary>The outcome of a proposal; the values mirror the engine's <c>ProposeStatus</c> (PhxPaxos codes).</summary>
public enum ProposalStatus
{
    /// <summary>The value was chosen and executed on the node that proposed it.</summary>
    Ok = 0,

    /// <summary>Other values won the instance three times in a row; the value was not chosen. Retry.</summary>
    Conflict = 14,

    /// <summary>The value was chosen but the local state machine failed to execute it; execution is retried.</summary>
    ExecuteFailed = 15,

    /// <summary>The node is a follower and cannot propose.</summary>
    FollowerCannotPropose = 16,

    /// <summary>The node is not a member of the group.</summary>
    NotMember = 17,

    /// <summary>The value is larger than the group's maximum value size.</summary>
    ValueTooLarge = 18,

    /// <summary>No result in time; the value may or may not be chosen later.</summary>
    Timeout = 404,

    /// <summary>Too many proposals are waiting; the value was not proposed. Back off and retry.</summary>
    TooManyWaiting = 405,

    /// <summary>The group stopped on that node (storage failure); the value may or may not be chosen.</summary>
    GroupStopped = 500,

    /// <summary>No such group; the value was not proposed.</summary>
    InvalidGroup = -5,

    /// <summary>The node is shutting down; the value may or may not be chosen.</summary>
    NodeStopped = 501,

    /// <summary>The operation is not available on this cluster's configuration; nothing happened.</summary>
    NotSupported = 1000,

    /// <summary>The request cannot be applied as asked (for example adding a node that is already a member); nothing happened.</summary>
    Rejected = 1001,
}

/// <summary>The result of a proposal made through <see cref="IPaxosGroupGrain"/>.</summary>
/// <param name="Status">What happened.</param>
/// <param name="Group">The group.</param>
/// <param name="InstanceId">The instance the value was chosen in (when <paramref name="Status"/> is Ok or ExecuteFailed).</param>
/// <param name="BatchIndex">The value's position within its instance when values were batched; 0 otherwise.</param>
/// <param name="Output">The state machine's output when it is bytes; null otherwise.</param>
/// <param name="OutputText">The state machine's output as text (strings as they are, other objects via ToString); null when none.</param>
/// <param name="Node">The Paxos node (ip:port) that proposed the value.</param>
[GenerateSerializer, Immutable, Alias("paxos.ProposalResult")]
public sealed record ProposalResult(
    [property: Id(0)] ProposalStatus Status,
    [property: Id(1)] int Group,
    [property: Id(2)] ulong InstanceId,
    [property: Id(3)] int BatchIndex,
    [property: Id(4)] byte[]? Output,
    [property: Id(5)] string? OutputText,
    [property: Id(6)] string Node)
{
    /// <summary>Whether the value was chosen and executed.</summary>
    public bool IsOk => Status == ProposalStatus.Ok;
}

/// <summary>Who is the master of a group, as seen by one node.</summary>
/// <param name="Group">The group.</param>
/// <param name="Master">The master's Paxos node (ip:port), or null when there is none (or no master election).</param>
/// <param name="Version">The master's lease version (grows with every change of master); 0 when none.</param>
/// <param name="IsLocalMaster">Whether the answering node (<paramref name="Node"/>) is the master.</param>
/// <param name="Node">The Paxos node that answered (the one on the silo hosting the group grain).</param>
/// <param name="Supported">False when the engine of the answering silo has no master election.</param>
[GenerateSerializer, Immutable, Alias("paxos.MasterView")]
public sealed record MasterView(
    [property: Id(0)] int Group,
    [property: Id(1)] string? Master,
    [property: Id(2)] ulong Version,
    [property: Id(3)] bool IsLocalMaster,
    [property: Id(4)] string Node,
    [property: Id(5)] bool Supported);

/// <summary>The result of a membership query or change.</summary>
/// <param name="Status">Ok, or why the change failed.</param>
/// <param name="Group">The group.</param>
/// <param name="Members">The members (ip:port) after the operation, as the answering node sees them.</param>
/// <param name="Error">What went wrong, in words; null when Ok.</param>
[GenerateSerializer, Immutable, Alias("paxos.MembershipResult")]
public sealed record MembershipResult(
    [property: Id(0)] ProposalStatus Status,
    [property: Id(1)] int Group,
    [property: Id(2)] IReadOnlyList<string> Members,
    [property: Id(3)] string? Error);

/// <summary>One node's view of one group.</summary>
/// <param name="Node">The Paxos node (ip:port).</param>
/// <param name="Silo">The Orleans silo hosting it.</param>
/// <param name="Reachable">False when the silo did not answer; the other fields are then empty.</param>
/// <param name="NowInstanceId">The instance being decided; every lower one is chosen and executed there.</param>
/// <param name="MinChosenInstanceId">The lowest instance still in its log.</param>
/// <param name="Master">The master it sees (ip:port) or null.</param>
/// <param name="Members">The members it sees.</param>
/// <param name="Lag">How many instances it is behind the most advanced node in this report.</param>
/// <param name="StoppedReason">Why the group stopped on that node, or null while it runs.</param>
/// <param name="NotVoting">
/// Null while the node votes in the group; otherwise its state and why (e.g. "rebuilding: its index was rebuilt ..."):
/// a node that started with no log or a rebuilt index learns from its peers and votes only once that is safe.
/// </param>
[GenerateSerializer, Immutable, Alias("paxos.NodeGroupStatus")]
public sealed record NodeGroupStatus(
    [property: Id(0)] string Node,
    [property: Id(1)] string Silo,
    [property: Id(2)] bool Reachable,
    [property: Id(3)] ulong NowInstanceId,
    [property: Id(4)] ulong MinChosenInstanceId,
    [property: Id(5)] string? Master,
    [property: Id(6)] IReadOnlyList<string> Members,
    [property: Id(7)] ulong Lag,
    [property: Id(8)] string? StoppedReason,
    [property: Id(9)] string? NotVoting = null);

/// <summary>Every node's view of one group.</summary>
/// <param name="Group">The group.</param>
/// <param name="Nodes">One entry per silo of the cluster.</param>
[GenerateSerializer, Immutable, Alias("paxos.GroupStatus")]
public sealed record GroupStatus(
    [property: Id(0)] int Group,
    [property: Id(1)] IReadOnlyList<NodeGroupStatus> Nodes);

/// <summary>A committed (chosen and executed) value of a group's log.</summary>
/// <param name="Group">The group.</param>
/// <param name="InstanceId">Its instance.</param>
/// <param name="BatchIndex">Its position within the instance (a batch holds several values).</param>
/// <param name="SmId">The state machine it was proposed for (0: none).</param>
/// <param name="Value">The value as proposed.</param>
[GenerateSerializer, Immutable, Alias("paxos.CommittedEntry")]
public sealed record CommittedEntry(
    [property: Id(0)] int Group,
    [property: Id(1)] ulong InstanceId,
    [property: Id(2)] int BatchIndex,
    [property: Id(3)] int SmId,
    [property: Id(4)] byte[] Value);
