using System.Buffers;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Orleans.Paxos.Engine.Groups;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Transport;

/// <content>
/// UDP: one receive thread on the node's port; datagrams are sent by the calling thread from one socket on an
/// ephemeral port (a UDP send is one non-blocking system call, so a queue and a send thread would only add a
/// thread hand-off per message).
/// </content>
public sealed partial class NetworkTransport
{
    /// <summary>Largest UDP payload plus headroom; the receive buffer PhxPaxos uses.</summary>
    private const int UdpReceiveBufferLength = 65536;

    /// <summary>Fallback wake-up of the receive thread if the stop datagram is lost.</summary>
    private const int UdpReceiveTimeoutMs = 500;

    /// <summary>Beyond this many cached destination addresses the cache is cleared (bounds memory).</summary>
    private const int MaxCachedUdpAddresses = 4096;

    private Socket? _udpReceive;
    private Socket? _udpSend;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<NodeId, SocketAddress> _udpAddresses = new();

    private void OpenUdp()
    {
        // Bound to the node's own ip:port, and first, so that a second transport on the same port fails here
        // (UDP without SO_REUSEADDR cannot share a port).
        _udpReceive = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp)
        {
            ReceiveTimeout = UdpReceiveTimeoutMs,
            ReceiveBufferSize = 4 * 1024 * 1024,
        };
        _udpReceive.Bind(LocalNode.EndPoint);

