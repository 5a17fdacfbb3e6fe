namespace Orleans.Paxos.Grains;

/// <summary>
/// One Paxos group (key: the group index, 0..GroupCount-1). The activation is placed on the silo whose
/// Paxos node is the group's master and moves when the master moves; any silo may still propose.
/// Calls interleave (the grain is reentrant): concurrent proposals are batched by the engine.
/// </summary>
[Alias("paxos.IPaxosGroupGrain")]
public interface IPaxosGroupGrain : IGrainWithIntegerKey
{
    /// <summary>Proposes a value and waits until it is chosen and executed on the hosting node, or fails.</summary>
    /// <param name="value">The value; at most the cluster's MaxValueSize minus 4 bytes.</param>
    /// <param name="smId">The state machine to execute it (null or 0: none, the value is only logged).</param>
    [Alias("Propose")]
    Task<ProposalResult> ProposeAsync(byte[] value, int? smId = null);

    /// <summary>Proposes a value to share one instance with other batched values (PhxPaxos BatchPropose).</summary>
    [Alias("BatchPropose")]
    Task<ProposalResult> BatchProposeAsync(byte[] value, int? smId = null);

    /// <summary>The group's master as seen by the hosting node.</summary>
    [Alias("GetMaster")]
    Task<MasterView> GetMasterAsync();

    /// <summary>The group's members as seen by the hosting node.</summary>
    [Alias("GetMembers")]
    Task<MembershipResult> GetMembersAsync();

    /// <summary>Adds a node (ip:port) to the group's membership, through the log.</summary>
    [Alias("AddMember")]
    Task<MembershipResult> AddMemberAsync(string node);

    /// <summary>Removes a node (ip:port) from the group's membership, through the log.</summary>
    [Alias("RemoveMember")]
    Task<MembershipResult> RemoveMemberAsync(string node);

    /// <summary>Replaces one member by another in one step, through the log.</summary>
    [Alias("ChangeMember")]
    Task<MembershipResult> ChangeMemberAsync(string from, string to);

    /// <summary>Every node's view of the group (instance ids, master, members, lag); unreachable silos are marked.</summary>
    [Alias("GetStatus")]
    Task<GroupStatus> GetStatusAsync();

    /// <summary>How many groups the cluster's nodes run.</summary>
    [Alias("GetGroupCount")]
    Task<int> GetGroupCountAsync();

    /// <summary>
    /// Committed entries from <paramref name="fromInstance"/> on: history from the hosting node's log,
    /// then new entries as they are executed, until cancelled. Entries cleaned from the log are skipped, and so
    /// are the entries of the built-in membership and master state machines.
    /// The feed ends after 10 s without a new entry (a grain call must not outlive the response timeout);
    /// to keep tailing, call again from the instance after the last one received.
    /// </summary>
    [Alias("Watch")]
    IAsyncEnumerable<CommittedEntry> WatchAsync(ulong fromInstance, CancellationToken cancellationToken = default);
}

/// <summary>
/// The Paxos node of one silo (key: the silo's address, <c>SiloAddress.ToParsableString()</c>); always
/// activated on that silo. Used for per-node status.
/// </summary>
[Alias("paxos.IPaxosNodeGrain")]
public interface IPaxosNodeGrain : IGrainWithStringKey
{
    /// <summary>This node's view of a group.</summary>
    [Alias("GetGroupStatus")]
    Task<NodeGroupStatus> GetGroupStatusAsync(int group);
}
