using System.Net;
using Orleans.Paxos.Engine.Protocol;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Orleans.Paxos.Engine.Transport;

/// <content>
/// Datagrams in batches (64-bit Linux, <see cref="NetworkTransportOptions.BatchDatagrams"/>): the small frames a thread
/// sends in one burst leave in one <c>sendmmsg</c> call and the receive thread takes the datagrams waiting on its
/// socket with one <c>recvmmsg</c> call. Every frame is still its own PhxPaxos datagram, byte for byte; only the
/// number of system calls (and of the receive thread's wake-ups, since a burst arrives together) changes.
/// </content>
public sealed partial class NetworkTransport
{
    /// <summary>Most datagrams one thread holds for one <c>sendmmsg</c> call; a burst with more sends several.</summary>
    internal const int MaxSendBatch = 32;

    /// <summary>Most datagrams one <c>recvmmsg</c> call takes.</summary>
    internal const int ReceiveBatchLength = 16;

    private const int MsgDontWait = 0x40;
    private const int MsgWaitForOne = 0x10000;
    private const int Eintr = 4;
    private const int Eagain = 11;

    /// <summary>Size of <c>struct mmsghdr</c> on 64-bit Linux: a <c>struct msghdr</c> (56 bytes) and <c>msg_len</c>, padded.</summary>
    private const int MmsgHeaderSize = 64;

    /// <summary>Size of <c>struct iovec</c> on 64-bit Linux.</summary>
    private const int IovecSize = 16;

    /// <summary>Room for one <c>struct sockaddr_in</c>.</summary>
    private const int AddressSize = 16;

    /// <summary>Pause after a receive error other than a timeout, so that a lasting error does not spin the receive thread.</summary>
    private const int ReceiveErrorDelayMs = 10;

    /// <summary>Set by the constructor; cleared by <see cref="ProbeDatagramBatches"/> when the calls are missing.</summary>
    private bool _batchDatagrams;

    private long _sendBatchCalls;
    private long _receiveBatchCalls;
    private long _largestReceiveBatch;

    /// <summary>Whether datagrams are sent and received in batches (<see cref="NetworkTransportOptions.BatchDatagrams"/> on 64-bit Linux).</summary>
    public bool BatchesDatagrams => _batchDatagrams;

    /// <summary><c>sendmmsg</c> calls that sent at least one datagram (tests).</summary>
    internal long SendBatchCalls => Interlocked.Read(ref _sendBatchCalls);

    /// <summary><c>recvmmsg</c> calls that returned at least one datagram (tests).</summary>
    internal long ReceiveBatchCalls => Interlocked.Read(ref _receiveBatchCalls);

    /// <summary>Most datagrams one <c>recvmmsg</c> call returned (tests).</summary>
    internal long LargestReceiveBatch => Interlocked.Read(ref _largestReceiveBatch);

    /// <summary>
    /// Sends what the current thread holds, for whichever transport, and goes on holding. Called before work that
    /// may block (a durable index commit, waiting for a lock a flush may hold) so that no frame waits for it.
    /// </summary>
    internal static void SendHeldBeforeBlocking()
    {
        if (t_held is { HoldsFrames: true } held)
        {
            held.SendAll();
        }
    }

    /// <summary>Resolves both calls once on the new UDP sockets; where the C library lacks them, batching is turned off.</summary>
    private unsafe void ProbeDatagramBatches()
    {
        if (!_batchDatagrams)
        {
            return;
        }

        try
        {
            // Zero messages: nothing is sent or read; only the entry points are bound.
            _ = sendmmsg(Descriptor(_udpSend!.SafeHandle), null, 0, MsgDontWait);
            _ = recvmmsg(Descriptor(_udpReceive!.SafeHandle), null, 0, MsgDontWait, null);
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            _batchDatagrams = false;
            NetworkTransportLog.DatagramBatchesUnavailable(_logger, LocalNode, ex.GetType().Name);
        }
    }

    /// <summary>Whether a thread's burst of sends is held and sent together: coalesced into bundles, or in one system call.</summary>
    internal bool HoldsSends => _coalesce || _batchDatagrams;