        // PhxPaxos sends every datagram from one separate socket; its source port means nothing to peers.
        // Non-blocking: when the socket's send buffer is full the datagram is dropped (and counted), as the
        // network may drop it anyway, rather than stalling a group's loop.
        _udpSend = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp)
        {
            SendBufferSize = 4 * 1024 * 1024,
            Blocking = false,
        };
        _udpSend.Bind(new IPEndPoint(LocalNode.Address, 0));
        ProbeDatagramBatches();
    }

    /// <summary>A receive that returns sooner than this found its datagram waiting (it did not sleep).</summary>
    private static readonly long ImmediateReceiveTicks = Stopwatch.Frequency / 250_000; // 4 µs

    /// <summary>Receives in a row that found a datagram waiting beyond which the receive thread counts as saturated.</summary>
    private const int SaturatedAfterImmediateReceives = 32;

    /// <summary>Receives in a row that did not sleep (receive thread only).</summary>
    private int _immediateReceives;

    /// <summary>
    /// Whether the receive thread is saturated: its last receives all found datagrams waiting. The node then queues
    /// every message for its group's loop instead of handling it on this thread (asked on the receive thread).
    /// </summary>
    bool IInlineSource.IsSaturated => _immediateReceives >= SaturatedAfterImmediateReceives;

    private void StartUdpThreads() => StartThread(UdpReceiveLoop, $"paxos-udp-recv {LocalNode}");

    /// <summary>Sends one frame as one datagram on the calling thread. Thread-safe.</summary>
    private bool SendUdp(NodeId destination, byte[] frame)
    {
        if (_authenticator is null)
        {
            return SendDatagram(destination, frame, frames: 1, frame.Length);
        }

        // With authentication a datagram is the frame and its tag, assembled in a pooled buffer.
        var length = frame.Length + _tagLength;
        var datagram = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            frame.CopyTo(datagram, 0);
            _authenticator.WriteTag(frame, datagram.AsSpan(frame.Length, _tagLength));
            return SendDatagram(destination, datagram.AsSpan(0, length), frames: 1, frame.Length);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(datagram);
        }
    }

    /// <summary>Sends a bundle of <paramref name="frames"/> frames, <paramref name="length"/> bytes of <paramref name="bundle"/> (which has room for a tag after them).</summary>
    private bool SendBundle(NodeId destination, byte[] bundle, int length, int frames)
    {
        var datagramLength = length;
        if (_authenticator is not null)
        {
            _authenticator.WriteTag(bundle.AsSpan(0, length), bundle.AsSpan(length, _tagLength));
            datagramLength += _tagLength;
        }

        return SendDatagram(destination, bundle.AsSpan(0, datagramLength), frames, length - BundleHeaderLength - (frames * BundleFramePrefixLength));
    }

    /// <summary>Sends one datagram carrying <paramref name="frames"/> frames of <paramref name="frameBytes"/> bytes in all; counts it. Thread-safe.</summary>
    private bool SendDatagram(NodeId destination, ReadOnlySpan<byte> datagram, int frames, int frameBytes)
    {
        var address = UdpAddress(destination);
        SocketError error;
        try
        {
            error = _udpSend!.SendTo(datagram, SocketFlags.None, address) == datagram.Length ? SocketError.Success : SocketError.MessageSize;
        }
        catch (SocketException ex)
        {
            error = ex.SocketErrorCode;
        }
        catch (ObjectDisposedException)
        {
            // Dispose closed the socket between the caller's state check and this send.
            Statistics.OnDropped(TransportKind.Udp, DropReason.Stopped, frames);
            return false;
        }

        if (error == SocketError.Success)
        {
            Statistics.OnSent(TransportKind.Udp, frames, frameBytes);
            Statistics.OnDatagramSent();
            return true;
        }

        if (error is SocketError.WouldBlock or SocketError.NoBufferSpaceAvailable)
        {
            Statistics.OnDropped(TransportKind.Udp, DropReason.QueueFull, frames);
        }
        else
        {
            Statistics.OnDropped(TransportKind.Udp, DropReason.SendError, frames);
            NetworkTransportLog.UdpSendFailed(_logger, LocalNode, destination, error);
        }

        return false;
    }

    private void UdpReceiveLoop()
    {
        var socket = _udpReceive!;
        if (_batchDatagrams)
        {
            UdpReceiveBatches(socket);
            return;
        }

        var buffer = ArrayPool<byte>.Shared.Rent(UdpReceiveBufferLength);
        try
        {
            while (!_stopping)
            {
                // The error-code overload: timeouts (our stop check) cost no exception.
                var started = Stopwatch.GetTimestamp();
                var length = socket.Receive(buffer.AsSpan(0, UdpReceiveBufferLength), SocketFlags.None, out var error);
                _immediateReceives = Stopwatch.GetTimestamp() - started < ImmediateReceiveTicks ? _immediateReceives + 1 : 0;
                if (_stopping)
                {
                    break;
                }

                if (error != SocketError.Success)
                {
                    OnReceiveError(error);
                    continue;
                }

                HandleDatagram(buffer.AsSpan(0, length));

                // After every datagram, handled or dropped: nothing stays held while this thread waits.
                SendHeldUnlessMoreWaiting(socket, moreInBatch: false);
            }
        }
        catch (ObjectDisposedException) when (_stopping)
        {
            // Only reached when a sink disposed the transport from this very thread; the loop is over.
            return;
        }
        finally
        {
            // Stopping: what is still held is counted as dropped (the socket is closing).
            SendHeldFromReceiveThread();
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>The receive loop with <c>recvmmsg</c>: every datagram already waiting comes with one call.</summary>
    private void UdpReceiveBatches(Socket socket)
    {
        var batch = new ReceiveBatch();
        try
        {
            while (!_stopping)
            {
                var started = Stopwatch.GetTimestamp();
                var count = batch.Receive(socket, out var error, out var errno);
                if (_stopping)
                {
                    break;
                }

                if (error != SocketError.Success)
                {
                    _immediateReceives = 0;
                    SendHeldFromReceiveThread();
                    if (error == SocketError.WouldBlock)
                    {
                        // The receive timeout passed (or the socket does not block): wait here for data or the
                        // next stop check, so that a socket left non-blocking cannot make this loop spin.
                        socket.Poll(UdpReceiveTimeoutMs * 1000, SelectMode.SelectRead);
                    }
                    else if (error != SocketError.Interrupted)
                    {
                        // A lasting error must not spin the thread nor flood the log.
                        NetworkTransportLog.UdpBatchReceiveFailed(_logger, LocalNode, errno, ReceiveErrorDelayMs);
                        Thread.Sleep(ReceiveErrorDelayMs);
                    }

                    continue;
                }

                // Saturated means the datagrams were waiting: a call that did not sleep (given the time to copy
                // each datagram it returned) found the first one there, and those behind it were there too.
                Interlocked.Increment(ref _receiveBatchCalls);
                if (count > Interlocked.Read(ref _largestReceiveBatch))
                {
                    Interlocked.Exchange(ref _largestReceiveBatch, count);
                }

                var firstWaited = Stopwatch.GetTimestamp() - started < ImmediateReceiveTicks * count;
                _immediateReceives = firstWaited ? _immediateReceives + count : count - 1;
                for (var i = 0; i < count && !_stopping; i++)
                {
                    HandleDatagram(batch.Datagram(i));
                    SendHeldUnlessMoreWaiting(socket, moreInBatch: i < count - 1);
                }
            }
        }
        catch (ObjectDisposedException) when (_stopping)
        {
            return;
        }
        finally
        {
            SendHeldFromReceiveThread();
        }
    }

    /// <summary>A receive that returned no datagram: sends what is held; logs errors other than timeouts and interruptions.</summary>
    private void OnReceiveError(SocketError error)
    {
        SendHeldFromReceiveThread();
        if (error is not (SocketError.WouldBlock or SocketError.TimedOut or SocketError.Interrupted or SocketError.ConnectionReset))
        {
            NetworkTransportLog.UdpReceiveFailed(_logger, LocalNode, error);
        }
    }

    /// <summary>Checks one received datagram and delivers its frame (or a bundle's frames).</summary>
    private void HandleDatagram(Span<byte> received)
    {
        var length = received.Length;
        if (length > _maxMessageLength)
        {
            Statistics.OnDropped(TransportKind.Udp, DropReason.TooLarge);
        }
        else if (length <= FrameCodec.PrefixLength + _tagLength)
        {
            // PhxPaxos drops a message of 6 bytes or fewer: it cannot hold a header.
            Statistics.OnDropped(TransportKind.Udp, DropReason.BadLength);
        }
        else if (_authenticator is null || Authenticate(received, TransportKind.Udp, remote: null))
        {
            // Frames this thread sends while handling datagrams that are already waiting go together.
            HoldSends();
            var datagram = received[..(length - _tagLength)];
            if (IsBundle(datagram))
            {
                DeliverBundle(datagram);
            }
            else
            {
                Deliver(datagram, TransportKind.Udp);
            }
        }
    }

    private void WakeUdpThreads()
    {
        // An empty datagram to our own port wakes the receive thread at once instead of after its timeout.
        try
        {
            _udpSend?.SendTo([], SocketFlags.None, LocalNode.EndPoint);
        }
        catch (SocketException ex)
        {
            NetworkTransportLog.UdpSendFailed(_logger, LocalNode, LocalNode, ex.SocketErrorCode);
        }
    }

    private void CloseUdpSockets()
    {
        _udpReceive?.Dispose();
        _udpSend?.Dispose();
    }
}
