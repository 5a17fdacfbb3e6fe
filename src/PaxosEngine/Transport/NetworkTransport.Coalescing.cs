using System.Buffers.Binary;
using System.Net.Sockets;
using Orleans.Paxos.Engine.Groups;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Transport;

/// <content>
/// Datagram coalescing (<see cref="NetworkTransportOptions.CoalesceDatagrams"/>): a thread that handles a burst of
/// work (a loop draining its queue, the receive thread reading datagrams that are already waiting) holds the small
/// frames it sends and, at the end of the burst, sends each destination's frames as one datagram:
/// <c>[int32 LE <see cref="BundleMarker"/>][uint16 LE count]</c> then per frame <c>[uint16 LE length][frame]</c>, with
/// one authentication tag after the whole datagram when a key is set. A destination that got one frame gets it as a
/// plain PhxPaxos datagram. Every node of this engine reads bundles whatever its own option says; a PhxPaxos node
/// reads the marker as a group index out of range and drops the datagram.
/// </content>
public sealed partial class NetworkTransport : ISendBatching
{
    /// <summary>First four bytes of a bundle datagram ("PXB1"); PhxPaxos takes them for group index 826,431,568 and drops it.</summary>
    internal const int BundleMarker = 0x31425850;

    /// <summary>Marker and frame count.</summary>
    internal const int BundleHeaderLength = 6;

    /// <summary>Each frame's length prefix in a bundle.</summary>
    internal const int BundleFramePrefixLength = 2;

    /// <summary>The current thread's held frames, bound to the transport that held them.</summary>
    [ThreadStatic]
    private static HeldFrames? t_held;

    private readonly bool _coalesce;

    /// <summary>Whether this transport sends a burst's frames to one peer in one datagram (<see cref="NetworkTransportOptions.CoalesceDatagrams"/>).</summary>
    public bool CoalescesDatagrams => _coalesce;

    /// <inheritdoc />
    void ISendBatching.HoldSends() => HoldSends();

    /// <inheritdoc />
    void ISendBatching.SendHeld() => SendHeld();

    /// <inheritdoc />
    void ISendBatching.FlushHeld()
    {
        if (t_held is { } held && held.Transport == this)
        {
            held.SendAll();
        }
    }

    /// <summary>From now on, small frames the current thread sends are held until it calls <see cref="SendHeld"/>.</summary>
    private void HoldSends()
    {
        if (!HoldsSends)
        {
            return;
        }

        var held = t_held;
        if (held is null || held.Transport != this)
        {
            // A thread serves one node's transport; should it hold for another one, what it held there leaves first.
            held?.SendAll();
            held = new HeldFrames(this);
            t_held = held;
        }

        held.Holding = true;
    }

    /// <summary>Sends the frames the current thread holds for this transport and stops holding.</summary>
    private void SendHeld()
    {
        if (t_held is { } held && held.Transport == this)
        {
            held.Holding = false;
            held.SendAll();
            if (_stopping)
            {
                // A thread that outlives the transport (a user's storage writer) must not keep it alive.
                t_held = null;
            }
        }
    }

    /// <summary>Datagrams after which the receive thread sends what it holds even though more are waiting.</summary>
    private const int MaxHeldDatagrams = 16;

    /// <summary>Datagrams the receive thread handled since it last sent what it held (receive thread only).</summary>
    private int _heldDatagrams;

    /// <summary>
    /// The receive thread, after every datagram (whatever became of it): sends what it holds unless another datagram
    /// is already waiting (<paramref name="moreInBatch"/>: one taken by the same <c>recvmmsg</c> call), whose handling may
    /// add frames for the same peers, and it has not held for
    /// <see cref="MaxHeldDatagrams"/> datagrams yet nor become saturated (it then hands messages to the loops and
    /// adds nothing). Asks the socket only when something is held.
    /// </summary>
    private void SendHeldUnlessMoreWaiting(Socket socket, bool moreInBatch)
    {
        if (t_held is { HoldsFrames: true } held && held.Transport == this
            && ++_heldDatagrams < MaxHeldDatagrams && !((IInlineSource)this).IsSaturated && (moreInBatch || socket.Available > 0))
        {
            return;
        }

        SendHeldFromReceiveThread();
    }

    /// <summary>The receive thread sends what it holds and starts counting its held datagrams again.</summary>
    private void SendHeldFromReceiveThread()
    {
        _heldDatagrams = 0;
        SendHeld();
    }

    /// <summary>Holds <paramref name="frame"/> when the current thread holds sends for this transport.</summary>
    private bool TryHold(NodeId destination, byte[] frame)
    {
        if (t_held is not { Holding: true } held || held.Transport != this)
        {
            return false;
        }

        held.Add(destination, frame);
        return true;
    }

