using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Transport;

/// <content>TCP read loops: accepted, read-only connections.</content>
public sealed partial class NetworkTransport
{
    /// <summary>
    /// One dedicated thread reading the accepted connections handed to it (and, for loop 0, accepting).
    /// Everything but <see cref="Hand"/>, <see cref="Wake"/> and <see cref="ConnectionCount"/> is touched by the loop
    /// thread only.
    /// </summary>
    private sealed class TcpReadLoop : IDisposable
    {
        /// <summary>Receive buffer of a connection; grown from the pool only while a larger frame is being read.</summary>
        private const int DefaultBufferLength = 64 * 1024;

        /// <summary>Receives per connection per round, so one busy peer cannot starve the others.</summary>
        private const int ReadsPerRound = 4;

        /// <summary>Safety timeout of the select; wake-ups normally come through the wake socket.</summary>
        private const int SelectTimeoutMicroseconds = 1_000_000;

        private readonly NetworkTransport _owner;
        private readonly Socket? _listener;
        private readonly WakeSocket _wake = new();
        private readonly ConcurrentQueue<Socket> _handoff = new();
        private readonly Dictionary<Socket, Incoming> _connections = [];
        private readonly List<Socket> _checkRead = [];
        private readonly List<Incoming> _toClose = [];
        private int _connectionCount;

        public TcpReadLoop(NetworkTransport owner, Socket? listener)
        {
            _owner = owner;
            _listener = listener;
        }

        public int ConnectionCount => Volatile.Read(ref _connectionCount);

        /// <summary>Gives an accepted socket to this loop (called from the accepting loop).</summary>
        public void Hand(Socket socket)
        {
            Interlocked.Increment(ref _connectionCount);
            _handoff.Enqueue(socket);
            Wake();
        }

        public void Wake()
        {
            try
            {
                _wake.Wake();
            }
            catch (ObjectDisposedException)
            {
                // The transport stopped and closed the wake socket: there is no loop left to wake.
                return;
            }
        }

        public void Run()
        {
            try
            {
                while (!_owner._stopping)
                {
                    while (_handoff.TryDequeue(out var socket))
                    {
                        _connections.Add(socket, new Incoming(socket));
                    }

                    _checkRead.Clear();
                    _checkRead.Add(_wake.Socket);
                    if (_listener is not null)
                    {
                        _checkRead.Add(_listener);
                    }

                    foreach (var socket in _connections.Keys)
                    {
                        _checkRead.Add(socket);
                    }

                    Socket.Select(_checkRead, null, null, SelectTimeoutMicroseconds);
                    if (_owner._stopping)
                    {
                        break;
                    }

                    foreach (var socket in _checkRead)
                    {
                        if (socket == _wake.Socket)
                        {
                            _wake.Drain();
                        }
                        else if (socket == _listener)
                        {
                            AcceptOne();
                        }
                        else if (_connections.TryGetValue(socket, out var connection) && !ReadFrom(connection))
                        {
                            _toClose.Add(connection);
                        }
                    }

                    foreach (var connection in _toClose)
                    {
                        Close(connection);
                    }

                    _toClose.Clear();
                }
            }
            catch (ObjectDisposedException) when (_owner._stopping)
            {
                // A sink stopped the transport from this thread and its sockets were closed under us.
                return;
            }
            finally
            {
                foreach (var connection in _connections.Values)
                {
                    connection.Release();
                    Interlocked.Decrement(ref _owner._incomingCount);
                }

                _connections.Clear();
            }
        }

        public void Dispose()
        {
            _wake.Dispose();
            while (_handoff.TryDequeue(out var socket))
            {
                socket.Dispose();
            }
        }

        private void AcceptOne()
        {
            Socket socket;
            try
            {
                socket = _listener!.Accept();
            }
            catch (SocketException ex)
            {
                // WouldBlock: another wake-up raced us to the pending connection; anything else is the peer's
                // connection failing before we took it. The listener itself stays fine.
                if (ex.SocketErrorCode != SocketError.WouldBlock)
                {
                    NetworkTransportLog.AcceptFailed(_owner._logger, _owner.LocalNode, ex.SocketErrorCode);
                }

                return;
            }

            if (Interlocked.Increment(ref _owner._incomingCount) > _owner._maxIncomingConnections)
            {
                Interlocked.Decrement(ref _owner._incomingCount);
                _owner.Statistics.OnConnectionRefused();
                NetworkTransportLog.IncomingRefused(_owner._logger, _owner.LocalNode, socket.RemoteEndPoint, _owner._maxIncomingConnections);
                socket.Dispose();
                return;
            }

            try
            {
                socket.Blocking = false;
                socket.NoDelay = true;
            }
            catch (SocketException ex)
            {
                // The peer reset the connection before we could set it up.
                Interlocked.Decrement(ref _owner._incomingCount);
                NetworkTransportLog.AcceptFailed(_owner._logger, _owner.LocalNode, ex.SocketErrorCode);
                socket.Dispose();
                return;
            }

            _owner.Statistics.OnConnectionAccepted();
            _owner.LeastLoadedReadLoop().Hand(socket);
        }