    /// <summary>The destination's socket address (IPv4, in the platform's layout), cached.</summary>
    private SocketAddress UdpAddress(NodeId destination)
    {
        if (!_udpAddresses.TryGetValue(destination, out var address))
        {
            if (_udpAddresses.Count >= MaxCachedUdpAddresses)
            {
                _udpAddresses.Clear();
            }

            // The SocketAddress overload of SendTo sends without allocating an endpoint per datagram.
            address = _udpAddresses.GetOrAdd(destination, static d => d.EndPoint.Serialize());
        }

        return address;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int sendmmsg(int fd, byte* messages, uint count, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int recvmmsg(int fd, byte* messages, uint count, int flags, void* timeout);

    /// <summary>Writes one <c>struct mmsghdr</c>: address, its length, the iovec array and its length; no control data.</summary>
    private static unsafe void WriteMessageHeader(byte* header, byte* name, int nameLength, byte* iovecs, int iovecCount)
    {
        new Span<byte>(header, MmsgHeaderSize).Clear();
        *(byte**)header = name;                       // msg_name
        *(int*)(header + 8) = nameLength;             // msg_namelen
        *(byte**)(header + 16) = iovecs;              // msg_iov
        *(nuint*)(header + 24) = (nuint)iovecCount;   // msg_iovlen
    }

    /// <summary>Writes one <c>struct iovec</c>.</summary>
    private static unsafe void WriteIovec(byte* iovec, byte* data, int length)
    {
        *(byte**)iovec = data;
        *(nuint*)(iovec + 8) = (nuint)length;
    }

    /// <summary>The file descriptor behind <paramref name="handle"/>.</summary>
    private static int Descriptor(SafeHandle handle) => (int)handle.DangerousGetHandle();

    /// <summary>
    /// Frames one thread holds to send in one <c>sendmmsg</c> call, each as its own datagram (with its tag when
    /// frames are authenticated). Used by that thread only; its buffers are pinned and kept for the thread's life.
    /// </summary>
    private sealed unsafe class DatagramBatch(NetworkTransport transport)
    {
        private readonly NetworkTransport _transport = transport;
        private readonly NodeId[] _destinations = new NodeId[MaxSendBatch];
        private readonly byte[]?[] _frames = new byte[MaxSendBatch][];
        private readonly GCHandle[] _pins = new GCHandle[MaxSendBatch];
        private readonly byte[] _headers = GC.AllocateArray<byte>(MaxSendBatch * MmsgHeaderSize, pinned: true);
        private readonly byte[] _iovecs = GC.AllocateArray<byte>(MaxSendBatch * 2 * IovecSize, pinned: true);
        private readonly byte[] _addresses = GC.AllocateArray<byte>(MaxSendBatch * AddressSize, pinned: true);
        private readonly byte[] _tags = GC.AllocateArray<byte>(MaxSendBatch * Math.Max(1, transport._tagLength), pinned: true);

        public int Count { get; private set; }

        public bool IsFull => Count == MaxSendBatch;

        public void Add(NodeId destination, byte[] frame)
        {
            _destinations[Count] = destination;
            _frames[Count] = frame;
            Count++;
        }

        /// <summary>Sends the held frames; a datagram the kernel refuses goes through the one-datagram path, which counts and logs it.</summary>
        public void Send()
        {
            if (Count == 0)
            {
                return;
            }

            var handle = _transport._udpSend!.SafeHandle;
            var added = false;
            try
            {
                handle.DangerousAddRef(ref added);
                Prepare();
                SendPrepared(Descriptor(handle));
            }
            catch (ObjectDisposedException)
            {
                // Dispose closed the socket: what is left counts as dropped, as for a single datagram.
                for (var i = 0; i < Count; i++)
                {
                    if (_frames[i] is not null)
                    {
                        _transport.Statistics.OnDropped(TransportKind.Udp, DropReason.Stopped);
                    }
                }
            }
            finally
            {
                if (added)
                {
                    handle.DangerousRelease();
                }

                for (var i = 0; i < Count; i++)
                {
                    if (_pins[i].IsAllocated)
                    {
                        _pins[i].Free();
                    }

                    _frames[i] = null;
                }

                Count = 0;
            }
        }

        private void Prepare()
        {
            var tagLength = _transport._tagLength;
            var headers = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_headers));
            var iovecs = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_iovecs));
            var addresses = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_addresses));
            var tags = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_tags));
            for (var i = 0; i < Count; i++)
            {
                var frame = _frames[i]!;
                _pins[i] = GCHandle.Alloc(frame, GCHandleType.Pinned);
                var address = _transport.UdpAddress(_destinations[i]).Buffer.Span;
                var name = addresses + (i * AddressSize);
                address[..AddressSize].CopyTo(new Span<byte>(name, AddressSize));
                var iovec = iovecs + (i * 2 * IovecSize);
                WriteIovec(iovec, (byte*)_pins[i].AddrOfPinnedObject(), frame.Length);
                var iovecCount = 1;
                if (_transport._authenticator is { } authenticator)
                {
                    var tag = tags + (i * tagLength);
                    authenticator.WriteTag(frame, new Span<byte>(tag, tagLength));
                    WriteIovec(iovec + IovecSize, tag, tagLength);
                    iovecCount = 2;
                }

                WriteMessageHeader(headers + (i * MmsgHeaderSize), name, AddressSize, iovec, iovecCount);
            }
        }

        private void SendPrepared(int fd)
        {
            var headers = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_headers));
            var statistics = _transport.Statistics;
            var done = 0;
            while (done < Count)
            {
                var sent = sendmmsg(fd, headers + (done * MmsgHeaderSize), (uint)(Count - done), MsgDontWait);
                if (sent > 0)
                {
                    Interlocked.Increment(ref _transport._sendBatchCalls);
                    for (var i = done; i < done + sent; i++)
                    {
                        statistics.OnSent(TransportKind.Udp, 1, _frames[i]!.Length);
                        statistics.OnDatagramSent();
                        _frames[i] = null;
                    }

                    done += sent;
                    continue;
                }

                if (Marshal.GetLastPInvokeError() == Eintr)
                {
                    continue;
                }

                // The first datagram left was refused (a full send buffer, an unreachable address): the managed
                // one-datagram send meets the same error and counts or logs it as for any datagram; the rest go on.
                _transport.SendUdp(_destinations[done], _frames[done]!);
                _frames[done] = null;
                done++;
            }
        }
    }

    /// <summary>
    /// The receive thread's buffers for one <c>recvmmsg</c> call: <see cref="ReceiveBatchLength"/> slots of
    /// <see cref="UdpReceiveBufferLength"/> bytes each, pinned for the thread's life.
    /// </summary>
    private sealed unsafe class ReceiveBatch
    {
        private readonly byte[] _buffers = GC.AllocateArray<byte>(ReceiveBatchLength * UdpReceiveBufferLength, pinned: true);
        private readonly byte[] _headers = GC.AllocateArray<byte>(ReceiveBatchLength * MmsgHeaderSize, pinned: true);
        private readonly byte[] _iovecs = GC.AllocateArray<byte>(ReceiveBatchLength * IovecSize, pinned: true);

        public ReceiveBatch()
        {
            var buffers = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_buffers));
            var headers = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_headers));
            var iovecs = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_iovecs));
            for (var i = 0; i < ReceiveBatchLength; i++)
            {
                WriteIovec(iovecs + (i * IovecSize), buffers + (i * UdpReceiveBufferLength), UdpReceiveBufferLength);
                WriteMessageHeader(headers + (i * MmsgHeaderSize), null, 0, iovecs + (i * IovecSize), 1);
            }
        }

        /// <summary>
        /// Waits for at least one datagram (up to the socket's receive timeout) and takes those already waiting
        /// behind it. Returns how many, or -1 with <paramref name="error"/> set.
        /// </summary>
        public int Receive(Socket socket, out SocketError error, out int errno)
        {
            var handle = socket.SafeHandle;
            var added = false;
            try
            {
                handle.DangerousAddRef(ref added);
                var headers = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_headers));
                var received = recvmmsg(Descriptor(handle), headers, ReceiveBatchLength, MsgWaitForOne, null);
                if (received >= 0)
                {
                    error = SocketError.Success;
                    errno = 0;
                    return received;
                }

                errno = Marshal.GetLastPInvokeError();
                error = errno switch
                {
                    Eagain => SocketError.WouldBlock,
                    Eintr => SocketError.Interrupted,
                    _ => SocketError.SocketError,
                };
                return -1;
            }
            finally
            {
                if (added)
                {
                    handle.DangerousRelease();
                }
            }
        }

        /// <summary>The <paramref name="index"/>th datagram of the last call.</summary>
        public Span<byte> Datagram(int index)
        {
            var length = (int)MemoryMarshal.Read<uint>(_headers.AsSpan((index * MmsgHeaderSize) + 56));
            return _buffers.AsSpan(index * UdpReceiveBufferLength, length);
        }
    }
}
