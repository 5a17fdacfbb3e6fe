using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Transport;
using Orleans.Paxos.TestSupport;
using static Orleans.Paxos.Engine.Tests.Transport.TransportConformanceTests;

namespace Orleans.Paxos.Engine.Tests.Transport;

/// <summary>
/// <see cref="NetworkTransportOptions.CoalesceDatagrams"/> on real loopback sockets: what a thread sends while it holds
/// its sends leaves as one datagram per peer, in the documented layout, within the UDP limit; malformed bundles are
/// refused whole; nodes without the option read bundles.
/// </summary>
public sealed class CoalescedDatagramTests : IDisposable
{
    private readonly List<IDisposable> _disposables = [];

    public void Dispose()
    {
        for (var i = _disposables.Count - 1; i >= 0; i--)
        {
            _disposables[i].Dispose();
        }
    }

    [Fact]
    public void A_burst_reaches_each_peer_in_one_datagram_in_order_and_a_peer_without_the_option_reads_it()
    {
        var (a, _) = Start(coalesce: true);
        var (b, sinkB) = Start(coalesce: true);
        var (c, sinkC) = Start(coalesce: false);
        var batching = (ISendBatching)a;

        batching.HoldSends();
        for (ulong i = 1; i <= 5; i++)
        {
            Assert.True(a.Send(b.LocalNode, Frame(a.LocalNode, i), TransportKind.Udp));
        }

        for (ulong i = 11; i <= 13; i++)
        {
            Assert.True(a.Send(c.LocalNode, Frame(a.LocalNode, i), TransportKind.Udp));
        }

        // Frames that go by TCP are never held.
        Assert.True(a.Send(b.LocalNode, Frame(a.LocalNode, 100), TransportKind.Tcp));
        Assert.Equal(0, a.Statistics.DatagramsSent);
        Assert.Equal(0, a.Statistics.FramesSent(TransportKind.Udp));

        batching.SendHeld();
        Assert.Equal(2, a.Statistics.DatagramsSent);
        Assert.Equal(8, a.Statistics.FramesSent(TransportKind.Udp));
        WaitUntil(() => sinkB.CountVia(TransportKind.Udp) == 5 && sinkC.Count == 3 && sinkB.HasSeen(100), "every frame");
        Assert.Equal([1UL, 2, 3, 4, 5], sinkB.Received.Where(f => f.Via == TransportKind.Udp).Select(f => f.Instance));
        Assert.Equal([11UL, 12, 13], sinkC.Received.Select(f => f.Instance));
        Assert.Equal(0, sinkB.Invalid + sinkC.Invalid);

        // Not holding any more: each frame is its own datagram again.
        Assert.True(a.Send(b.LocalNode, Frame(a.LocalNode, 6), TransportKind.Udp));
        Assert.Equal(3, a.Statistics.DatagramsSent);
        WaitUntil(() => sinkB.HasSeen(6), "the frame sent after the burst");
    }

    [Fact]
    public void What_the_receive_thread_sends_while_it_handles_one_datagram_leaves_in_one_datagram()
    {
        using var raw = RawReceiver(out var rawNode);
        NetworkTransport? a = null;
        var sink = new ReplyingSink(frame =>
        {
            // The node's answer to each frame it receives: a frame to the raw peer, sent on the receive thread.
            FrameCodec.TryDecode(frame, FrameCodec.DefaultMaxFrameLength, out var decoded);
            a!.Send(rawNode, Frame(a.LocalNode, decoded!.Paxos!.InstanceID + 100), TransportKind.Udp);
        });
        a = new NetworkTransport(new NetworkTransportOptions
        {
            LocalNode = NodeId.From(IPAddress.Loopback, LoopbackPorts.Next()),
            CoalesceDatagrams = true,
        });
        _disposables.Add(a);
        a.Start(sink);

        using var sender = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        var frames = Enumerable.Range(1, 5).Select(i => Frame(a.LocalNode, (ulong)i)).ToArray();
        sender.SendTo(Bundle(5, [.. frames.Select(f => (f, f.Length))]), a.LocalNode.EndPoint);

        var replies = Unbundle(Receive(raw));
        Assert.Equal(frames.Select((_, i) => Frame(a.LocalNode, (ulong)i + 101)), replies);

        // The sender counts after its socket call returns, which can be after the peer has the datagram.
        // (It counts the frames first, then the datagram.)
        WaitUntil(() => a.Statistics.DatagramsSent >= 1, "the sender's counters");
        Assert.Equal(1, a.Statistics.DatagramsSent);
        Assert.Equal(5, a.Statistics.FramesSent(TransportKind.Udp));
    }

