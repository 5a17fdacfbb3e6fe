using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using Orleans.Paxos.Engine.Telemetry;

namespace Orleans.Paxos.Engine.Transport;

/// <summary>Why a frame was dropped by a transport.</summary>
public enum DropReason
{
    /// <summary>The TCP send queue was at its frame or byte cap, or the UDP socket's send buffer was full.</summary>
    QueueFull = 0,

    /// <summary>Larger than the maximum frame length (sent or received).</summary>
    TooLarge,

    /// <summary>Queued longer than the drop time.</summary>
    Stale,

    /// <summary>The socket failed while the frame was queued or being written.</summary>
    SendError,

    /// <summary>A received TCP length prefix or datagram size outside the bounds.</summary>
    BadLength,

    /// <summary>The transport was stopped (or not started).</summary>
    Stopped,

    /// <summary>The peer is blocked by the transport's <see cref="PeerFilter"/> (fault injection).</summary>
    Blocked,

    /// <summary>A received frame without a valid peer-authentication tag (<see cref="NetworkTransportOptions.AuthenticationKey"/>).</summary>
    Unauthenticated,
}

/// <summary>
/// Live counters of one transport, also published on the <c>Orleans.Paxos</c> meter as
/// <c>paxos.transport.*</c> with tags <c>kind</c> (udp|tcp) and <c>reason</c>. Thread-safe; reads are
/// individually atomic but not a consistent snapshot of all counters together.
/// </summary>
public sealed class TransportStatistics
{
    private static readonly Counter<long> FramesSentCounter = PaxosMetrics.Meter.CreateCounter<long>("paxos.transport.frames.sent", "{frame}", "Frames written to the network.");
    private static readonly Counter<long> BytesSentCounter = PaxosMetrics.Meter.CreateCounter<long>("paxos.transport.bytes.sent", "By", "Frame bytes written to the network (without TCP prefixes).");
    private static readonly Counter<long> DatagramsSentCounter = PaxosMetrics.Meter.CreateCounter<long>("paxos.transport.datagrams.sent", "{datagram}", "UDP datagrams written; fewer than UDP frames sent when frames to one peer are coalesced.");
    private static readonly Counter<long> FramesReceivedCounter = PaxosMetrics.Meter.CreateCounter<long>("paxos.transport.frames.received", "{frame}", "Frames handed to the sink.");
    private static readonly Counter<long> BytesReceivedCounter = PaxosMetrics.Meter.CreateCounter<long>("paxos.transport.bytes.received", "By", "Frame bytes handed to the sink.");
    private static readonly Counter<long> FramesDroppedCounter = PaxosMetrics.Meter.CreateCounter<long>("paxos.transport.frames.dropped", "{frame}", "Frames dropped by the transport, by reason.");
    private static readonly Counter<long> AuthenticationFailuresCounter = PaxosMetrics.Meter.CreateCounter<long>("paxos.transport.authentication.failures", "{frame}", "Received frames refused because their peer-authentication tag was missing or wrong.");
    private static readonly KeyValuePair<string, object?>[] KindTags = [new("kind", "udp"), new("kind", "tcp")];
    private static readonly string[] ReasonNames = ["queue_full", "too_large", "stale", "send_error", "bad_length", "stopped", "blocked", "unauthenticated"];
    private static readonly int ReasonCount = ReasonNames.Length;

    private readonly long[] _sentFrames = new long[2];
    private readonly long[] _sentBytes = new long[2];
    private readonly long[] _receivedFrames = new long[2];
    private readonly long[] _receivedBytes = new long[2];
    private readonly long[] _dropped = new long[2 * ReasonCount];
    private long _datagramsSent;
    private long _connectionsOpened;
    private long _connectionsAccepted;
    private long _connectionsRefused;
    private long _connectFailures;

    /// <summary>Frames written to the network by <paramref name="kind"/>.</summary>
    public long FramesSent(TransportKind kind) => Interlocked.Read(ref _sentFrames[(int)kind]);

    /// <summary>Frame bytes (without TCP prefixes) written by <paramref name="kind"/>.</summary>
    public long BytesSent(TransportKind kind) => Interlocked.Read(ref _sentBytes[(int)kind]);

    /// <summary>
    /// UDP datagrams written. Equal to the UDP frames sent unless <see cref="NetworkTransportOptions.CoalesceDatagrams"/>
    /// is on, when one datagram may carry several frames to the same peer.
    /// </summary>
    public long DatagramsSent => Interlocked.Read(ref _datagramsSent);

    /// <summary>Frames handed to the sink that arrived by <paramref name="kind"/>.</summary>
    public long FramesReceived(TransportKind kind) => Interlocked.Read(ref _receivedFrames[(int)kind]);

