using System.Diagnostics.Metrics;

namespace Orleans.Paxos.Engine.Telemetry;

/// <summary>What a running node reports to the observable gauges, read on the collecting thread.</summary>
internal interface IGaugeSource
{
    /// <summary>The node id as a tag value (<c>ip:port</c>).</summary>
    string NodeTagValue { get; }

    /// <summary>Number of groups.</summary>
    int GroupCount { get; }

    /// <summary>Reads one group's state; thread-safe, lock-free, allowed to be slightly stale.</summary>
    GroupGaugeSnapshot ReadGroup(int group);
}

/// <summary>One group's gauge values.</summary>
internal readonly record struct GroupGaugeSnapshot(
    long NowInstanceId,
    long MinChosenInstanceId,
    long CatchUpLag,
    int IsMaster,
    int MasterKnown,
    int InboundQueue,
    int WaitingProposals,
    int Stopped,
    int NotVoting,
    long LogBytes,
    int LogFiles,
    int StorageFailed,
    bool HasLogSize);

/// <summary>
/// The engine's observable gauges (<c>paxos.group.*</c>, <c>paxos.log.*</c>): each collection reads every
/// running node in the process, tagged with <see cref="PaxosMetrics.NodeTag"/> and
/// <see cref="PaxosMetrics.GroupTag"/>. Nodes register on start and leave on dispose. Thread-safe.
/// </summary>
internal static class NodeGauges
{
    private static readonly Lock Gate = new();
    private static IGaugeSource[] _sources = [];
    private static IGaugeSource[] _zeroed = [];

    static NodeGauges()
    {
        var m = PaxosMetrics.Meter;
        m.CreateObservableGauge("paxos.group.instance.current", () => Observe(static s => s.NowInstanceId), "{instance}",
            "The instance being decided in the group on this node; every lower one is chosen and executed here.");
        m.CreateObservableGauge("paxos.group.instance.min_chosen", () => Observe(static s => s.MinChosenInstanceId), "{instance}",
            "The lowest instance still kept in the group's log on this node.");
        m.CreateObservableGauge("paxos.group.catchup.lag", () => Observe(static s => s.CatchUpLag), "{instance}",
            "Instances this node is behind the highest instance it has seen from a peer (0 when up to date).");
        m.CreateObservableGauge("paxos.group.master.is_self", () => Observe(static s => s.IsMaster), "1",
            "1 when this node holds the group's master lease, else 0.");
        m.CreateObservableGauge("paxos.group.master.known", () => Observe(static s => s.MasterKnown), "1",
            "1 when this node knows a master for the group whose lease has not expired, else 0.");
        m.CreateObservableGauge("paxos.group.queue.inbound", () => Observe(static s => s.InboundQueue), "{message}",
            "Paxos messages received and waiting for the group's loop thread.");
        m.CreateObservableGauge("paxos.group.proposals.waiting", () => Observe(static s => s.WaitingProposals), "{proposal}",
            "Proposals queued or in flight in the group on this node (bounded by MaxWaitingProposals).");
        m.CreateObservableGauge("paxos.group.stopped", () => Observe(static s => s.Stopped), "1",
            "1 when the group stopped for good (storage failure, checksum mismatch), else 0.");
        m.CreateObservableGauge("paxos.group.not_voting", () => Observe(static s => s.NotVoting), "1",
            "1 while the group does not vote because it started with no log or a rebuilt index (surveying or rebuilding), else 0.");
        m.CreateObservableGauge("paxos.log.bytes", () => ObserveLog(static s => s.LogBytes), "By",
            "Bytes used by the group's data files (full files plus the current file's write offset); file storage only.");
        m.CreateObservableGauge("paxos.log.files", () => ObserveLog(static s => s.LogFiles), "{file}",
            "Data files the group's log spans; file storage only.");
        m.CreateObservableGauge("paxos.storage.failed", () => ObserveLog(static s => s.StorageFailed), "1",
            "1 when the node's log storage stopped after a failed write, fsync or index write (full disk, I/O error), else 0; file storage only.");
    }

    /// <summary>Adds a node to the gauges.</summary>
    public static void Register(IGaugeSource source)
    {
        lock (Gate)
        {
            _sources = [.. _sources, source];
        }
    }

    /// <summary>Removes a node from the gauges.</summary>
    public static void Unregister(IGaugeSource source)
    {
        lock (Gate)
        {
            _sources = Array.FindAll(_sources, s => !ReferenceEquals(s, source));
            _zeroed = Array.FindAll(_zeroed, s => !ReferenceEquals(s, source));
        }
    }

    /// <summary>
    /// Counters of rare events appear in a scrape only once they have counted; dashboards and alerts need
    /// them from the start. Once something listens (this runs in a collection), each node's groups get a
    /// zero of every such series, once.
    /// </summary>
    private static void PublishRareCountersAtZero(IGaugeSource[] sources)
    {
        if (sources.Length == 0 || Volatile.Read(ref _zeroed).Length == sources.Length)
        {
            return;
        }

        lock (Gate)
        {
            foreach (var source in _sources)
            {
                if (Array.IndexOf(_zeroed, source) >= 0)
                {
                    continue;
                }

                for (var g = 0; g < source.GroupCount; g++)
                {
                    var group = new KeyValuePair<string, object?>(PaxosMetrics.GroupTag, EngineInstruments.GroupTagValue(g));
                    EngineInstruments.CheckpointsNeeded.Add(0, group);
                    EngineInstruments.InboundDropped.Add(0, group);
                    foreach (var result in (string[])["ok", "failed"])
                    {
                        var tag = new KeyValuePair<string, object?>(PaxosMetrics.ResultTag, result);
                        EngineInstruments.CheckpointsSent.Add(0, group, tag);
                        EngineInstruments.CheckpointsInstalled.Add(0, group, tag);
                    }
                }

                _zeroed = [.. _zeroed, source];
            }
        }
    }

    private static List<Measurement<long>> Observe(Func<GroupGaugeSnapshot, long> select) => Collect(select, logOnly: false);

    private static List<Measurement<long>> ObserveLog(Func<GroupGaugeSnapshot, long> select) => Collect(select, logOnly: true);

    private static List<Measurement<long>> Collect(Func<GroupGaugeSnapshot, long> select, bool logOnly)
    {
        var sources = Volatile.Read(ref _sources);
        PublishRareCountersAtZero(sources);
        var result = new List<Measurement<long>>();
        foreach (var source in sources)
        {
            for (var g = 0; g < source.GroupCount; g++)
            {
                var snapshot = source.ReadGroup(g);
                if (logOnly && !snapshot.HasLogSize)
                {
                    continue;
                }

                result.Add(new Measurement<long>(
                    select(snapshot),
                    new KeyValuePair<string, object?>(PaxosMetrics.NodeTag, source.NodeTagValue),
                    new KeyValuePair<string, object?>(PaxosMetrics.GroupTag, EngineInstruments.GroupTagValue(g))));
            }
        }

        return result;
    }
}
