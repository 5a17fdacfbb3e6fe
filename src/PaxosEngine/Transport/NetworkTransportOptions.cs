using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Transport;

/// <summary>
/// Settings of a <see cref="NetworkTransport"/>. Defaults follow PhxPaxos's normal (not large-value) mode.
/// Read once by the constructor; later changes have no effect.
/// </summary>
public sealed class NetworkTransportOptions
{
    /// <summary>Length of the authentication tag appended to every frame when <see cref="AuthenticationKey"/> is set: 16 bytes.</summary>
    public const int AuthenticationTagLength = 16;

    /// <summary>Shortest accepted <see cref="AuthenticationKey"/>: 16 bytes.</summary>
    public const int MinAuthenticationKeyLength = 16;

    /// <summary>Largest UDP payload over IPv4.</summary>
    internal const int MaxUdpPayload = 65507;

    /// <summary>
    /// This node. Its address and port are where UDP and TCP listen (the same port number for both, as PhxPaxos);
    /// peers reply to this port whatever source port our datagrams carry.
    /// </summary>
    public NodeId LocalNode { get; set; }

    /// <summary>Frames larger than this many bytes go by TCP. Default 4096 (PhxPaxos <c>iUDPMaxSize</c>).</summary>
    public int UdpMaxSize { get; set; } = 4096;

    /// <summary>
    /// Whether frames for one peer that a thread sends in one burst (a loop handling the messages queued for it, the
    /// receive thread handling datagrams already waiting) leave in one datagram: <c>[int32 0x31425850][uint16 count]</c>
    /// then <c>[uint16 length][frame]</c> per frame, at most <see cref="UdpMaxSize"/> bytes. Default false: one PhxPaxos
    /// frame per datagram, which PhxPaxos nodes read. Every node of this engine reads such datagrams whatever this
    /// option says; turn it on only when no member is a PhxPaxos node (a PhxPaxos node drops them as addressed to an
    /// unknown group). Fewer datagrams mean fewer system calls, fewer wake-ups and less CPU per chosen value when many
    /// groups are busy; a burst of one frame per peer still goes as a plain frame.
    /// </summary>
    public bool CoalesceDatagrams { get; set; }

    /// <summary>
    /// Whether, on Linux, the small frames a thread sends in one burst leave with one <c>sendmmsg</c> call and the
    /// receive thread takes every datagram waiting on its socket with one <c>recvmmsg</c> call. Default true. Each
    /// frame stays one PhxPaxos datagram, so PhxPaxos nodes read them as ever; only system calls and wake-ups are
    /// saved. Elsewhere, or when false, every datagram has its own call. With <see cref="CoalesceDatagrams"/> a
    /// burst's frames for one peer share a datagram instead, and received datagrams still come in batches.
    /// </summary>
    public bool BatchDatagrams { get; set; } = true;

    /// <summary>Largest frame sent or accepted, in bytes. Default <see cref="FrameCodec.DefaultMaxFrameLength"/>.</summary>
    public int MaxFrameLength { get; set; } = FrameCodec.DefaultMaxFrameLength;

    /// <summary>Number of TCP read threads and, separately, of TCP write threads. Default 1 each.</summary>
    public int TcpIoThreadCount { get; set; } = 1;

    /// <summary>Most frames queued for one TCP destination; more are dropped. Default 10240 (<c>TCP_QUEUE_MAXLEN</c>).</summary>
    public int TcpQueueMaxFrames { get; set; } = 10240;

    /// <summary>Most bytes queued for one TCP destination; more are dropped. Default 200 MiB (<c>MAX_QUEUE_MEM_SIZE</c>).</summary>
    public long TcpQueueMaxBytes { get; set; } = 200L * 1024 * 1024;

    /// <summary>A TCP frame queued longer than this is dropped instead of sent. Default 5000 ms (<c>TCP_OUTQUEUE_DROP_TIMEMS</c>).</summary>
    public TimeSpan TcpQueueDropTime { get; set; } = TimeSpan.FromMilliseconds(5000);

