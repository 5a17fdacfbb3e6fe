namespace Orleans.Paxos.Engine.Groups;

/// <summary>Values read by the telemetry gauges from another thread.</summary>
internal sealed partial class PaxosGroup
{
    /// <summary>The highest instance id seen from a peer (learner's view); may be slightly stale. Thread-safe.</summary>
    public ulong HighestSeenInstanceId => _learner.HighestSeenInstanceId;

    /// <summary>Messages received and waiting for the loop thread. Thread-safe.</summary>
    public int InboundQueueDepth => Volatile.Read(ref _inboundCount);
}
