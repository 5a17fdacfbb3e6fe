using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Orleans.Concurrency;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Grains.Hosting;
using Orleans.Paxos.Grains.Placement;

namespace Orleans.Paxos.Grains;

/// <summary>
/// <see cref="IPaxosGroupGrain"/>: proposes through the hosting silo's <see cref="PaxosEngineHost"/>.
/// Reentrant, so concurrent proposals reach the engine together and are batched there. Placed on the
/// master's silo; when the master moves elsewhere the activation migrates after its current calls.
/// </summary>
[Reentrant]
[PaxosMasterPlacement]
public sealed partial class PaxosGroupGrain(
    PaxosEngineHost host,
    IClusterMembershipService membership,
    IGrainFactory grains,
    ILogger<PaxosGroupGrain> logger) : Grain, IPaxosGroupGrain
{
    private static readonly TimeSpan MasterCheckPeriod = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan WatchIdleTimeout = TimeSpan.FromSeconds(10);

    /// <summary>Instances read from the log per trip to the thread pool.</summary>
    private const ulong WatchReadChunk = 256;
    private int _group;
    private IGrainTimer? _masterCheck;
    private volatile bool _masterChanged;
    private bool _checkedOnce;

    private string NodeName => host.MyNodeId.ToString();

    /// <inheritdoc />
    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        _group = (int)this.GetPrimaryKeyLong();
        if (host.MasterElectionEnabled && (uint)_group < (uint)host.GroupCount)
        {
            host.MasterChanged += OnMasterChanged;
            _masterCheck = this.RegisterGrainTimer(CheckMasterAsync, new GrainTimerCreationOptions(MasterCheckPeriod, MasterCheckPeriod) { Interleave = true });
        }

        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        host.MasterChanged -= OnMasterChanged;
        _masterCheck?.Dispose();
        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public Task<ProposalResult> ProposeAsync(byte[] value, int? smId = null) => Propose(value, smId, batch: false);

    /// <inheritdoc />
    public Task<ProposalResult> BatchProposeAsync(byte[] value, int? smId = null) => Propose(value, smId, batch: true);

    /// <inheritdoc />
    public Task<MasterView> GetMasterAsync()
    {
        if (!ValidGroup())
        {
            throw new ArgumentOutOfRangeException(nameof(IPaxosGroupGrain), _group, $"Group {_group} does not exist; the cluster has groups 0..{host.GroupCount - 1}.");
        }

        var (master, version) = host.GetMaster(_group);
        return Task.FromResult(new MasterView(
            _group,
            master.IsNull ? null : master.ToString(),
            version,
            !master.IsNull && master == host.MyNodeId,
            NodeName,
            host.MasterElectionEnabled));
    }

    /// <inheritdoc />
    public Task<MembershipResult> GetMembersAsync() =>
        Task.FromResult(ValidGroup()
            ? new MembershipResult(ProposalStatus.Ok, _group, Members(), null)
            : InvalidGroupMembership());

    /// <inheritdoc />
    public Task<MembershipResult> AddMemberAsync(string node) => ChangeMembers(Parse(node), null);

    /// <inheritdoc />
    public Task<MembershipResult> RemoveMemberAsync(string node) => ChangeMembers(null, Parse(node));

    /// <inheritdoc />
    public Task<MembershipResult> ChangeMemberAsync(string from, string to) => ChangeMembers(Parse(to), Parse(from));

    /// <inheritdoc />
    public async Task<GroupStatus> GetStatusAsync()
    {
        if (!ValidGroup())
        {
            return new GroupStatus(_group, []);
        }

        var silos = membership.CurrentSnapshot.Members.Values
            .Where(m => m.Status == SiloStatus.Active)
            .Select(m => m.SiloAddress)
            .OrderBy(s => s.ToParsableString(), StringComparer.Ordinal)
            .ToList();
        var tasks = silos.Select(s => AskNodeAsync(s)).ToList();
        var views = await Task.WhenAll(tasks);
        var max = views.Where(v => v.Reachable).Select(v => v.NowInstanceId).DefaultIfEmpty(0UL).Max();
        return new GroupStatus(_group, [.. views.Select(v => v.Reachable ? v with { Lag = max - v.NowInstanceId } : v)]);
    }

    /// <inheritdoc />
    public Task<int> GetGroupCountAsync() => Task.FromResult(host.GroupCount);

    /// <inheritdoc />
    public async IAsyncEnumerable<CommittedEntry> WatchAsync(ulong fromInstance, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        if (!ValidGroup())
        {
            yield break;
        }

        using var subscription = host.WatchExecuted(_group, out var live);
        var next = fromInstance;
        while (!cancellationToken.IsCancellationRequested)
        {
            // Everything executed so far comes from the log; then wait for the next executed instance.
            var node = host.Node;
            var now = node.GetNowInstanceId(_group);
            var min = node.GetMinChosenInstanceId(_group);
            if (next < min)
            {
                next = min;
            }

            while (next < now && !cancellationToken.IsCancellationRequested)
            {
                // The log is read on the thread pool, a chunk at a time: an Orleans scheduler thread never waits for the disk.
                var from = next;
                var upTo = Math.Min(now, from + WatchReadChunk);
                var entries = await Task.Run(() => ReadEntries(node, from, upTo), cancellationToken);
                foreach (var entry in entries)
                {
                    yield return entry;
                }

                next = upTo;
            }

            // Wait for the next executed instance, but not longer than a grain call may take: an idle feed
            // ends and the caller continues with a new call from the next instance.
            using var idle = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            idle.CancelAfter(WatchIdleTimeout);
            try
            {
                await live.ReadAsync(idle.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or System.Threading.Channels.ChannelClosedException)
            {
                yield break;
            }
        }
    }

    /// <summary>The application's entries of instances <paramref name="from"/> up to (not including) <paramref name="upTo"/>, read from the log.</summary>
    private List<CommittedEntry> ReadEntries(Engine.Node.PaxosNode node, ulong from, ulong upTo)
    {
        var entries = new List<CommittedEntry>();
        for (var instance = from; instance < upTo; instance++)
        {
            var value = node.GetInstanceValue(_group, instance);
            if (value.Status != InstanceValueStatus.Ok)
            {
                continue;
            }

            for (var i = 0; i < value.Values.Count; i++)
            {
                // The built-in membership and master state machines' entries are the engine's, not the application's.
                if (value.Values[i].SmId is Engine.Protocol.ReservedSmIds.SystemVariables or Engine.Protocol.ReservedSmIds.Master)
                {
                    continue;
                }

                entries.Add(new CommittedEntry(_group, instance, i, value.Values[i].SmId, value.Values[i].Value));
            }
        }

        return entries;
    }

    private async Task<ProposalResult> Propose(byte[] value, int? smId, bool batch)
    {
        ArgumentNullException.ThrowIfNull(value);
        var result = await host.ProposeAsync(_group, smId ?? 0, value, batch);
        if (result.Status is not ProposeStatus.Ok)
        {
            LogProposalFailed(_group, host.MyNodeId, result.Status);
        }

        return ResultMapping.ToProposalResult(_group, result, NodeName);
    }

    private async Task<MembershipResult> ChangeMembers(NodeId? add, NodeId? remove)
    {
        if (!ValidGroup())
        {
            return InvalidGroupMembership();
        }

        if (!host.MembershipManaged)
        {
            return new MembershipResult(ProposalStatus.NotSupported, _group, Members(), "Membership is not managed through the log on this cluster (Paxos:UseMembership is false); members come from the Paxos:Members configuration.");
        }

        var result = await host.ChangeMembershipAsync(_group, add, remove);
        var status = result.Status switch
        {
            Engine.StateMachines.MembershipStatus.Ok => ProposalStatus.Ok,
            Engine.StateMachines.MembershipStatus.ProposeFailed => ResultMapping.ToStatus(result.ProposeStatus),
            Engine.StateMachines.MembershipStatus.VersionConflict => ProposalStatus.Conflict,
            _ => ProposalStatus.Rejected,
        };
        return new MembershipResult(
            status,
            _group,
            Members(),
            result.Status == Engine.StateMachines.MembershipStatus.Ok ? null : $"The membership change was not applied: {result.Status} (proposal {result.ProposeStatus}).");
    }

    private async Task<NodeGroupStatus> AskNodeAsync(SiloAddress silo)
    {
        try
        {
            return await grains.GetGrain<IPaxosNodeGrain>(silo.ToParsableString()).GetGroupStatusAsync(_group).WaitAsync(TimeSpan.FromSeconds(5));
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            return new NodeGroupStatus("?", silo.ToString(), false, 0, 0, null, [], 0, ex.Message);
        }
    }

    private List<string> Members() => [.. host.GetMembership(_group).Select(m => m.ToString())];

    private MembershipResult InvalidGroupMembership() =>
        new(ProposalStatus.InvalidGroup, _group, [], $"Group {_group} does not exist; the cluster has groups 0..{host.GroupCount - 1}.");

    private bool ValidGroup() => (uint)_group < (uint)host.GroupCount;

    private static NodeId Parse(string node)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(node);
        return NodeId.Parse(node);
    }

    private void OnMasterChanged(int group, NodeId master, ulong version)
    {
        // Engine thread: only flag it; the grain timer acts on the grain's own scheduler.
        if (group == _group)
        {
            _masterChanged = true;
        }
    }

    private Task CheckMasterAsync(CancellationToken cancellationToken)
    {
        // Act on a reported change, and check once after activation (the master may have moved meanwhile).
        if (!_masterChanged && _checkedOnce)
        {
            return Task.CompletedTask;
        }

        _masterChanged = false;
        _checkedOnce = true;
        var master = host.GetMaster(_group).Master;
        if (!master.IsNull && master != host.MyNodeId)
        {
            LogMigrating(_group, host.MyNodeId, master);
            this.MigrateOnIdle();
        }

        return Task.CompletedTask;
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Group {Group}: a proposal on node {Node} ended with {Status}.")]
    private partial void LogProposalFailed(int group, NodeId node, ProposeStatus status);

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: the master moved from {Node} to {Master}; the group grain migrates.")]
    private partial void LogMigrating(int group, NodeId node, NodeId master);
}
