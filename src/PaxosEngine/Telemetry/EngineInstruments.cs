using System.Diagnostics;
using System.Diagnostics.Metrics;
using Orleans.Paxos.Engine.Consensus;

namespace Orleans.Paxos.Engine.Telemetry;

/// <summary>
/// The engine's counters and histograms on <see cref="PaxosMetrics.Meter"/> (names <c>paxos.*</c>, see
/// <c>docs/metrics.md</c>). Recording is thread-safe and costs a few atomic adds when nothing listens.
/// </summary>
internal static class EngineInstruments
{
    /// <summary>Bucket bounds (ms) for latency histograms: fine below a millisecond, up to the 5 s class of timeouts.</summary>
    private static readonly double[] LatencyBucketsMs = [0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 5000, 10000];

    /// <summary>The bucket advice of every latency histogram of the engine (ms).</summary>
    public static readonly InstrumentAdvice<double> LatencyAdvice = new() { HistogramBucketBoundaries = LatencyBucketsMs };

    public static readonly Counter<long> Proposals = PaxosMetrics.Meter.CreateCounter<long>(
        "paxos.proposals", "{proposal}", "Proposals completed on this node, by group and result.");

    public static readonly Histogram<double> ProposeDuration = PaxosMetrics.Meter.CreateHistogram(
        "paxos.propose.duration", "ms", "Time from ProposeAsync to its result, by group and result.",
        tags: null, advice: LatencyAdvice);

    public static readonly Counter<long> ProposalsRejected = PaxosMetrics.Meter.CreateCounter<long>(
        "paxos.proposals.rejected", "{proposal}", "Proposals refused without being proposed (too_many_waiting, value_too_large, not_member, invalid_group...), by group and result.");

    public static readonly Counter<long> InstancesChosen = PaxosMetrics.Meter.CreateCounter<long>(
        "paxos.instances.chosen", "{instance}", "Instances chosen and executed on this node, by group.");

    public static readonly Counter<long> MasterChanges = PaxosMetrics.Meter.CreateCounter<long>(
        "paxos.master.changes", "{change}", "Master changes seen by this node (not lease renewals), by group.");

    public static readonly Counter<long> LearnValuesSent = PaxosMetrics.Meter.CreateCounter<long>(
        "paxos.learn.values.sent", "{instance}", "Chosen instances sent to a lagging peer for catch-up, by group.");

    public static readonly Counter<long> LearnValuesReceived = PaxosMetrics.Meter.CreateCounter<long>(
        "paxos.learn.values.received", "{instance}", "Chosen instances learned from a peer during catch-up, by group.");

    public static readonly Counter<long> CheckpointsNeeded = PaxosMetrics.Meter.CreateCounter<long>(
        "paxos.checkpoint.needed", "{event}", "Times this node found itself behind a peer's cleaned log, so that only a checkpoint can bring it up to date, by group.");

    public static readonly Counter<long> CheckpointsSent = PaxosMetrics.Meter.CreateCounter<long>(
        "paxos.checkpoint.transfers.sent", "{transfer}", "Checkpoint transfers this node served to a lagging peer, by group and result (ok, failed).");

    public static readonly Counter<long> CheckpointsInstalled = PaxosMetrics.Meter.CreateCounter<long>(
        "paxos.checkpoint.transfers.installed", "{transfer}", "Checkpoints received from a peer and installed here, by group and result (ok, failed).");

    public static readonly Counter<long> CheckpointBytes = PaxosMetrics.Meter.CreateCounter<long>(
        "paxos.checkpoint.bytes", "By", "Checkpoint file bytes sent (direction=sent) or installed (direction=received), by group.");

    public static readonly Counter<long> InvalidFrames = PaxosMetrics.Meter.CreateCounter<long>(
        "paxos.frames.invalid", "{frame}", "Frames from the transport the node refused before any group saw them, by node and reason (a FrameError in snake case, or unknown_group).");

    public static readonly Counter<long> InboundDropped = PaxosMetrics.Meter.CreateCounter<long>(
        "paxos.group.inbound.dropped", "{message}", "Paxos messages dropped because the group's inbound queue was full, by group.");

    public static readonly Histogram<double> AcceptorPersistDuration = PaxosMetrics.Meter.CreateHistogram(
        "paxos.acceptor.persist.duration", "ms", "Time from the acceptor's write of its promise or accept until it is durable and the reply may go, by group.",
        tags: null, advice: LatencyAdvice);

    private static readonly string[] GroupNames = CreateGroupNames(64);

