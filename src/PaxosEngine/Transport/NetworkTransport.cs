using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Groups;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Transport;

/// <summary>
/// The default PhxPaxos transport over real sockets. Frames up to <see cref="NetworkTransportOptions.UdpMaxSize"/>
/// go as one UDP datagram each; larger frames, and frames sent with <see cref="TransportKind.Tcp"/>, go over a TCP
/// stream as <c>[uint32 big-endian (length + 4)][frame]</c>. UDP and TCP listen on the port of the node id.
/// Thread-safe.
/// </summary>
/// <remarks>
/// <para>Threads (all dedicated, none from the thread pool; the count is fixed at start):
/// one UDP receiver, one UDP sender, <see cref="NetworkTransportOptions.TcpIoThreadCount"/> TCP readers (the first
/// also accepts) and as many TCP writers.</para>
/// <para>As in PhxPaxos a TCP socket is read-only or write-only: connections this node opens carry its frames to
/// one destination each; connections it accepts only bring frames in. UDP datagrams leave from one ephemeral port;
/// peers answer to the port in our node id.</para>
/// <para>Every queue is bounded; frames beyond the caps, too large, queued too long or lost with a failed
/// connection are dropped and counted in <see cref="Statistics"/>. Paxos tolerates loss by retrying.</para>
/// </remarks>
public sealed partial class NetworkTransport : ITransport, IInlineSource
{
    private const int StateNew = 0;
    private const int StateStarted = 1;
    private const int StateStopped = 2;
    private const int ThreadJoinTimeoutMs = 10_000;

    /// <summary>At most one authentication-failure warning per this many seconds; the others are summed into it.</summary>
    private const int AuthenticationWarningIntervalSeconds = 10;

    private readonly ILogger _logger;
    private readonly int _udpMaxSize;
    private readonly int _maxFrameLength;
    private readonly int _ioThreadCount;
    private readonly int _tcpQueueMaxFrames;
    private readonly long _tcpQueueMaxBytes;
    private readonly long _tcpDropTimeTicks;
    private readonly TimeSpan _reconnectBackoff;
    private readonly TimeSpan _maxReconnectBackoff;
    private readonly long _connectTimeoutTicks;
    private readonly int _maxIncomingConnections;
    private readonly PeerFilter? _peerFilter;
    private readonly FrameAuthenticator? _authenticator;
    private readonly int _tagLength;

    /// <summary>Largest message accepted from the network: a frame and, with authentication, its tag.</summary>
    private readonly int _maxMessageLength;
    private long _authenticationFailuresUnreported;
    private long _nextAuthenticationWarningAt;
    private readonly object _lifecycle = new();
    private readonly List<Thread> _threads = [];
    private IFrameSink? _sink;
    private int _state;
    private volatile bool _stopping;

    /// <summary>Creates a transport for <see cref="NetworkTransportOptions.LocalNode"/>; nothing is bound until <see cref="Start"/>.</summary>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public NetworkTransport(NetworkTransportOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        LocalNode = options.LocalNode;
        _logger = options.Logger;
        if (options.AuthenticationKey is { } key)
        {
            _authenticator = new FrameAuthenticator(key);
            _tagLength = FrameAuthenticator.TagLength;
        }