        /// <summary>Reads what is available and delivers complete frames; false when the connection must close.</summary>
        private bool ReadFrom(Incoming connection)
        {
            for (var i = 0; i < ReadsPerRound; i++)
            {
                var buffer = connection.Buffer;
                var room = buffer.Length - connection.End;
                var read = connection.Socket.Receive(buffer, connection.End, room, SocketFlags.None, out var error);
                if (error == SocketError.WouldBlock)
                {
                    return true;
                }

                if (error != SocketError.Success || read == 0)
                {
                    // read == 0: the peer closed its write-only side (restart, shutdown); nothing is lost here.
                    NetworkTransportLog.IncomingClosed(_owner._logger, _owner.LocalNode, connection.Remote, error);
                    return false;
                }

                connection.End += read;
                if (!ParseFrames(connection))
                {
                    return false;
                }

                if (read < room)
                {
                    // A short read took everything the socket held: the next select says when more arrives (it
                    // polls readiness as a level, so nothing is missed), which saves a receive that would block.
                    return true;
                }
            }

            return true;
        }

        /// <summary>Delivers every complete frame in the buffer and makes room for the next one.</summary>
        private bool ParseFrames(Incoming connection)
        {
            var buffer = connection.Buffer;
            while (true)
            {
                var available = connection.End - connection.Start;
                if (available < TcpFraming.PrefixLength)
                {
                    break;
                }

                var prefix = buffer.AsSpan(connection.Start, TcpFraming.PrefixLength);
                // With authentication the length covers the frame and its tag, so it can be no shorter than the tag.
                var tagLength = _owner._tagLength;
                if (!TcpFraming.TryReadFrameLength(prefix, _owner._maxMessageLength, out var length) || length < tagLength)
                {
                    // The stream cannot be resynchronised after a bad prefix: drop the connection, as PhxPaxos does.
                    _owner.Statistics.OnDropped(TransportKind.Tcp, DropReason.BadLength);
                    NetworkTransportLog.BadTcpLength(_owner._logger, _owner.LocalNode, connection.Remote, System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(prefix), _owner._maxMessageLength);
                    return false;
                }

                var total = TcpFraming.PrefixLength + length;
                if (available < total)
                {
                    connection.EnsureRoom(total);
                    return true;
                }

                var message = buffer.AsSpan(connection.Start + TcpFraming.PrefixLength, length);
                if (tagLength > 0 && !_owner.Authenticate(message, TransportKind.Tcp, connection.Remote))
                {
                    // A peer without the secret (or a corrupted stream): nothing more from this connection is trusted.
                    return false;
                }

                _owner.Deliver(message[..(length - tagLength)], TransportKind.Tcp);
                connection.Start += total;
                connection.LargestFrame = Math.Max(connection.LargestFrame, total);
            }

            connection.Compact();
            return true;
        }

        private void Close(Incoming connection)
        {
            _connections.Remove(connection.Socket);
            connection.Release();
            Interlocked.Decrement(ref _connectionCount);
            Interlocked.Decrement(ref _owner._incomingCount);
        }

        /// <summary>An accepted connection and its receive buffer; bytes <c>[Start, End)</c> are unread.</summary>
        private sealed class Incoming
        {
            public Incoming(Socket socket)
            {
                Socket = socket;
                Remote = socket.RemoteEndPoint;
                Buffer = ArrayPool<byte>.Shared.Rent(DefaultBufferLength);
            }

            public Socket Socket { get; }

            public EndPoint? Remote { get; }

            public byte[] Buffer { get; private set; }

            public int Start { get; set; }

            public int End { get; set; }

            /// <summary>The longest frame (prefix included) delivered from this connection so far.</summary>
            public int LargestFrame { get; set; }

            /// <summary>
            /// Makes room for more of a frame of <paramref name="total"/> bytes starting at <see cref="Start"/>. The
            /// buffer grows only when it is full, and then at most doubles or, when this connection already delivered
            /// a frame that long, to the frame's length at once (a peer that sends large values sends them again, and
            /// each doubling copies what arrived so far). Memory follows the bytes that actually arrived, not the length
            /// a peer announced: a prefix announcing 10 MiB followed by silence costs nothing.
            /// </summary>
            public void EnsureRoom(int total)
            {
                if (Buffer.Length - Start >= total || End < Buffer.Length)
                {
                    // The frame fits from Start, or the buffer still has room at its end for the next receive.
                    return;
                }

                if (Start > 0)
                {
                    MoveToFront(Buffer);
                    return;
                }

                var larger = ArrayPool<byte>.Shared.Rent((int)Math.Min(total, Math.Max(2L * Buffer.Length, LargestFrame)));
                MoveToFront(larger);
            }

            /// <summary>After frames were consumed: rewinds, and gives back a grown buffer once it is empty.</summary>
            public void Compact()
            {
                if (Start == End)
                {
                    Start = End = 0;
                    if (Buffer.Length > DefaultBufferLength)
                    {
                        ArrayPool<byte>.Shared.Return(Buffer);
                        Buffer = ArrayPool<byte>.Shared.Rent(DefaultBufferLength);
                    }
                }
                else if (End == Buffer.Length)
                {
                    // Only a partial prefix is left at the very end: move it so the next receive has room.
                    MoveToFront(Buffer);
                }
            }

            public void Release()
            {
                Socket.Dispose();
                ArrayPool<byte>.Shared.Return(Buffer);
                Buffer = [];
            }

            private void MoveToFront(byte[] target)
            {
                var length = End - Start;
                Array.Copy(Buffer, Start, target, 0, length);
                if (!ReferenceEquals(target, Buffer))
                {
                    ArrayPool<byte>.Shared.Return(Buffer);
                    Buffer = target;
                }

                Start = 0;
                End = length;
            }
        }
    }
}