    [Fact]
    public void A_thread_that_starts_holding_for_another_transport_first_sends_what_it_held()
    {
        var (a, _) = Start(coalesce: true);
        var (b, _) = Start(coalesce: true);
        var (c, sinkC) = Start(coalesce: true);

        ((ISendBatching)a).HoldSends();
        a.Send(c.LocalNode, Frame(a.LocalNode, 1), TransportKind.Udp);
        a.Send(c.LocalNode, Frame(a.LocalNode, 2), TransportKind.Udp);
        Assert.Equal(0, a.Statistics.DatagramsSent);

        ((ISendBatching)b).HoldSends();
        Assert.Equal(1, a.Statistics.DatagramsSent);
        b.Send(c.LocalNode, Frame(b.LocalNode, 3), TransportKind.Udp);
        ((ISendBatching)b).SendHeld();
        WaitUntil(() => sinkC.HasSeen(1) && sinkC.HasSeen(2) && sinkC.HasSeen(3), "the frames held for both transports");

        // The first transport's sends are not held any more.
        ((ISendBatching)a).SendHeld();
        a.Send(c.LocalNode, Frame(a.LocalNode, 4), TransportKind.Udp);
        Assert.Equal(2, a.Statistics.DatagramsSent);
    }

    [Fact]
    public void A_single_frame_goes_as_a_plain_phxpaxos_datagram_and_several_as_the_documented_bundle()
    {
        var (a, _) = Start(coalesce: true);
        using var raw = RawReceiver(out var rawNode);
        var batching = (ISendBatching)a;
        var first = Frame(a.LocalNode, 1);
        var second = Frame(a.LocalNode, 2, 40);

        batching.HoldSends();
        a.Send(rawNode, first, TransportKind.Udp);
        batching.SendHeld();
        Assert.Equal(first, Receive(raw));

        batching.HoldSends();
        a.Send(rawNode, first, TransportKind.Udp);
        a.Send(rawNode, second, TransportKind.Udp);
        batching.SendHeld();
        var bundle = Receive(raw);
        byte[] expected =
        [
            0x50, 0x58, 0x42, 0x31, // "PXB1"
            2, 0,
            (byte)first.Length, (byte)(first.Length >> 8), .. first,
            (byte)second.Length, (byte)(second.Length >> 8), .. second,
        ];
        Assert.Equal(expected, bundle);
        Assert.Equal(NetworkTransport.BundleMarker, BinaryPrimitives.ReadInt32LittleEndian(bundle));
    }

    [Fact]
    public void Bundles_stay_within_the_udp_limit()
    {
        const int udpMaxSize = 1000;
        var (a, _) = Start(coalesce: true, o => o.UdpMaxSize = udpMaxSize);
        using var raw = RawReceiver(out var rawNode);
        var batching = (ISendBatching)a;
        var frames = Enumerable.Range(1, 20).Select(i => Frame(a.LocalNode, (ulong)i, 150 + i)).ToArray();

        batching.HoldSends();
        foreach (var frame in frames)
        {
            a.Send(rawNode, frame, TransportKind.Udp);
        }

        batching.SendHeld();
        var received = new List<byte[]>();
        for (var d = 0; d < a.Statistics.DatagramsSent; d++)
        {
            var datagram = Receive(raw);
            Assert.InRange(datagram.Length, 1, udpMaxSize);
            received.AddRange(Unbundle(datagram));
        }

        Assert.Equal(frames, received);
        Assert.InRange(a.Statistics.DatagramsSent, (frames.Sum(f => f.Length + 2) / udpMaxSize) + 1, frames.Length - 1);
    }

    [Fact]
    public void Malformed_bundles_are_dropped_whole_counted_and_the_node_keeps_reading()
    {
        var (node, sink) = Start(coalesce: false);
        using var raw = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        var target = node.LocalNode.EndPoint;
        var one = Frame(node.LocalNode, 1);
        var two = Frame(node.LocalNode, 2);

        raw.SendTo(Bundle(2, (one, one.Length), (two, two.Length - 1)), target); // second frame cut short
        raw.SendTo(Bundle(0), target); // no frame
        raw.SendTo([.. Bundle(1, (one, one.Length)), 7], target); // a trailing byte
        raw.SendTo(Bundle(2, (one, one.Length), ([1, 2, 3], 3)), target); // a frame too short to hold a header
        raw.SendTo(Bundle(3, (one, one.Length), (two, two.Length)), target); // counts three, holds two
        WaitUntil(() => node.Statistics.Dropped(TransportKind.Udp, DropReason.BadLength) == 5, "every malformed bundle counted once");
        Assert.Equal(0, sink.Count);

        raw.SendTo(Bundle(2, (one, one.Length), (two, two.Length)), target);
        WaitUntil(() => sink.HasSeen(1) && sink.HasSeen(2), "the well-formed bundle");
        Assert.Equal(0, sink.Invalid);
    }

