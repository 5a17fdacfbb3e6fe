using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Transport;

/// <content>UDP: one receive thread on the node's port, one send thread on an ephemeral port.</content>
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
    private SendQueue<(NodeId Destination, byte[] Frame)>? _udpQueue;

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
        _udpSend = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp)
        {
            SendBufferSize = 4 * 1024 * 1024,
        };
        _udpSend.Bind(new IPEndPoint(LocalNode.Address, 0));
        _udpQueue = new SendQueue<(NodeId, byte[])>(_udpQueueMaxFrames);
    }

    private void StartUdpThreads()
    {
        StartThread(UdpReceiveLoop, $"paxos-udp-recv {LocalNode}");
        StartThread(UdpSendLoop, $"paxos-udp-send {LocalNode}");
    }

    private bool EnqueueUdp(NodeId destination, byte[] frame)
    {
        if (_udpQueue!.TryAdd((destination, frame)))
        {
            return true;
        }

        // Full, or Dispose completed the queue between our state check and the add.
        Statistics.OnDropped(TransportKind.Udp, _stopping ? DropReason.Stopped : DropReason.QueueFull);
        return false;
    }

    private void UdpReceiveLoop()
    {
        var socket = _udpReceive!;
        var buffer = ArrayPool<byte>.Shared.Rent(UdpReceiveBufferLength);
        try
        {
            while (!_stopping)
            {
                // The error-code overload: timeouts (our stop check) cost no exception.
                var length = socket.Receive(buffer.AsSpan(0, UdpReceiveBufferLength), SocketFlags.None, out var error);
                if (_stopping)
                {
                    break;
                }

                if (error != SocketError.Success)
                {
                    if (error is not (SocketError.WouldBlock or SocketError.TimedOut or SocketError.Interrupted or SocketError.ConnectionReset))
                    {
                        NetworkTransportLog.UdpReceiveFailed(_logger, LocalNode, error);
                    }

                    continue;
                }

                if (length > _maxMessageLength)
                {
                    Statistics.OnDropped(TransportKind.Udp, DropReason.TooLarge);
                }
                else if (length <= FrameCodec.PrefixLength + _tagLength)
                {
                    // PhxPaxos drops a message of 6 bytes or fewer: it cannot hold a header.
                    Statistics.OnDropped(TransportKind.Udp, DropReason.BadLength);
                }
                else if (_authenticator is null)
                {
                    Deliver(buffer.AsSpan(0, length), TransportKind.Udp);
                }
                else if (Authenticate(buffer.AsSpan(0, length), TransportKind.Udp, remote: null))
                {
                    Deliver(buffer.AsSpan(0, length - _tagLength), TransportKind.Udp);
                }
            }
        }
        catch (ObjectDisposedException) when (_stopping)
        {
            // Only reached when a sink disposed the transport from this very thread; the loop is over.
            return;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void UdpSendLoop()
    {
        var socket = _udpSend!;
        var addresses = new Dictionary<NodeId, SocketAddress>();
        var queue = _udpQueue!;

        // With authentication a datagram is the frame and its tag, assembled here (no allocation per datagram).
        var datagram = _authenticator is null ? null : new byte[_udpMaxSize + _tagLength];
        while (queue.TryTake(out var item))
        {
            var (destination, frame) = item;
            if (_stopping)
            {
                Statistics.OnDropped(TransportKind.Udp, DropReason.Stopped);
                continue;
            }

            if (!addresses.TryGetValue(destination, out var address))
            {
                if (addresses.Count >= MaxCachedUdpAddresses)
                {
                    addresses.Clear();
                }

                address = destination.EndPoint.Serialize();
                addresses.Add(destination, address);
            }

            try
            {
                // The SocketAddress overload sends without allocating an endpoint per datagram.
                if (datagram is null)
                {
                    socket.SendTo(frame, SocketFlags.None, address);
                }
                else
                {
                    frame.CopyTo(datagram, 0);
                    _authenticator!.WriteTag(frame, datagram.AsSpan(frame.Length));
                    socket.SendTo(datagram.AsSpan(0, frame.Length + _tagLength), SocketFlags.None, address);
                }

                Statistics.OnSent(TransportKind.Udp, 1, frame.Length);
            }
            catch (SocketException ex)
            {
                Statistics.OnDropped(TransportKind.Udp, DropReason.SendError);
                NetworkTransportLog.UdpSendFailed(_logger, LocalNode, destination, ex.SocketErrorCode);
            }
        }
    }

    private void WakeUdpThreads()
    {
        _udpQueue?.CompleteAdding();

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

    private void DropUdpQueueOnStop()
    {
        if (_udpQueue is null)
        {
            return;
        }

        var left = 0;
        while (_udpQueue.TryTakeNow(out _))
        {
            left++;
        }

        Statistics.OnDropped(TransportKind.Udp, DropReason.Stopped, left);
    }

    private void CloseUdpSockets()
    {
        _udpReceive?.Dispose();
        _udpSend?.Dispose();
        _udpQueue?.Dispose();
    }
}