        // With a tag the datagram must still fit in UDP's limit; larger frames go by TCP.
        _udpMaxSize = Math.Min(options.UdpMaxSize, NetworkTransportOptions.MaxUdpPayload - _tagLength);
        _maxFrameLength = options.MaxFrameLength;
        _maxMessageLength = (int)Math.Min((long)_maxFrameLength + _tagLength, int.MaxValue - TcpFraming.PrefixLength);
        _ioThreadCount = options.TcpIoThreadCount;
        _tcpQueueMaxFrames = options.TcpQueueMaxFrames;
        _tcpQueueMaxBytes = options.TcpQueueMaxBytes;
        _tcpDropTimeTicks = ToStopwatchTicks(options.TcpQueueDropTime);
        _reconnectBackoff = options.ReconnectBackoff;
        _maxReconnectBackoff = options.MaxReconnectBackoff;
        _connectTimeoutTicks = ToStopwatchTicks(options.ConnectTimeout);
        _maxIncomingConnections = options.MaxIncomingConnections;
        _peerFilter = options.PeerFilter;
        _coalesce = options.CoalesceDatagrams;
        _batchDatagrams = options.BatchDatagrams && OperatingSystem.IsLinux() && Environment.Is64BitProcess;
    }

    /// <inheritdoc />
    public NodeId LocalNode { get; }

    /// <summary>Accepted (incoming) TCP connections open right now.</summary>
    public int IncomingConnections => Volatile.Read(ref _incomingCount);

    /// <summary>Whether frames are authenticated (<see cref="NetworkTransportOptions.AuthenticationKey"/> is set).</summary>
    public bool IsAuthenticating => _authenticator is not null;

    /// <summary>Counters of this transport (also published on the <c>Orleans.Paxos</c> meter).</summary>
    public TransportStatistics Statistics { get; } = new();

    /// <summary>
    /// Binds UDP and TCP on the node's address and port and starts the transport threads.
    /// </summary>
    /// <exception cref="SocketException">The port is taken (UDP or TCP); nothing is left open.</exception>
    /// <exception cref="InvalidOperationException">Already started.</exception>
    /// <exception cref="ObjectDisposedException">Disposed.</exception>
    public void Start(IFrameSink sink)
    {
        ArgumentNullException.ThrowIfNull(sink);
        lock (_lifecycle)
        {
            ObjectDisposedException.ThrowIf(_state == StateStopped, this);
            if (_state == StateStarted)
            {
                throw new InvalidOperationException($"Transport {LocalNode} is already started.");
            }

            _sink = sink;
            try
            {
                OpenUdp();
                OpenTcp();
            }
            catch (SocketException ex)
            {
                NetworkTransportLog.BindFailed(_logger, ex, LocalNode, LocalNode.EndPoint);
                CloseSockets();
                throw;
            }

            StartUdpThreads();
            StartTcpThreads();
            Volatile.Write(ref _state, StateStarted);
        }

        NetworkTransportLog.Started(_logger, LocalNode, LocalNode.Port, _udpMaxSize, _ioThreadCount, IsAuthenticating ? "on" : "off");
    }

    /// <inheritdoc />
    public bool Send(NodeId destination, byte[] frame, TransportKind preferred)
    {
        ArgumentNullException.ThrowIfNull(frame);
        var kind = preferred == TransportKind.Tcp || frame.Length > _udpMaxSize ? TransportKind.Tcp : TransportKind.Udp;
        if (Volatile.Read(ref _state) != StateStarted || _stopping)
        {
            Statistics.OnDropped(kind, DropReason.Stopped);
            return false;
        }

        if (frame.Length > _maxFrameLength)
        {
            // PhxPaxos drops oversize messages silently; here they are at least counted.
            Statistics.OnDropped(kind, DropReason.TooLarge);
            return false;
        }

        if (_peerFilter is { } filter && filter.DropsOutbound(destination))
        {
            Statistics.OnDropped(kind, DropReason.Blocked);
            return false;
        }

        if (kind == TransportKind.Tcp)
        {
            return EnqueueTcp(destination, frame);
        }

        return TryHold(destination, frame) || SendUdp(destination, frame);
    }

    /// <summary>Stops every thread and closes every socket; frames still queued are dropped. Idempotent; does not wait on peers.</summary>
    public void Dispose()
    {
        lock (_lifecycle)
        {
            if (_state == StateStopped)
            {
                return;
            }

            var wasStarted = _state == StateStarted;
            Volatile.Write(ref _state, StateStopped);
            _stopping = true;
            if (!wasStarted)
            {
                return;
            }
        }

        WakeUdpThreads();
        WakeTcpThreads();
        foreach (var thread in _threads)
        {
            // A sink may dispose the transport from one of its threads; that thread exits when it returns.
            if (thread != Thread.CurrentThread && !thread.Join(ThreadJoinTimeoutMs))
            {
                NetworkTransportLog.ThreadDidNotStop(_logger, LocalNode, thread.Name, ThreadJoinTimeoutMs);
            }
        }

        CloseSockets();
        DropTcpQueuesOnStop();
        NetworkTransportLog.Stopped(_logger, LocalNode, Statistics);
    }

    private static long ToStopwatchTicks(TimeSpan time) => (long)(time.TotalSeconds * Stopwatch.Frequency);

    private void StartThread(ThreadStart body, string name)
    {
        var thread = new Thread(body) { IsBackground = true, Name = name };
        _threads.Add(thread);
        thread.Start();
    }

    /// <summary>Hands a complete frame to the sink; the sink must not take the transport thread down.</summary>
    private void Deliver(ReadOnlySpan<byte> frame, TransportKind via)
    {
        if (_peerFilter is { } filter && filter.DropsInbound(frame, _maxFrameLength))
        {
            Statistics.OnDropped(via, DropReason.Blocked);
            return;
        }

        Statistics.OnReceived(via, frame.Length);
        try
        {
            _sink!.OnFrame(frame, via);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // The sink belongs to the node; a bug there must cost one frame, not the receive thread.
            NetworkTransportLog.SinkFailed(_logger, ex, LocalNode, via, frame.Length);
        }
    }

    /// <summary>
    /// Checks the tag at the end of <paramref name="message"/> (frame then tag); on failure counts it and warns at
    /// most every <see cref="AuthenticationWarningIntervalSeconds"/> seconds. Never logs the tag or the key.
    /// </summary>
    private bool Authenticate(ReadOnlySpan<byte> message, TransportKind via, EndPoint? remote)
    {
        var frameLength = message.Length - _tagLength;
        if (frameLength >= 0 && _authenticator!.Verify(message[..frameLength], message[frameLength..]))
        {
            return true;
        }

        Statistics.OnAuthenticationFailure(via);
        Interlocked.Increment(ref _authenticationFailuresUnreported);
        var now = Stopwatch.GetTimestamp();
        var next = Volatile.Read(ref _nextAuthenticationWarningAt);
        if (now >= next
            && Interlocked.CompareExchange(ref _nextAuthenticationWarningAt, now + (AuthenticationWarningIntervalSeconds * Stopwatch.Frequency), next) == next)
        {
            var count = Interlocked.Exchange(ref _authenticationFailuresUnreported, 0);
            NetworkTransportLog.AuthenticationFailed(_logger, LocalNode, count, via, remote?.ToString() ?? "a UDP sender", AuthenticationWarningIntervalSeconds);
        }

        return false;
    }

    private void CloseSockets()
    {
        CloseUdpSockets();
        CloseTcpSockets();
    }

    /// <summary>A UDP socket connected to itself on loopback: a datagram to it wakes a thread blocked in <c>Socket.Select</c>.</summary>
    private sealed class WakeSocket : IDisposable
    {
        private readonly byte[] _scratch = new byte[16];
        private int _pending;

        public WakeSocket()
        {
            Socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            try
            {
                Socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
                Socket.Connect(Socket.LocalEndPoint!);
                Socket.Blocking = false;
            }
            catch (SocketException)
            {
                Socket.Dispose();
                throw;
            }
        }

        public Socket Socket { get; }

        /// <summary>Wakes the owner; coalesced until the owner calls <see cref="Drain"/>.</summary>
        public void Wake()
        {
            if (Interlocked.Exchange(ref _pending, 1) == 0)
            {
                // Non-blocking send of one byte to ourselves; if the buffer is full the owner is awake anyway.
                Socket.Send(_scratch.AsSpan(0, 1), SocketFlags.None, out _);
            }
        }

        /// <summary>Consumes pending wake-ups; the owner looks for work after this call, so none is missed.</summary>
        /// <remarks>
        /// The bytes are read before the flag is cleared: cleared first, a concurrent <see cref="Wake"/> could set it
        /// and have its byte swallowed here, leaving the flag set with nothing to read, and every later wake-up lost.
        /// </remarks>
        public void Drain()
        {
            SocketError error;
            do
            {
                Socket.Receive(_scratch, 0, _scratch.Length, SocketFlags.None, out error);
            }
            while (error == SocketError.Success);
            Volatile.Write(ref _pending, 0);
        }

        public void Dispose() => Socket.Dispose();
    }
}
