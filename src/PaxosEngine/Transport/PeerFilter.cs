using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Transport;

/// <summary>
/// A drop list for fault injection (testing only): frames to the listed outbound peers are dropped before
/// they are queued, frames from the listed inbound peers are dropped before they reach the node. Empty,
/// and so without effect, until <see cref="SetBlockedPeers"/> is called. Thread-safe: the lists are
/// replaced as a whole and read without locks.
/// </summary>
/// <remarks>
/// Given to a <see cref="NetworkTransport"/> through <see cref="NetworkTransportOptions.PeerFilter"/>.
/// A frame's sender is the node id in its body (PaxosMsg or CheckpointMsg), so inbound filtering decodes
/// each received frame once more while the inbound list is not empty. Blocking both directions on both
/// sides makes a network partition; blocking one side's outbound only makes a one-way partition.
/// </remarks>
public sealed class PeerFilter
{
    private static readonly HashSet<NodeId> Empty = [];
    private volatile HashSet<NodeId> _outbound = Empty;
    private volatile HashSet<NodeId> _inbound = Empty;
    private long _droppedOutbound;
    private long _droppedInbound;

    /// <summary>The peers whose frames are not sent.</summary>
    public IReadOnlySet<NodeId> Outbound => _outbound;

    /// <summary>The peers whose frames are dropped on arrival.</summary>
    public IReadOnlySet<NodeId> Inbound => _inbound;

    /// <summary>Whether any peer is blocked in either direction.</summary>
    public bool IsActive => _outbound.Count > 0 || _inbound.Count > 0;

    /// <summary>Frames not sent because their destination is blocked.</summary>
    public long DroppedOutbound => Interlocked.Read(ref _droppedOutbound);

    /// <summary>Frames dropped on arrival because their sender is blocked.</summary>
    public long DroppedInbound => Interlocked.Read(ref _droppedInbound);

    /// <summary>Replaces both lists; empty sets heal.</summary>
    public void SetBlockedPeers(IReadOnlySet<NodeId> outbound, IReadOnlySet<NodeId> inbound)
    {
        ArgumentNullException.ThrowIfNull(outbound);
        ArgumentNullException.ThrowIfNull(inbound);
        _outbound = outbound.Count == 0 ? Empty : [.. outbound];
        _inbound = inbound.Count == 0 ? Empty : [.. inbound];
    }

    /// <summary>Blocks nothing.</summary>
    public void Clear() => SetBlockedPeers(Empty, Empty);

    /// <summary>True (and counted) when a frame to <paramref name="destination"/> must be dropped.</summary>
    internal bool DropsOutbound(NodeId destination)
    {
        var blocked = _outbound;
        if (blocked.Count == 0 || !blocked.Contains(destination))
        {
            return false;
        }

        Interlocked.Increment(ref _droppedOutbound);
        return true;
    }

    /// <summary>True (and counted) when a received frame comes from a blocked peer; frames that do not decode pass.</summary>
    internal bool DropsInbound(ReadOnlySpan<byte> frame, int maxFrameLength)
    {
        var blocked = _inbound;
        if (blocked.Count == 0 || FrameCodec.TryDecode(frame, maxFrameLength, out var decoded) != FrameError.None)
        {
            return false;
        }

        var sender = decoded!.Paxos is { } paxos ? paxos.NodeID : decoded.Checkpoint?.NodeID ?? 0;
        if (!blocked.Contains(new NodeId(sender)))
        {
            return false;
        }

        Interlocked.Increment(ref _droppedInbound);
        return true;
    }
}