    [Fact]
    public void Authenticated_bundles_carry_one_tag_and_a_wrong_tag_refuses_every_frame()
    {
        var (a, _) = Start(coalesce: true, o => o.AuthenticationKey = PeerAuthenticationTests.KeyA);
        var (b, sink) = Start(coalesce: true, o => o.AuthenticationKey = PeerAuthenticationTests.KeyA);
        var batching = (ISendBatching)a;

        batching.HoldSends();
        a.Send(b.LocalNode, Frame(a.LocalNode, 1), TransportKind.Udp);
        a.Send(b.LocalNode, Frame(a.LocalNode, 2), TransportKind.Udp);
        batching.SendHeld();
        WaitUntil(() => sink.HasSeen(1) && sink.HasSeen(2), "both frames of the authenticated bundle");
        Assert.Equal(1, a.Statistics.DatagramsSent);

        using var raw = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        var one = Frame(a.LocalNode, 3);
        raw.SendTo([.. Bundle(2, (one, one.Length), (one, one.Length)), .. new byte[FrameAuthenticator.TagLength]], b.LocalNode.EndPoint);
        WaitUntil(() => b.Statistics.AuthenticationFailures == 1, "the forged bundle refused");
        Assert.False(sink.HasSeen(3));
    }

    private (NetworkTransport Transport, FrameCollector Sink) Start(bool coalesce, Action<NetworkTransportOptions>? configure = null)
    {
        var options = new NetworkTransportOptions
        {
            LocalNode = NodeId.From(IPAddress.Loopback, LoopbackPorts.Next()),
            CoalesceDatagrams = coalesce,
        };
        configure?.Invoke(options);
        var transport = new NetworkTransport(options);
        _disposables.Add(transport);
        var sink = new FrameCollector();
        transport.Start(sink);
        Assert.Equal(coalesce, transport.CoalescesDatagrams);
        return (transport, sink);
    }

    private sealed class ReplyingSink(Action<byte[]> onFrame) : IFrameSink
    {
        public void OnFrame(ReadOnlySpan<byte> frame, TransportKind via) => onFrame(frame.ToArray());
    }

    private static Socket RawReceiver(out NodeId node)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { ReceiveTimeout = 30_000 };
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        node = NodeId.From(IPAddress.Loopback, ((IPEndPoint)socket.LocalEndPoint!).Port);
        return socket;
    }

    private static byte[] Receive(Socket socket)
    {
        var buffer = new byte[65536];
        var length = socket.Receive(buffer);
        return buffer[..length];
    }

    /// <summary>A bundle declaring <paramref name="count"/> frames, holding the given prefixes of the given frames.</summary>
    private static byte[] Bundle(int count, params (byte[] Frame, int Length)[] frames)
    {
        var bundle = new List<byte>();
        bundle.AddRange(BitConverter.GetBytes(NetworkTransport.BundleMarker));
        bundle.AddRange(BitConverter.GetBytes((ushort)count));
        foreach (var (frame, length) in frames)
        {
            bundle.AddRange(BitConverter.GetBytes((ushort)frame.Length));
            bundle.AddRange(frame.Take(length));
        }

        return [.. bundle];
    }

    private static List<byte[]> Unbundle(byte[] datagram)
    {
        if (BinaryPrimitives.ReadInt32LittleEndian(datagram) != NetworkTransport.BundleMarker)
        {
            return [datagram];
        }

        var frames = new List<byte[]>();
        var count = BinaryPrimitives.ReadUInt16LittleEndian(datagram.AsSpan(4));
        var position = NetworkTransport.BundleHeaderLength;
        for (var i = 0; i < count; i++)
        {
            var length = BinaryPrimitives.ReadUInt16LittleEndian(datagram.AsSpan(position));
            frames.Add(datagram[(position + 2)..(position + 2 + length)]);
            position += 2 + length;
        }

        Assert.Equal(datagram.Length, position);
        return frames;
    }

    private static void WaitUntil(Func<bool> condition, string what)
    {
        if (!SpinWait.SpinUntil(condition, TimeSpan.FromSeconds(30)))
        {
            throw new TimeoutException($"timed out waiting for {what}");
        }
    }
}