    /// <summary>The snake-case name of a status, as tagged on proposal instruments and spans.</summary>
    public static string ResultName(ProposeStatus status) => status switch
    {
        ProposeStatus.Ok => "ok",
        ProposeStatus.Conflict => "conflict",
        ProposeStatus.ExecuteFailed => "execute_failed",
        ProposeStatus.FollowerCannotPropose => "follower_cannot_propose",
        ProposeStatus.NotMember => "not_member",
        ProposeStatus.ValueTooLarge => "value_too_large",
        ProposeStatus.Timeout => "timeout",
        ProposeStatus.TooManyWaiting => "too_many_waiting",
        ProposeStatus.GroupStopped => "group_stopped",
        ProposeStatus.InvalidGroup => "invalid_group",
        ProposeStatus.NodeStopped => "node_stopped",
        _ => "other",
    };

    /// <summary>The snake-case name of a frame error, as tagged on <see cref="InvalidFrames"/>.</summary>
    public static string FrameErrorName(Protocol.FrameError error) => error switch
    {
        Protocol.FrameError.TooShort => "too_short",
        Protocol.FrameError.TooLarge => "too_large",
        Protocol.FrameError.BadHeaderLength => "bad_header_length",
        Protocol.FrameError.BadHeader => "bad_header",
        Protocol.FrameError.ChecksumMismatch => "checksum_mismatch",
        Protocol.FrameError.UnknownCommand => "unknown_command",
        Protocol.FrameError.BadBody => "bad_body",
        _ => "other",
    };

    /// <summary>Whether a status means the value was refused before it was proposed.</summary>
    public static bool IsRejection(ProposeStatus status) => status is
        ProposeStatus.TooManyWaiting or ProposeStatus.ValueTooLarge or ProposeStatus.InvalidGroup or
        ProposeStatus.NotMember or ProposeStatus.FollowerCannotPropose;

    /// <summary>The group index as a tag value, without allocating for the usual group counts.</summary>
    public static object GroupTagValue(int group) => (uint)group < (uint)GroupNames.Length ? GroupNames[group] : group.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Records a finished proposal on the counters, the histogram and its span.</summary>
    public static void RecordProposal(string node, int group, ProposeResult result, TimeSpan elapsed, Activity? activity)
    {
        var resultName = ResultName(result.Status);
        var tags = new TagList
        {
            { PaxosMetrics.NodeTag, node },
            { PaxosMetrics.GroupTag, GroupTagValue(group) },
            { PaxosMetrics.ResultTag, resultName },
        };
        Proposals.Add(1, tags);
        if (ProposeDuration.Enabled)
        {
            ProposeDuration.Record(elapsed.TotalMilliseconds, tags);
        }

        if (IsRejection(result.Status))
        {
            ProposalsRejected.Add(1, tags);
        }

        if (activity is not null)
        {
            activity.SetTag(PaxosTracing.ResultTag, resultName);
            if (result.Status is ProposeStatus.Ok or ProposeStatus.ExecuteFailed or ProposeStatus.Conflict)
            {
                activity.SetTag(PaxosTracing.InstanceTag, (long)result.InstanceId);
            }

            if (result.Status != ProposeStatus.Ok)
            {
                activity.SetStatus(ActivityStatusCode.Error, resultName);
            }
        }
    }

    /// <summary>Records how long an acceptor write took to become durable.</summary>
    public static void RecordAcceptorPersist(int group, TimeSpan elapsed)
    {
        if (AcceptorPersistDuration.Enabled)
        {
            AcceptorPersistDuration.Record(
                elapsed.TotalMilliseconds,
                new KeyValuePair<string, object?>(PaxosMetrics.GroupTag, GroupTagValue(group)));
        }
    }

    /// <summary>Adds one to a per-group counter.</summary>
    public static void AddForGroup(Counter<long> counter, int group, long value = 1)
    {
        if (counter.Enabled)
        {
            counter.Add(value, new KeyValuePair<string, object?>(PaxosMetrics.GroupTag, GroupTagValue(group)));
        }
    }

    /// <summary>Records the end of a checkpoint transfer on <paramref name="counter"/> and its bytes.</summary>
    public static void RecordCheckpointTransfer(Counter<long> counter, int group, bool ok, long bytes)
    {
        var groupTag = new KeyValuePair<string, object?>(PaxosMetrics.GroupTag, GroupTagValue(group));
        counter.Add(1, groupTag, new KeyValuePair<string, object?>(PaxosMetrics.ResultTag, ok ? "ok" : "failed"));
        if (bytes > 0)
        {
            CheckpointBytes.Add(bytes, groupTag, new KeyValuePair<string, object?>("direction", ReferenceEquals(counter, CheckpointsSent) ? "sent" : "received"));
        }
    }

    private static string[] CreateGroupNames(int count)
    {
        var names = new string[count];
        for (var i = 0; i < count; i++)
        {
            names[i] = i.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }

        return names;
    }
}
