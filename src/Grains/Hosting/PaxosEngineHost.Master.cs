using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Grains.Hosting;

/// <summary>
/// Master election and membership: the engine features the grains expose. This file is the only place
/// that touches those engine APIs.
/// </summary>
public sealed partial class PaxosEngineHost
{
    /// <summary>Raised (on an engine thread) when a group's master changes: (group, master or null node, version).</summary>
    public event Action<int, NodeId, ulong>? MasterChanged;

    /// <summary>Whether the engine elects masters.</summary>
    public static bool MasterElectionSupported => false;

    /// <summary>Whether the engine changes membership through the log.</summary>
    public static bool MembershipChangeSupported => false;

    /// <summary>The group's master as this node sees it: (null node, 0) when none.</summary>
    public (NodeId Master, ulong Version) GetMaster(int group)
    {
        _ = Node;
        _ = group;
        return (NodeId.Null, 0);
    }

    /// <summary>Whether this node is the group's master.</summary>
    public bool IsMaster(int group) => !GetMaster(group).Master.IsNull && GetMaster(group).Master == MyNodeId;

    /// <summary>The group's members as this node sees them.</summary>
    public IReadOnlyList<NodeId> GetMembership(int group)
    {
        _ = Node;
        ArgumentOutOfRangeException.ThrowIfNegative(group);
        return _options.Validate().Members;
    }

    /// <summary>Adds, removes or replaces a member through the group's log.</summary>
    /// <exception cref="NotSupportedException">The engine has no membership changes.</exception>
    public Task<ProposeStatus> ChangeMembershipAsync(int group, NodeId? add, NodeId? remove, CancellationToken cancellationToken = default)
    {
        _ = Node;
        _ = (group, add, remove, cancellationToken);
        throw new NotSupportedException("This engine build cannot change membership yet; the members come from the Paxos:Members configuration.");
    }

    private void AttachEngineEvents(PaxosNode node)
    {
        _ = node;
        _ = MasterChanged;
    }
}
