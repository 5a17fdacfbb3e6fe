using Orleans.Paxos.Grains.Hosting;
using Orleans.Paxos.Grains.Placement;

namespace Orleans.Paxos.Grains;

/// <summary><see cref="IPaxosNodeGrain"/>: answers about the Paxos node of the silo it is placed on.</summary>
[PaxosSiloPlacement]
public sealed class PaxosNodeGrain(PaxosEngineHost host, ILocalSiloDetails silo) : Grain, IPaxosNodeGrain
{
    /// <inheritdoc />
    public Task<NodeGroupStatus> GetGroupStatusAsync(int group)
    {
        var node = host.Node;
        var (master, _) = host.GetMaster(group);
        var (voting, reason) = node.GetGroupVotingState(group);
        return Task.FromResult(new NodeGroupStatus(
            host.MyNodeId.ToString(),
            silo.SiloAddress.ToString(),
            true,
            node.GetNowInstanceId(group),
            node.GetMinChosenInstanceId(group),
            master.IsNull ? null : master.ToString(),
            [.. host.GetMembership(group).Select(m => m.ToString())],
            0,
            node.GetGroupStoppedReason(group),
            voting == Engine.Groups.VotingState.Voting ? null : $"{voting.ToString().ToLowerInvariant()}: {reason}"));
    }
}
