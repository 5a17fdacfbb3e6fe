using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Sockets;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Transport;

/// <content>TCP write loops: one write-only connection per destination.</content>
public sealed partial class NetworkTransport
{
    /// <summary>What a destination waits for before its next round.</summary>
    [Flags]
    private enum WriteWait
    {
        /// <summary>Nothing to do until a frame is queued.</summary>
        None = 0,

        /// <summary>A time-based step is pending (back-off, connect timeout, stale frames).</summary>
        Timer = 1,

        /// <summary>Watch the socket for readability: on a write-only socket that means the peer closed it.</summary>
        Readable = 2,

        /// <summary>Connecting, or the socket buffer is full.</summary>
        Writable = 4,

        /// <summary>More is ready to write at once (the round's byte budget ran out).</summary>
        Busy = 8,
    }

    /// <summary>
    /// One dedicated thread serving the destinations assigned to it. Only <see cref="Add"/> and <see cref="Wake"/>
    /// are called from other threads.
    /// </summary>
    private sealed class TcpWriteLoop : IDisposable
    {
        /// <summary>Select timeout while a timed step is pending; bounds back-off and stale-drop lateness.</summary>
        private const int TimerMicroseconds = 20_000;

        /// <summary>Safety timeout when idle; wake-ups normally come through the wake socket.</summary>
        private const int IdleMicroseconds = 1_000_000;

        private readonly NetworkTransport _owner;
        private readonly WakeSocket _wake = new();
        private readonly ConcurrentQueue<TcpDestination> _added = new();
        private readonly List<TcpDestination> _owned = [];
        private readonly List<Socket> _checkRead = [];
        private readonly List<Socket> _checkWrite = [];
        private readonly List<Socket> _checkError = [];
        private readonly Dictionary<Socket, TcpDestination> _bySocket = [];

        public TcpWriteLoop(NetworkTransport owner) => _owner = owner;

        /// <summary>Scratch space for discarding bytes a peer sends on a write-only connection.</summary>
        public byte[] Scratch { get; } = new byte[4096];

        public void Add(TcpDestination destination)
        {
            _added.Enqueue(destination);
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
                // The transport stopped and closed the wake socket: the frame stays queued and is counted at stop.
                return;
            }
        }

        public void Run()
        {
            try
            {
                while (!_owner._stopping)
                {
                    while (_added.TryDequeue(out var added))
                    {
                        _owned.Add(added);
                    }

                    _checkRead.Clear();
                    _checkWrite.Clear();
                    _checkError.Clear();
                    _bySocket.Clear();
                    _checkRead.Add(_wake.Socket);
                    var now = Stopwatch.GetTimestamp();
                    var all = WriteWait.None;
                    foreach (var destination in _owned)
                    {
                        var wait = destination.Service(now);
                        all |= wait;
                        var socket = destination.Socket;
                        if (socket is null)
                        {
                            continue;
                        }

                        if ((wait & WriteWait.Readable) != 0)
                        {
                            _checkRead.Add(socket);
                            _bySocket[socket] = destination;
                        }

                        if ((wait & WriteWait.Writable) != 0)
                        {
                            _checkWrite.Add(socket);
                            _checkError.Add(socket);
                        }
                    }

                    if (_owner._stopping)
                    {
                        break;
                    }

                    var timeout = (all & WriteWait.Busy) != 0 ? 0 : (all & WriteWait.Timer) != 0 ? TimerMicroseconds : IdleMicroseconds;
                    Socket.Select(_checkRead, _checkWrite.Count > 0 ? _checkWrite : null, _checkError.Count > 0 ? _checkError : null, timeout);

                    // Writable and error readiness need no handling here: the next round retries the connect or the write.
                    foreach (var socket in _checkRead)
                    {
                        if (socket == _wake.Socket)
                        {
                            _wake.Drain();
                        }
                        else if (_bySocket.TryGetValue(socket, out var destination))
                        {
                            destination.OnReadable(Stopwatch.GetTimestamp());
                        }
                    }
                }
            }
            catch (ObjectDisposedException) when (_owner._stopping)
            {
                // A sink stopped the transport from a transport thread and the sockets were closed under us.
                return;
            }
            finally
            {
                foreach (var destination in _owned)
                {
                    destination.CloseConnection();
                }
            }
        }