    /// <summary>First wait before reconnecting after a TCP error; doubles per failure up to <see cref="MaxReconnectBackoff"/>. Default 200 ms.</summary>
    public TimeSpan ReconnectBackoff { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Longest wait between reconnect attempts. Default 2 s.</summary>
    public TimeSpan MaxReconnectBackoff { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>A TCP connect that has not completed in this time is abandoned and retried. Default 3 s.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>Most accepted (incoming) TCP connections at once; further ones are closed at once. Default 1024.</summary>
    public int MaxIncomingConnections { get; set; } = 1024;

    /// <summary>
    /// A drop list for fault injection (testing only): frames to or from the peers it lists are dropped and
    /// counted as <see cref="DropReason.Blocked"/>. Default null: nothing is filtered.
    /// </summary>
    public PeerFilter? PeerFilter { get; set; }

    /// <summary>
    /// The cluster secret that authenticates frames between nodes, at least <see cref="MinAuthenticationKeyLength"/>
    /// bytes; null (the default) sends and accepts plain PhxPaxos frames. Copied by the constructor.
    /// </summary>
    /// <remarks>
    /// <para>When set, every frame carries a tag: the first <see cref="AuthenticationTagLength"/> bytes of
    /// HMAC-SHA256(key, frame), where frame is the PhxPaxos frame <c>[group index][header length][Header][body][crc]</c>.
    /// A UDP datagram is <c>[frame][tag]</c>; a TCP message is <c>[uint32 big-endian (frame + tag + 4)][frame][tag]</c>,
    /// the length prefix covering the tag. Frames whose tag is missing or wrong are refused before they reach the
    /// node, counted in <see cref="TransportStatistics.AuthenticationFailures"/> and reported in a rate-limited
    /// warning; a TCP connection carrying one is closed. Frames up to <see cref="UdpMaxSize"/> still go by UDP
    /// (at most 65491 bytes, so that frame and tag fit in a datagram).</para>
    /// <para>All nodes must share the key: a node without it (or a PhxPaxos C++ node) can neither be heard nor
    /// hear the others. The tag authenticates the origin (some holder of the key), not freshness: a recorded
    /// frame can be replayed, which Paxos treats as a duplicate message.</para>
    /// </remarks>
    public byte[]? AuthenticationKey { get; set; }

    /// <summary>Logger; defaults to none.</summary>
    public ILogger Logger { get; set; } = NullLogger.Instance;

    internal void Validate()
    {
        if (LocalNode.IsNull)
        {
            throw new ArgumentException("NetworkTransportOptions.LocalNode must be set to this node's ip:port.", nameof(LocalNode));
        }

        if (LocalNode.Port == 0)
        {
            throw new ArgumentException($"NetworkTransportOptions.LocalNode {LocalNode} needs a fixed port: peers reply to the port in the node id.", nameof(LocalNode));
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(MaxFrameLength, FrameCodec.PrefixLength + FrameCodec.ChecksumLength, nameof(MaxFrameLength));
        ArgumentOutOfRangeException.ThrowIfNegative(UdpMaxSize, nameof(UdpMaxSize));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(UdpMaxSize, 65507, nameof(UdpMaxSize));
        ArgumentOutOfRangeException.ThrowIfLessThan(TcpIoThreadCount, 1, nameof(TcpIoThreadCount));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(TcpIoThreadCount, 64, nameof(TcpIoThreadCount));
        ArgumentOutOfRangeException.ThrowIfLessThan(TcpQueueMaxFrames, 1, nameof(TcpQueueMaxFrames));
        ArgumentOutOfRangeException.ThrowIfLessThan(TcpQueueMaxBytes, 1, nameof(TcpQueueMaxBytes));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(TcpQueueDropTime, TimeSpan.Zero, nameof(TcpQueueDropTime));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(ReconnectBackoff, TimeSpan.Zero, nameof(ReconnectBackoff));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxReconnectBackoff, ReconnectBackoff, nameof(MaxReconnectBackoff));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(ConnectTimeout, TimeSpan.Zero, nameof(ConnectTimeout));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxIncomingConnections, 1, nameof(MaxIncomingConnections));
        ArgumentNullException.ThrowIfNull(Logger, nameof(Logger));
        if (AuthenticationKey is { Length: < MinAuthenticationKeyLength })
        {
            // Never the key itself, nor its length: only that it is too short.
            throw new ArgumentException($"NetworkTransportOptions.AuthenticationKey is shorter than {MinAuthenticationKeyLength} bytes; use a random secret of at least {MinAuthenticationKeyLength} (better 32) bytes.", nameof(AuthenticationKey));
        }
    }
}