    /// <summary>
    /// Delivers the frames of a bundle datagram (tag already checked and cut off), after checking its whole layout:
    /// a malformed bundle is dropped entirely and counted once as <see cref="DropReason.BadLength"/> (its count field
    /// cannot be trusted).
    /// </summary>
    private void DeliverBundle(ReadOnlySpan<byte> datagram)
    {
        if (!IsWellFormedBundle(datagram, out var count))
        {
            Statistics.OnDropped(TransportKind.Udp, DropReason.BadLength);
            return;
        }

        var position = BundleHeaderLength;
        for (var i = 0; i < count; i++)
        {
            var length = BinaryPrimitives.ReadUInt16LittleEndian(datagram[position..]);
            position += BundleFramePrefixLength;
            Deliver(datagram.Slice(position, length), TransportKind.Udp);
            position += length;
        }
    }

    /// <summary>Whether the bundle's count and lengths describe exactly the datagram, with at least one frame and each long enough for a header.</summary>
    private static bool IsWellFormedBundle(ReadOnlySpan<byte> datagram, out int count)
    {
        count = BinaryPrimitives.ReadUInt16LittleEndian(datagram[4..]);
        var position = BundleHeaderLength;
        for (var i = 0; i < count; i++)
        {
            if (position + BundleFramePrefixLength > datagram.Length)
            {
                return false;
            }

            var length = BinaryPrimitives.ReadUInt16LittleEndian(datagram[position..]);
            position += BundleFramePrefixLength + length;
            if (length <= FrameCodec.PrefixLength || position > datagram.Length)
            {
                return false;
            }
        }

        return count > 0 && position == datagram.Length;
    }

    /// <summary>Whether a datagram (tag cut off) is a bundle of frames rather than one PhxPaxos frame.</summary>
    private static bool IsBundle(ReadOnlySpan<byte> datagram) =>
        datagram.Length >= BundleHeaderLength && BinaryPrimitives.ReadInt32LittleEndian(datagram) == BundleMarker;

    /// <summary>Frames one thread holds, per destination; used by that thread only.</summary>
    private sealed class HeldFrames(NetworkTransport transport)
    {
        private readonly List<Destination> _destinations = new(4);

        public NetworkTransport Transport { get; } = transport;

        public bool Holding { get; set; }

        public bool HoldsFrames { get; private set; }

        /// <summary>Frames held for one <c>sendmmsg</c> call when datagrams are batched rather than coalesced.</summary>
        private DatagramBatch? _batch;

        public void Add(NodeId destination, byte[] frame)
        {
            if (!Transport._coalesce)
            {
                _batch ??= new DatagramBatch(Transport);
                if (_batch.IsFull)
                {
                    _batch.Send();
                }

                _batch.Add(destination, frame);
                HoldsFrames = true;
                return;
            }

            Destination? held = null;
            foreach (var d in _destinations)
            {
                if (d.Node == destination)
                {
                    held = d;
                    break;
                }
            }

            if (held is null)
            {
                held = new Destination(destination);
                _destinations.Add(held);
            }

            if (held.Count > 0 && held.BundleLength + BundleFramePrefixLength + frame.Length > Transport._udpMaxSize)
            {
                // The bundle is full: it goes now and this frame starts the next one.
                held.Send(Transport);
            }

            held.Add(frame, Transport._udpMaxSize + Transport._tagLength);
            HoldsFrames = true;
        }

        public void SendAll()
        {
            if (!HoldsFrames)
            {
                return;
            }

            HoldsFrames = false;
            _batch?.Send();
            foreach (var d in _destinations)
            {
                if (d.Count > 0)
                {
                    d.Send(Transport);
                }
            }
        }
    }

    /// <summary>The frames held for one destination: the first by reference, a bundle built once a second one comes.</summary>
    private sealed class Destination(NodeId node)
    {
        private byte[]? _first;
        private byte[]? _bundle;

        public NodeId Node { get; } = node;

        public int Count { get; private set; }

        /// <summary>Length of the bundle these frames make (without a tag): where the next frame goes.</summary>
        public int BundleLength { get; private set; } = BundleHeaderLength;

        public void Add(byte[] frame, int capacity)
        {
            if (Count == 0)
            {
                _first = frame;
            }
            else
            {
                if (Count == 1)
                {
                    // Kept for the thread's life; room for the largest bundle and its tag.
                    _bundle ??= new byte[capacity];
                    BinaryPrimitives.WriteInt32LittleEndian(_bundle, BundleMarker);
                    Write(_first!, BundleHeaderLength);
                    _first = null;
                }

                Write(frame, BundleLength);
            }

            Count++;
            BundleLength += BundleFramePrefixLength + frame.Length;
        }

        public void Send(NetworkTransport transport)
        {
            if (Count == 1)
            {
                transport.SendUdp(Node, _first!);
                _first = null;
            }
            else
            {
                BinaryPrimitives.WriteUInt16LittleEndian(_bundle.AsSpan(4), (ushort)Count);
                transport.SendBundle(Node, _bundle!, BundleLength, Count);
            }

            Count = 0;
            BundleLength = BundleHeaderLength;
        }

        private void Write(byte[] frame, int position)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(_bundle.AsSpan(position), (ushort)frame.Length);
            frame.CopyTo(_bundle.AsSpan(position + BundleFramePrefixLength));
        }
    }
}