        public void Dispose() => _wake.Dispose();
    }

    /// <summary>
    /// The queue and the write-only connection for one destination. <see cref="Enqueue"/> and <see cref="DropAll"/>
    /// may be called from any thread; everything else belongs to the write loop's thread, except that a sending
    /// thread that finds the connection established and idle writes its frame itself (see <see cref="Enqueue"/>).
    /// </summary>
    /// <remarks>
    /// Whoever writes to the connection holds <see cref="_writer"/>: the loop for a round of <see cref="Service"/>
    /// (or to close), a sending thread for one non-blocking pass over the queue. Only the loop connects, fails and
    /// closes the connection, so the socket and the pooled batch array never change under a sending thread.
    /// </remarks>
    private sealed class TcpDestination
    {
        /// <summary>Small frames are copied into this batch (with their prefixes) and written with one send.</summary>
        private const int BatchLength = 64 * 1024;

        /// <summary>Bytes written per round before the loop turns to the other destinations.</summary>
        private const int MaxBytesPerRound = 1024 * 1024;

        private readonly NetworkTransport _owner;
        private readonly TcpWriteLoop _loop;
        private readonly NodeId _destination;
        private readonly ConcurrentQueue<(byte[] Frame, long EnqueuedAt)> _queue = new();
        private long _queuedFrames;
        private long _queuedBytes;

        // 1 while the loop or a sending thread writes to the connection (or the loop changes it).
        private int _writer;

        // Connected, and the last write did not find the socket full: a sending thread may write itself.
        private volatile bool _inlineReady;

        // The oldest frame, taken out of the queue to be looked at by the writer (ConcurrentQueue.TryPeek would
        // stop the queue from reusing its segment, and it would allocate ever larger ones, up to megabytes).
        private (byte[] Frame, long EnqueuedAt) _head;
        private bool _hasHead;

        private ConnectionState _state;
        private long _connectStartedAt;
        private long _retryAt;
        private TimeSpan _backoff;

        // The chunk being written: _batch[_batchSent.._batchLength), then _large[_largeSent..] when set.
        private byte[]? _batch;
        private int _batchLength;
        private int _batchSent;
        private byte[]? _large;
        private int _largeSent;

        // With authentication: the tag of _large, written after it.
        private byte[]? _largeTag;
        private int _largeTagSent;
        private int _chunkFrames;
        private long _chunkBytes;

        public TcpDestination(NetworkTransport owner, TcpWriteLoop loop, NodeId destination)
        {
            _owner = owner;
            _loop = loop;
            _destination = destination;
            _backoff = owner._reconnectBackoff;
        }

        private enum ConnectionState
        {
            Disconnected,
            Connecting,
            Connected,
            Backoff,
        }

        public Socket? Socket { get; private set; }

        public bool Enqueue(byte[] frame)
        {
            // Checked before adding, so concurrent senders may overshoot a cap by a few frames: the caps bound
            // memory, they are not exact counts.
            if (Volatile.Read(ref _queuedFrames) >= _owner._tcpQueueMaxFrames
                || Volatile.Read(ref _queuedBytes) + frame.Length > _owner._tcpQueueMaxBytes)
            {
                _owner.Statistics.OnDropped(TransportKind.Tcp, DropReason.QueueFull);
                return false;
            }

            Interlocked.Increment(ref _queuedFrames);
            Interlocked.Add(ref _queuedBytes, frame.Length);
            _queue.Enqueue((frame, Stopwatch.GetTimestamp()));

            // On an established, idle connection the sender writes the frame itself: no wake-up of the loop's thread,
            // no select round, one send. Anything it leaves (a full socket, an error, frames queued meanwhile) is
            // the loop's.
            if (!_inlineReady || !TryWriteInline())
            {
                _loop.Wake();
            }

            return true;
        }

        /// <summary>
        /// Writes what is queued on the calling thread when nobody else is writing; true when it left nothing for
        /// the loop. Never blocks: the socket is non-blocking and the pass stops at the first short write.
        /// </summary>
        private bool TryWriteInline()
        {
            if (!TryAcquireWriter())
            {
                return false;
            }

            var drained = false;
            try
            {
                if (_inlineReady && !_owner._stopping)
                {
                    if (PeerClosed())
                    {
                        // The loop finds the close and reconnects before anything is written (and lost) on it.
                        _inlineReady = false;
                    }
                    else
                    {
                        drained = WriteQueued(Stopwatch.GetTimestamp(), out var error);
                        if (error != SocketError.Success)
                        {
                            // A full socket or a failure: the loop waits for writability, or fails the connection.
                            _inlineReady = false;
                        }
                    }
                }
            }
            finally
            {
                ReleaseWriter();
            }

            // A frame queued by a sender that found the writer busy is the loop's to send.
            return drained && _queue.IsEmpty && !_hasHead;
        }

        /// <summary>
        /// Whether the write-only socket is readable, which means the peer closed it (or sent stray bytes): a frame
        /// written now would be lost with the connection, so the loop's <see cref="OnReadable"/> looks first, as it
        /// does before its own writes.
        /// </summary>
        private bool PeerClosed()
        {
            try
            {
                return Socket!.Poll(0, SelectMode.SelectRead);
            }
            catch (SocketException)
            {
                return true;
            }
        }

        /// <summary>Waits until nobody else writes to the connection (a sending thread's pass is short and never blocks).</summary>
        private void AcquireWriter()
        {
            var spin = default(SpinWait);
            while (!TryAcquireWriter())
            {
                spin.SpinOnce();
            }
        }

        private bool TryAcquireWriter() => Interlocked.CompareExchange(ref _writer, 1, 0) == 0;

        private void ReleaseWriter() => Volatile.Write(ref _writer, 0);

        public void DropAll(DropReason reason)
        {
            var dropped = 0;
            AcquireWriter();
            try
            {
                while (TryTake(out _))
                {
                    dropped++;
                }
            }
            finally
            {
                ReleaseWriter();
            }

            _owner.Statistics.OnDropped(TransportKind.Tcp, reason, dropped);
        }

        /// <summary>One round: expire old frames, advance the connection, write what the socket takes.</summary>
        public WriteWait Service(long now)
        {
            if (!TryAcquireWriter())
            {
                // A sending thread is writing; it wakes the loop if it leaves anything behind.
                return WriteWait.Readable | WriteWait.Timer;
            }

            try
            {
                return ServiceOwned(now);
            }
            finally
            {
                ReleaseWriter();
            }
        }

        private WriteWait ServiceOwned(long now)
        {
            PurgeStale(now);
            if (_state == ConnectionState.Backoff)
            {
                if (now < _retryAt)
                {
                    return WriteWait.Timer;
                }

                _state = ConnectionState.Disconnected;
            }

            if (_state == ConnectionState.Disconnected)
            {
                // Connect lazily: a peer nobody sends to costs no connection and no retries.
                if (Volatile.Read(ref _queuedFrames) == 0)
                {
                    return WriteWait.None;
                }

                StartConnect(now);
            }

            if (_state == ConnectionState.Connecting)
            {
                var wait = CheckConnect(now);
                if (_state != ConnectionState.Connected)
                {
                    return wait;
                }
            }

            return _state == ConnectionState.Connected ? Flush(now) : WriteWait.Timer;
        }

        /// <summary>The write-only socket became readable: the peer closed it (or sent bytes it should not have).</summary>
        public void OnReadable(long now)
        {
            if (Socket is null)
            {
                return;
            }

            AcquireWriter();
            try
            {
                var read = Socket.Receive(_loop.Scratch, 0, _loop.Scratch.Length, SocketFlags.None, out var error);
                if (error == SocketError.WouldBlock || (error == SocketError.Success && read > 0))
                {
                    // PhxPaxos peers never write on a connection they accepted; stray bytes are discarded.
                    return;
                }

                // Finding the close now, rather than on the next write, keeps the next frame from being lost.
                Fail(now, error == SocketError.Success ? SocketError.Disconnecting : error, connecting: false);
            }
            finally
            {
                ReleaseWriter();
            }
        }

        public void CloseConnection()
        {
            AcquireWriter();
            try
            {
                var lost = _chunkFrames;
                ResetChunk();
                _owner.Statistics.OnDropped(TransportKind.Tcp, DropReason.Stopped, lost);
                CloseSocket();
            }
            finally
            {
                ReleaseWriter();
            }
        }

        /// <summary>The oldest queued frame, left queued. The caller holds the writer.</summary>
        private bool TryPeekHead(out (byte[] Frame, long EnqueuedAt) head)
        {
            if (!_hasHead)
            {
                if (!_queue.TryDequeue(out _head))
                {
                    head = default;
                    return false;
                }

                _hasHead = true;
            }

            head = _head;
            return true;
        }

        /// <summary>Takes the oldest queued frame. The caller holds the writer.</summary>
        private bool TryTake(out (byte[] Frame, long EnqueuedAt) item)
        {
            if (_hasHead)
            {
                item = _head;
                _head = default;
                _hasHead = false;
            }
            else if (!_queue.TryDequeue(out item))
            {
                return false;
            }

            Interlocked.Decrement(ref _queuedFrames);
            Interlocked.Add(ref _queuedBytes, -item.Frame.Length);
            return true;
        }

        private void PurgeStale(long now)
        {
            var stale = 0;
            while (TryPeekHead(out var head) && now - head.EnqueuedAt > _owner._tcpDropTimeTicks && TryTake(out _))
            {
                stale++;
            }

            _owner.Statistics.OnDropped(TransportKind.Tcp, DropReason.Stale, stale);
        }

        private void StartConnect(long now)
        {
            Socket socket;
            try
            {
                socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, Blocking = false };
            }
            catch (SocketException ex)
            {
                // Out of descriptors or buffers: treat like a failed connect and back off.
                Fail(now, ex.SocketErrorCode, connecting: true);
                return;
            }

            try
            {
                socket.Connect(_destination.EndPoint);
            }
            catch (SocketException ex)
            {
                // WouldBlock / InProgress is the usual outcome of a non-blocking connect: completion shows up as
                // writability. Anything else failed at once.
                if (ex.SocketErrorCode is not (SocketError.WouldBlock or SocketError.InProgress or SocketError.AlreadyInProgress))
                {
                    socket.Dispose();
                    Fail(now, ex.SocketErrorCode, connecting: true);
                    return;
                }
            }

            Socket = socket;
            _state = ConnectionState.Connecting;
            _connectStartedAt = now;
        }

        private WriteWait CheckConnect(long now)
        {
            var socket = Socket!;
            SocketError error;
            try
            {
                if (!socket.Poll(0, SelectMode.SelectWrite) && !socket.Poll(0, SelectMode.SelectError))
                {
                    if (now - _connectStartedAt > _owner._connectTimeoutTicks)
                    {
                        Fail(now, SocketError.TimedOut, connecting: true);
                        return WriteWait.Timer;
                    }

                    return WriteWait.Writable | WriteWait.Timer;
                }

                // Readiness says the connect finished, not that it succeeded: SO_ERROR tells.
                error = (SocketError)(int)socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
                if (error == SocketError.Success && !socket.Connected)
                {
                    error = SocketError.NotConnected;
                }
            }
            catch (SocketException ex)
            {
                error = ex.SocketErrorCode;
            }

            if (error != SocketError.Success)
            {
                Fail(now, error, connecting: true);
                return WriteWait.Timer;
            }

            _state = ConnectionState.Connected;
            _backoff = _owner._reconnectBackoff;
            _batch ??= ArrayPool<byte>.Shared.Rent(BatchLength);
            _inlineReady = true;
            _owner.Statistics.OnConnectionOpened();
            NetworkTransportLog.Connected(_owner._logger, _owner.LocalNode, _destination);
            return WriteWait.None;
        }

        private WriteWait Flush(long now)
        {
            var drained = WriteQueued(now, out var error);
            if (error == SocketError.WouldBlock)
            {
                // Stale frames behind a stuck peer still expire on the timer.
                _inlineReady = false;
                return WriteWait.Writable | WriteWait.Readable | WriteWait.Timer;
            }

            if (error != SocketError.Success)
            {
                Fail(now, error, connecting: false);
                return WriteWait.Timer;
            }

            _inlineReady = true;
            return drained ? WriteWait.Readable : WriteWait.Busy | WriteWait.Readable;
        }

        /// <summary>
        /// Writes queued frames until the queue is empty (true), the socket takes no more or fails (false, with the
        /// error), or a round's byte budget is spent (false, <see cref="SocketError.Success"/>). The caller holds the writer.
        /// </summary>
        private bool WriteQueued(long now, out SocketError error)
        {
            var written = 0;
            while (true)
            {
                if (_chunkFrames == 0 && !FillChunk(now))
                {
                    error = SocketError.Success;
                    return true;
                }

                error = WriteChunk(ref written);
                if (error != SocketError.Success || written >= MaxBytesPerRound)
                {
                    return false;
                }
            }
        }

        /// <summary>Takes queued frames into the next chunk; false when nothing is left to send.</summary>
        private bool FillChunk(long now)
        {
            var batch = _batch!;
            var tagLength = _owner._tagLength;
            while (TryPeekHead(out var head))
            {
                var length = head.Frame.Length;
                var room = batch.Length - _batchLength;
                var large = length > BatchLength / 2;

                // A large frame is written from its own array after its prefix, so it is never copied.
                if (room < TcpFraming.PrefixLength + (large ? 0 : length + tagLength))
                {
                    break;
                }

                TryTake(out var item);
                if (now - item.EnqueuedAt > _owner._tcpDropTimeTicks)
                {
                    _owner.Statistics.OnDropped(TransportKind.Tcp, DropReason.Stale);
                    continue;
                }

                // The prefix counts the tag too: [prefix][frame][tag].
                TcpFraming.WritePrefix(batch.AsSpan(_batchLength), length + tagLength);
                _batchLength += TcpFraming.PrefixLength;
                _chunkFrames++;
                _chunkBytes += length;
                if (large)
                {
                    _large = item.Frame;
                    if (tagLength > 0)
                    {
                        _largeTag ??= new byte[tagLength];
                        _owner._authenticator!.WriteTag(item.Frame, _largeTag);
                    }

                    break;
                }

                item.Frame.CopyTo(batch, _batchLength);
                _batchLength += length;
                if (tagLength > 0)
                {
                    _owner._authenticator!.WriteTag(item.Frame, batch.AsSpan(_batchLength, tagLength));
                    _batchLength += tagLength;
                }
            }

            return _chunkFrames > 0;
        }

        private SocketError WriteChunk(ref int written)
        {
            var socket = Socket!;
            while (_batchSent < _batchLength)
            {
                var sent = socket.Send(_batch!, _batchSent, _batchLength - _batchSent, SocketFlags.None, out var error);
                if (error != SocketError.Success)
                {
                    return error;
                }

                _batchSent += sent;
                written += sent;
            }

            while (_large is not null && _largeSent < _large.Length)
            {
                var sent = socket.Send(_large, _largeSent, _large.Length - _largeSent, SocketFlags.None, out var error);
                if (error != SocketError.Success)
                {
                    return error;
                }

                _largeSent += sent;
                written += sent;
            }

            while (_large is not null && _largeTag is not null && _largeTagSent < _largeTag.Length)
            {
                var sent = socket.Send(_largeTag, _largeTagSent, _largeTag.Length - _largeTagSent, SocketFlags.None, out var error);
                if (error != SocketError.Success)
                {
                    return error;
                }

                _largeTagSent += sent;
                written += sent;
            }

            _owner.Statistics.OnSent(TransportKind.Tcp, _chunkFrames, _chunkBytes);
            ResetChunk();
            return SocketError.Success;
        }

        private void ResetChunk()
        {
            _batchLength = 0;
            _batchSent = 0;
            _large = null;
            _largeSent = 0;
            _largeTagSent = 0;
            _chunkFrames = 0;
            _chunkBytes = 0;
        }

        /// <summary>Drops the connection and the frames partly written on it, and schedules a reconnect.</summary>
        private void Fail(long now, SocketError error, bool connecting)
        {
            var lost = _chunkFrames;
            ResetChunk();
            _owner.Statistics.OnDropped(TransportKind.Tcp, DropReason.SendError, lost);
            CloseSocket();

            var backoffMs = (long)_backoff.TotalMilliseconds;
            _retryAt = now + ToStopwatchTicks(_backoff);
            _backoff = TimeSpan.FromTicks(Math.Min(_backoff.Ticks * 2, _owner._maxReconnectBackoff.Ticks));
            _state = ConnectionState.Backoff;
            if (connecting)
            {
                _owner.Statistics.OnConnectFailure();
                NetworkTransportLog.ConnectFailed(_owner._logger, _owner.LocalNode, _destination, error, backoffMs);
            }
            else
            {
                NetworkTransportLog.ConnectionLost(_owner._logger, _owner.LocalNode, _destination, error, lost, backoffMs);
            }
        }

        private void CloseSocket()
        {
            _inlineReady = false;
            Socket?.Dispose();
            Socket = null;
            if (_batch is not null)
            {
                ArrayPool<byte>.Shared.Return(_batch);
                _batch = null;
            }

            if (_state != ConnectionState.Backoff)
            {
                _state = ConnectionState.Disconnected;
            }
        }
    }
}
