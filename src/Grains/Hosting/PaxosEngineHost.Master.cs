using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;

namespace Orleans.Paxos.Grains.Hosting;

/// <summary>
/// Master election and membership: the engine features the grains expose. This file is the only place
/// that touches those engine APIs.
/// </summary>
public sealed partial class PaxosEngineHost
{
    /// <summary>Raised (on an engine thread) when a group's master changes: (group, master or null node, version).</summary>
    public event Action<int, NodeId, ulong>? MasterChanged;

    /// <summary>Whether this node elects masters (<see cref="PaxosNodeOptions.UseMaster"/>).</summary>
    public bool MasterElectionEnabled => _options.UseMaster;

    /// <summary>Whether membership is changed through the log (<see cref="PaxosNodeOptions.UseMembership"/>).</summary>
    public bool MembershipManaged => _options.UseMembership;

    /// <summary>The group's master as this node sees it: (null node, version) when none.</summary>
    public (NodeId Master, ulong Version) GetMaster(int group)
    {
        var info = Node.GetMaster(group);
        return (info.Node, info.Version == ulong.MaxValue ? 0 : info.Version);
    }

    /// <summary>Whether this node is the group's master.</summary>
    public bool IsMaster(int group) => Node.IsMaster(group);

    /// <summary>The group's members as this node sees them.</summary>
    public IReadOnlyList<NodeId> GetMembership(int group) => Node.GetMembership(group).Members;

    /// <summary>Adds, removes or replaces (both given) a member through the group's log.</summary>
    public Task<Engine.StateMachines.MembershipResult> ChangeMembershipAsync(int group, NodeId? add, NodeId? remove, CancellationToken cancellationToken = default) =>
        (add, remove) switch
        {
            ({ } a, { } r) => Node.ChangeMemberAsync(group, r, a, cancellationToken),
            ({ } a, null) => Node.AddMemberAsync(group, a, cancellationToken),
            (null, { } r) => Node.RemoveMemberAsync(group, r, cancellationToken),
            _ => Task.FromResult(new Engine.StateMachines.MembershipResult(MembershipStatus.NoChange, ProposeStatus.Ok, Node.GetMembership(group).Version)),
        };

    private void AttachEngineEvents(PaxosNode node) =>
        node.MasterChanged += (group, master, version) => MasterChanged?.Invoke(group, master, version);
}