    /// <summary>Frame bytes handed to the sink that arrived by <paramref name="kind"/>.</summary>
    public long BytesReceived(TransportKind kind) => Interlocked.Read(ref _receivedBytes[(int)kind]);

    /// <summary>Frames dropped on <paramref name="kind"/> for <paramref name="reason"/>.</summary>
    public long Dropped(TransportKind kind, DropReason reason) => Interlocked.Read(ref _dropped[((int)kind * ReasonCount) + (int)reason]);

    /// <summary>All frames dropped on <paramref name="kind"/>, whatever the reason.</summary>
    public long DroppedTotal(TransportKind kind)
    {
        long total = 0;
        for (var r = 0; r < ReasonCount; r++)
        {
            total += Interlocked.Read(ref _dropped[((int)kind * ReasonCount) + r]);
        }

        return total;
    }

    /// <summary>
    /// Received frames refused because their peer-authentication tag was missing or wrong (both kinds); each is
    /// also counted as dropped with <see cref="DropReason.Unauthenticated"/>. Always 0 without an authentication key.
    /// </summary>
    public long AuthenticationFailures => Dropped(TransportKind.Udp, DropReason.Unauthenticated) + Dropped(TransportKind.Tcp, DropReason.Unauthenticated);

    /// <summary>Outgoing TCP connections established.</summary>
    public long ConnectionsOpened => Interlocked.Read(ref _connectionsOpened);

    /// <summary>Incoming TCP connections accepted.</summary>
    public long ConnectionsAccepted => Interlocked.Read(ref _connectionsAccepted);

    /// <summary>Incoming TCP connections closed at once because of <see cref="NetworkTransportOptions.MaxIncomingConnections"/>.</summary>
    public long ConnectionsRefused => Interlocked.Read(ref _connectionsRefused);

    /// <summary>Outgoing connect attempts that failed or timed out.</summary>
    public long ConnectFailures => Interlocked.Read(ref _connectFailures);

    /// <summary>All counters on one line, for logs and benchmark output.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        foreach (var kind in (ReadOnlySpan<TransportKind>)[TransportKind.Udp, TransportKind.Tcp])
        {
            sb.Append(CultureInfo.InvariantCulture, $"{kind}: sent {FramesSent(kind)} ({BytesSent(kind)} B), received {FramesReceived(kind)} ({BytesReceived(kind)} B), dropped");
            for (var r = 0; r < ReasonCount; r++)
            {
                sb.Append(CultureInfo.InvariantCulture, $" {ReasonNames[r]}={Dropped(kind, (DropReason)r)}");
            }

            sb.Append("; ");
        }

        sb.Append(CultureInfo.InvariantCulture, $"UDP datagrams sent {DatagramsSent}; connections opened {ConnectionsOpened}, accepted {ConnectionsAccepted}, refused {ConnectionsRefused}, connect failures {ConnectFailures}, authentication failures {AuthenticationFailures}");
        return sb.ToString();
    }

    internal void OnSent(TransportKind kind, int frames, long bytes)
    {
        Interlocked.Add(ref _sentFrames[(int)kind], frames);
        Interlocked.Add(ref _sentBytes[(int)kind], bytes);
        FramesSentCounter.Add(frames, KindTags[(int)kind]);
        BytesSentCounter.Add(bytes, KindTags[(int)kind]);
    }

    internal void OnDatagramSent()
    {
        Interlocked.Increment(ref _datagramsSent);
        DatagramsSentCounter.Add(1);
    }

    internal void OnReceived(TransportKind kind, int bytes)
    {
        Interlocked.Increment(ref _receivedFrames[(int)kind]);
        Interlocked.Add(ref _receivedBytes[(int)kind], bytes);
        FramesReceivedCounter.Add(1, KindTags[(int)kind]);
        BytesReceivedCounter.Add(bytes, KindTags[(int)kind]);
    }

    internal void OnDropped(TransportKind kind, DropReason reason, long frames = 1)
    {
        if (frames <= 0)
        {
            return;
        }

        Interlocked.Add(ref _dropped[((int)kind * ReasonCount) + (int)reason], frames);
        FramesDroppedCounter.Add(frames, KindTags[(int)kind], new KeyValuePair<string, object?>("reason", ReasonNames[(int)reason]));
    }

    internal void OnAuthenticationFailure(TransportKind kind)
    {
        OnDropped(kind, DropReason.Unauthenticated);
        AuthenticationFailuresCounter.Add(1, KindTags[(int)kind]);
    }

    internal void OnConnectionOpened() => Interlocked.Increment(ref _connectionsOpened);

    internal void OnConnectionAccepted() => Interlocked.Increment(ref _connectionsAccepted);

    internal void OnConnectionRefused() => Interlocked.Increment(ref _connectionsRefused);

    internal void OnConnectFailure() => Interlocked.Increment(ref _connectFailures);
}
