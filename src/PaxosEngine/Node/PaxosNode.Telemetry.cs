using System.Diagnostics;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Telemetry;

namespace Orleans.Paxos.Engine.Node;

/// <summary>The node's measurements: the proposal span and counters, the chosen and master counters, and the gauges.</summary>
public sealed partial class PaxosNode : IGaugeSource
{
    private string? _nodeTag;
    private long _invalidFrames;

    /// <summary>
    /// Frames the transport delivered that this node refused before any group saw them: undecodable (bad length,
    /// header, checksum or body) or for a group it does not have. Also counted on <c>paxos.frames.invalid</c>.
    /// </summary>
    public long InvalidFramesReceived => Interlocked.Read(ref _invalidFrames);

    /// <inheritdoc />
    string IGaugeSource.NodeTagValue => NodeTagValue;

    private string NodeTagValue => _nodeTag ??= MyNodeId.ToString();

    /// <inheritdoc />
    GroupGaugeSnapshot IGaugeSource.ReadGroup(int group)
    {
        var g = _groups[group];
        var now = g.NowInstanceId;
        var highest = g.HighestSeenInstanceId;
        var master = g.Master.Get().Node;
        long logBytes = 0;
        var logFiles = 0;
        var hasLog = false;
        var storageFailed = 0;
        if (_storage is FileLogStorage files)
        {
            (logBytes, logFiles) = files.GetLogSize(group);
            storageFailed = files.Failure is null ? 0 : 1;
            hasLog = true;
        }

        return new GroupGaugeSnapshot(
            NowInstanceId: (long)now,
            MinChosenInstanceId: (long)g.MinChosenInstanceId,
            CatchUpLag: highest > now ? (long)(highest - now) : 0,
            IsMaster: !master.IsNull && master == MyNodeId ? 1 : 0,
            MasterKnown: master.IsNull ? 0 : 1,
            InboundQueue: g.InboundQueueDepth,
            WaitingProposals: g.WaitingProposals,
            Stopped: g.StoppedReason is null ? 0 : 1,
            NotVoting: g.VotingState == Groups.VotingState.Voting ? 0 : 1,
            LogBytes: logBytes,
            LogFiles: logFiles,
            StorageFailed: storageFailed,
            HasLogSize: hasLog);
    }

    /// <summary>Subscribes the counters to the groups' events and adds the node to the gauges. Called once by <see cref="Start"/>.</summary>
    private void RegisterTelemetry()
    {
        var node = NodeTagValue;
        foreach (var g in _groups)
        {
            var groupTag = EngineInstruments.GroupTagValue(g.Index);
            g.Chosen += (_, _) => EngineInstruments.InstancesChosen.Add(1, new(PaxosMetrics.NodeTag, node), new(PaxosMetrics.GroupTag, groupTag));
        }

        MasterChanged += (group, _, _) => EngineInstruments.MasterChanges.Add(1, new(PaxosMetrics.NodeTag, node), new(PaxosMetrics.GroupTag, EngineInstruments.GroupTagValue(group)));
        NodeGauges.Register(this);
    }

    private void CountInvalidFrame(string reason)
    {
        Interlocked.Increment(ref _invalidFrames);
        if (EngineInstruments.InvalidFrames.Enabled)
        {
            EngineInstruments.InvalidFrames.Add(1, new(PaxosMetrics.NodeTag, NodeTagValue), new("reason", reason));
        }
    }

    /// <summary>Removes the node from the gauges. Called by <see cref="Dispose"/>.</summary>
    private void UnregisterTelemetry() => NodeGauges.Unregister(this);

    /// <summary>Proposes through the committer inside a <c>paxos.propose</c> span and records the result.</summary>
    private async Task<ProposeResult> Enqueue(int groupIndex, int smId, ReadOnlyMemory<byte> value, StateMachineContext? context, bool explicitBatch, CancellationToken cancellationToken)
    {
        var started = _time.GetTimestamp();
        using var activity = PaxosTracing.Source.StartActivity(PaxosTracing.ProposeActivityName, ActivityKind.Internal);
        if (activity is not null)
        {
            activity.SetTag(PaxosTracing.NodeTag, NodeTagValue);
            activity.SetTag(PaxosTracing.GroupTag, groupIndex);
            activity.SetTag(PaxosTracing.BatchTag, explicitBatch);
        }

        ProposeResult result;
        try
        {
            result = await EnqueueCore(groupIndex, smId, value, context, explicitBatch, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            activity?.SetStatus(ActivityStatusCode.Error, ex.Message);
            throw;
        }

        EngineInstruments.RecordProposal(NodeTagValue, groupIndex, result, _time.GetElapsedTime(started), activity);
        return result;
    }
}
