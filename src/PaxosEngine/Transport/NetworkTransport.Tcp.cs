using System.Collections.Concurrent;
using System.Net.Sockets;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Transport;

/// <content>TCP: the listener, the read loops and the write loops.</content>
/// <remarks>
/// Thread model, chosen so that the thread count stays fixed however many peers connect: a fixed set of read
/// loops and write loops, each one dedicated thread multiplexing its non-blocking sockets with
/// <c>Socket.Select</c> (poll(2) underneath, as PhxPaxos's epoll loops). A loop blocks in Select until a
/// socket is ready or its <see cref="WakeSocket"/> is poked (new frames, new connection, stop), so an idle
/// transport burns no CPU and a down or slow peer never blocks the other destinations of its write loop.
/// Selecting over all sockets of a loop each round is linear in their number; a Paxos group has a handful of
/// peers, and <see cref="NetworkTransportOptions.MaxIncomingConnections"/> bounds the accepted ones.
/// </remarks>
public sealed partial class NetworkTransport
{
    private readonly ConcurrentDictionary<NodeId, TcpDestination> _destinations = new();
    private readonly object _destinationsGate = new();
    private Socket? _listener;
    private TcpReadLoop[] _readLoops = [];
    private TcpWriteLoop[] _writeLoops = [];
    private int _nextWriteLoop;
    private int _incomingCount;

    private void OpenTcp()
    {
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        if (OperatingSystem.IsLinux())
        {
            // Plain SO_REUSEADDR (SOL_SOCKET = 1, SO_REUSEADDR = 2) so that a restarted node can listen again while
            // its old connections sit in TIME_WAIT. Not SocketOptionName.ReuseAddress: on Unix .NET also sets
            // SO_REUSEPORT with it, which would let two live nodes share the port.
            _listener.SetRawSocketOption(1, 2, [1, 0, 0, 0]);
        }

        _listener.Bind(LocalNode.EndPoint);
        _listener.Listen(512);
        _listener.Blocking = false;

        _readLoops = new TcpReadLoop[_ioThreadCount];
        _writeLoops = new TcpWriteLoop[_ioThreadCount];
        for (var i = 0; i < _ioThreadCount; i++)
        {
            _readLoops[i] = new TcpReadLoop(this, i == 0 ? _listener : null);
            _writeLoops[i] = new TcpWriteLoop(this);
        }
    }

    private void StartTcpThreads()
    {
        for (var i = 0; i < _ioThreadCount; i++)
        {
            StartThread(_readLoops[i].Run, $"paxos-tcp-read{i} {LocalNode}");
            StartThread(_writeLoops[i].Run, $"paxos-tcp-write{i} {LocalNode}");
        }
    }

    private bool EnqueueTcp(NodeId destination, byte[] frame)
    {
        if (!_destinations.TryGetValue(destination, out var target))
        {
            lock (_destinationsGate)
            {
                if (!_destinations.TryGetValue(destination, out target))
                {
                    // One write-only connection per destination, destinations spread round-robin over the write loops.
                    var loop = _writeLoops[_nextWriteLoop++ % _writeLoops.Length];
                    target = new TcpDestination(this, loop, destination);
                    _destinations[destination] = target;
                    loop.Add(target);
                }
            }
        }

        return target.Enqueue(frame);
    }

    private void WakeTcpThreads()
    {
        foreach (var loop in _readLoops)
        {
            loop?.Wake();
        }

        foreach (var loop in _writeLoops)
        {
            loop?.Wake();
        }
    }

    private void CloseTcpSockets()
    {
        _listener?.Dispose();
        // Entries are null when Start failed part-way through creating the loops.
        foreach (var loop in _readLoops)
        {
            loop?.Dispose();
        }

        foreach (var loop in _writeLoops)
        {
            loop?.Dispose();
        }
    }

    private void DropTcpQueuesOnStop()
    {
        foreach (var destination in _destinations.Values)
        {
            destination.DropAll(DropReason.Stopped);
        }
    }

    /// <summary>Picks the read loop with the fewest connections, as PhxPaxos does.</summary>
    private TcpReadLoop LeastLoadedReadLoop()
    {
        var best = _readLoops[0];
        for (var i = 1; i < _readLoops.Length; i++)
        {
            if (_readLoops[i].ConnectionCount < best.ConnectionCount)
            {
                best = _readLoops[i];
            }
        }

        return best;
    }
}
