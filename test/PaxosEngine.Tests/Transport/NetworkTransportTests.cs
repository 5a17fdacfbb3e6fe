using System.Buffers.Binary;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Transport;
using Orleans.Paxos.TestSupport;

namespace Orleans.Paxos.Engine.Tests.Transport;

/// <summary>The conformance suite on real sockets (127.0.0.1), plus what only real sockets can show.</summary>
// Counts the process's threads, so it runs in the non-parallel collection, not beside tests that start nodes.
[Collection(nameof(Consensus.MasterTests))]
public sealed class NetworkTransportTests : TransportConformanceTests
{
    private static NetworkTransportOptions Options(NodeId node) => new()
    {
        LocalNode = node,
        ReconnectBackoff = TimeSpan.FromMilliseconds(50),
        MaxReconnectBackoff = TimeSpan.FromMilliseconds(400),
    };

    protected override ITransport CreateTransport(NodeId node) => new NetworkTransport(Options(node));

    protected override NodeId NewNodeId() => NodeId.From(IPAddress.Loopback, LoopbackPorts.Next());

    protected override void AssertCarried(ITransport sender, long udpFrames, long tcpFrames)
    {
        // The sender counts a frame once its socket call returns, which can be after the receiver has it.
        var statistics = ((NetworkTransport)sender).Statistics;
        WaitUntil(
            () => statistics.FramesSent(TransportKind.Udp) == udpFrames && statistics.FramesSent(TransportKind.Tcp) == tcpFrames,
            $"sent counters udp={udpFrames} tcp={tcpFrames}; have {statistics}");
    }

    private (NetworkTransport Transport, FrameCollector Sink) StartReal(Action<NetworkTransportOptions>? configure = null, NodeId? id = null)
    {
        var options = Options(id ?? NewNodeId());
        configure?.Invoke(options);
        var transport = new NetworkTransport(options);
        Track(transport);
        var sink = new FrameCollector();
        transport.Start(sink);
        return (transport, sink);
    }

    [Fact]
    public void Peer_filter_drops_blocked_directions_only_and_heals()
    {
        var filterA = new PeerFilter();
        var filterB = new PeerFilter();
        var (a, sinkA) = StartReal(o => o.PeerFilter = filterA);
        var (b, sinkB) = StartReal(o => o.PeerFilter = filterB);
        var (c, sinkC) = StartReal();

        // One-way: a's frames to b are not sent; b's to a still arrive, and so do a's to c.
        filterA.SetBlockedPeers(new HashSet<NodeId> { b.LocalNode }, new HashSet<NodeId>());
        Assert.False(a.Send(b.LocalNode, Frame(a.LocalNode, 1), TransportKind.Udp));
        Assert.False(a.Send(b.LocalNode, Frame(a.LocalNode, 2), TransportKind.Tcp));
        Assert.True(b.Send(a.LocalNode, Frame(b.LocalNode, 3), TransportKind.Udp));
        Assert.True(a.Send(c.LocalNode, Frame(a.LocalNode, 4), TransportKind.Tcp));
        WaitUntil(() => sinkA.HasSeen(3) && sinkC.HasSeen(4), "the unblocked directions carry frames");
        Assert.Equal(2, filterA.DroppedOutbound);
        Assert.Equal(1, a.Statistics.Dropped(TransportKind.Udp, DropReason.Blocked));
        Assert.Equal(1, a.Statistics.Dropped(TransportKind.Tcp, DropReason.Blocked));

        // Inbound: b drops what a sends on arrival (the sender is the node id in the frame), not what c sends.
        filterA.Clear();
        filterB.SetBlockedPeers(new HashSet<NodeId>(), new HashSet<NodeId> { a.LocalNode });
        Assert.True(a.Send(b.LocalNode, Frame(a.LocalNode, 5), TransportKind.Udp));
        Assert.True(a.Send(b.LocalNode, Frame(a.LocalNode, 6), TransportKind.Tcp));
        Assert.True(c.Send(b.LocalNode, Frame(c.LocalNode, 7), TransportKind.Udp));
        WaitUntil(() => sinkB.HasSeen(7) && filterB.DroppedInbound == 2, "c's frame arrives, a's two are dropped on arrival");
        Assert.Equal(2, b.Statistics.Dropped(TransportKind.Udp, DropReason.Blocked) + b.Statistics.Dropped(TransportKind.Tcp, DropReason.Blocked));

        // Healed: everything flows again; nothing blocked earlier shows up late.
        filterB.Clear();
        Assert.True(a.Send(b.LocalNode, Frame(a.LocalNode, 8), TransportKind.Udp));
        WaitUntil(() => sinkB.HasSeen(8), "a's frame after healing");
        Assert.False(sinkB.HasSeen(1) || sinkB.HasSeen(2) || sinkB.HasSeen(5) || sinkB.HasSeen(6));
        Assert.False(filterA.IsActive || filterB.IsActive);
    }

    [Fact]
    public void Queue_caps_drop_and_count_frames_for_a_down_peer()
    {
        var (byFrames, _) = StartReal(o => o.TcpQueueMaxFrames = 100);
        var (byBytes, _) = StartReal(o => o.TcpQueueMaxBytes = 10_000);
        var down = NewNodeId();
        var refusedByFrames = 0;
        var refusedByBytes = 0;
        for (var i = 0; i < 1000; i++)
        {
            refusedByFrames += byFrames.Send(down, Frame(byFrames.LocalNode, (ulong)i, 100), TransportKind.Tcp) ? 0 : 1;
            refusedByBytes += byBytes.Send(down, Frame(byBytes.LocalNode, (ulong)i, 1000), TransportKind.Tcp) ? 0 : 1;
        }

        Assert.Equal(900, refusedByFrames);
        Assert.Equal(refusedByFrames, byFrames.Statistics.Dropped(TransportKind.Tcp, DropReason.QueueFull));
        Assert.InRange(refusedByBytes, 990, 1000);
        Assert.Equal(refusedByBytes, byBytes.Statistics.Dropped(TransportKind.Tcp, DropReason.QueueFull));

        byFrames.Dispose();
        Assert.Equal(100, byFrames.Statistics.Dropped(TransportKind.Tcp, DropReason.Stopped) + byFrames.Statistics.Dropped(TransportKind.Tcp, DropReason.Stale));
    }

    [Fact]
    public void A_peer_that_stops_reading_gets_every_frame_in_order_once_it_reads_again()
    {
        // A raw peer that accepts and does not read: once the connection is up, senders write their frames
        // themselves until the socket buffers are full, and the write loop sends the rest when the peer reads.
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var peer = NewNodeId();
        listener.Bind(peer.EndPoint);
        listener.Listen(1);
        var (sender, _) = StartReal();
        Assert.True(sender.Send(peer, Frame(sender.LocalNode, 0, 60_000), TransportKind.Tcp));
        WaitUntil(() => sender.Statistics.FramesSent(TransportKind.Tcp) == 1, "the first frame written");

        // 30 MB: more than the kernel buffers of one loopback connection hold.
        const int Count = 500;
        var senders = Enumerable.Range(0, 2).Select(t => new Thread(() =>
        {
            for (var i = 1 + t; i <= Count; i += 2)
            {
                Assert.True(sender.Send(peer, Frame(sender.LocalNode, (ulong)i, 60_000), TransportKind.Tcp));
            }
        })).ToList();

        // Two threads at once, one of them the test's: frames of one thread keep their order, the two interleave.
        senders.ForEach(t => t.Start());
        senders.ForEach(t => t.Join());
        Assert.True(sender.Statistics.FramesSent(TransportKind.Tcp) < Count + 1, "the socket never filled up");

        using var accepted = listener.Accept();
        accepted.ReceiveTimeout = (int)Patience.TotalMilliseconds;
        var lastOdd = -1L;
        var lastEven = 0L;
        var seen = new HashSet<long>();
        for (var received = 0; received < Count + 1; received++)
        {
            var prefix = ReceiveExactly(accepted, TcpFraming.PrefixLength);
            Assert.True(TcpFraming.TryReadFrameLength(prefix, FrameCodec.DefaultMaxFrameLength, out var length));
            var frame = ReceiveExactly(accepted, length);
            Assert.Equal(FrameError.None, FrameCodec.TryDecode(frame, FrameCodec.DefaultMaxFrameLength, out var decoded));
            var instance = (long)decoded!.Paxos!.InstanceID;
            if (received == 0)
            {
                Assert.Equal(0, instance);
            }
            else if (instance % 2 == 1)
            {
                Assert.True(instance > lastOdd, $"frame {instance} after {lastOdd}");
                lastOdd = instance;
            }
            else
            {
                Assert.True(instance > lastEven, $"frame {instance} after {lastEven}");
                lastEven = instance;
            }

            Assert.True(seen.Add(instance), $"frame {instance} twice");
            Assert.Equal(Frame(sender.LocalNode, (ulong)instance, 60_000), frame);
        }

        Assert.Equal(Count + 1, seen.Count);
        Assert.Equal(0, sender.Statistics.DroppedTotal(TransportKind.Tcp));
    }

    [Fact]
    public void Sending_over_tcp_allocates_nothing_per_frame_once_the_connection_is_up()
    {
        // A queue that cannot reuse its storage allocates ever larger segments (megabytes once it has carried a
        // million frames), which the collector then has to clear out of the large object heap.
        var sink = new CountingSink();
        var receiving = new NetworkTransport(Options(NewNodeId()));
        Track(receiving);
        receiving.Start(sink);
        var (sender, _) = StartReal();
        var frame = Frame(sender.LocalNode, 1, 5000);
        Assert.True(sender.Send(receiving.LocalNode, frame, TransportKind.Tcp));
        WaitUntil(() => sink.Count == 1, "the first frame");

        const int Count = 200_000;
        var before = GC.GetTotalAllocatedBytes(precise: true);
        for (var i = 0; i < Count; i++)
        {
            // The transport never changes a frame, so one array can be sent again and again.
            while (!sender.Send(receiving.LocalNode, frame, TransportKind.Tcp))
            {
                Thread.Yield();
            }
        }

        WaitUntil(() => sink.Count == Count + 1, $"{Count} more frames");
        var perFrame = (GC.GetTotalAllocatedBytes(precise: true) - before) / (double)Count;
        Assert.True(perFrame < 8, $"{perFrame:F1} bytes allocated per frame");
    }

    private sealed class CountingSink : IFrameSink
    {
        private int _count;

        public int Count => Volatile.Read(ref _count);

        public void OnFrame(ReadOnlySpan<byte> frame, TransportKind via) => Interlocked.Increment(ref _count);
    }

    private static byte[] ReceiveExactly(Socket socket, int length)
    {
        var bytes = new byte[length];
        var have = 0;
        while (have < length)
        {
            var read = socket.Receive(bytes, have, length - have, SocketFlags.None);
            Assert.True(read > 0, "the sender closed the connection");
            have += read;
        }

        return bytes;
    }

    [Fact]
    public void Frames_queued_too_long_are_dropped_as_stale()
    {
        var (a, _) = StartReal(o => o.TcpQueueDropTime = TimeSpan.FromMilliseconds(200));
        var down = NewNodeId();
        for (var i = 0; i < 50; i++)
        {
            Assert.True(a.Send(down, Frame(a.LocalNode, (ulong)i), TransportKind.Tcp));
        }

        WaitUntil(() => a.Statistics.Dropped(TransportKind.Tcp, DropReason.Stale) == 50, "50 stale drops");
        Assert.True(a.Statistics.ConnectFailures > 0);
    }

    [Fact]
    public void Garbage_datagrams_are_counted_and_the_node_keeps_working()
    {
        var (node, sink) = StartReal(o => o.MaxFrameLength = 2000);
        var (peer, _) = StartReal();
        using var raw = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        var target = node.LocalNode.EndPoint;
        raw.SendTo(new byte[3], target);
        raw.SendTo(new byte[6], target);
        raw.SendTo(new byte[3000], target);
        var random = new Random(5);
        var junk = new byte[100];
        random.NextBytes(junk);
        raw.SendTo(junk, target);

        WaitUntil(() => node.Statistics.Dropped(TransportKind.Udp, DropReason.BadLength) == 2, "two short datagrams counted");
        WaitUntil(() => node.Statistics.Dropped(TransportKind.Udp, DropReason.TooLarge) == 1, "one oversize datagram counted");

        // Framing is fine, content is not: the transport passes it on and the node's decoder refuses it.
        WaitUntil(() => sink.Invalid == 1, "the junk datagram reaches the sink and fails to decode");

        Assert.True(peer.Send(node.LocalNode, Frame(peer.LocalNode, 42), TransportKind.Udp));
        WaitUntil(() => sink.Count == 1, "a good frame after the garbage");
    }

    [Fact]
    public void Bad_tcp_length_prefixes_close_the_connection_and_are_counted()
    {
        var (node, sink) = StartReal();
        var (peer, _) = StartReal();

        foreach (var prefix in new uint[] { 2, 0xFFFFFFFF, (uint)FrameCodec.DefaultMaxFrameLength + 5 })
        {
            using var raw = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 10_000 };
            raw.Connect(node.LocalNode.EndPoint);
            var bytes = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(bytes, prefix);
            raw.Send(bytes);
            Assert.Equal(0, raw.Receive(new byte[1]));
        }

        WaitUntil(() => node.Statistics.Dropped(TransportKind.Tcp, DropReason.BadLength) == 3, "three bad prefixes counted");

        // A well-framed but meaningless frame, then half a frame and a hang-up: neither harms the node.
        using (var raw = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            raw.Connect(node.LocalNode.EndPoint);
            var junk = new byte[4 + 50];
            TcpFraming.WritePrefix(junk, 50);
            raw.Send(junk);
            raw.Send(new byte[] { 0, 0, 1, 0, 9, 9 });
        }

        WaitUntil(() => sink.Invalid == 1, "the junk frame reaches the sink and fails to decode");
        Assert.True(peer.Send(node.LocalNode, Frame(peer.LocalNode, 43, 10_000), TransportKind.Tcp));
        WaitUntil(() => sink.Count == 1, "a good TCP frame after the garbage");
    }

    [Fact]
    public void Starting_and_stopping_twenty_times_releases_threads_and_ports()
    {
        var (peer, _) = StartReal();
        var id = NewNodeId();

        // Warm up once so that lazily created runtime threads are not mistaken for leaks.
        RunOnce();
        var threadsBefore = Process.GetCurrentProcess().Threads.Count;
        for (var i = 0; i < 20; i++)
        {
            RunOnce();
        }

        var threadsAfter = Process.GetCurrentProcess().Threads.Count;
        Assert.True(threadsAfter - threadsBefore < 10, $"threads grew from {threadsBefore} to {threadsAfter}");

        // The port is free again for both protocols.
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        udp.Bind(id.EndPoint);
        using var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        tcp.SetRawSocketOption(1, 2, [1, 0, 0, 0]);
        tcp.Bind(id.EndPoint);

        void RunOnce()
        {
            var sink = new FrameCollector();
            using var transport = new NetworkTransport(Options(id));
            transport.Start(sink);
            Assert.True(peer.Send(id, Frame(peer.LocalNode, 1), TransportKind.Udp));
            Assert.True(peer.Send(id, Frame(peer.LocalNode, 2), TransportKind.Tcp));
            WaitUntil(() => sink.Count == 2, "both frames on this incarnation");
        }
    }

    [Fact]
    public void A_second_transport_on_the_same_port_fails_to_start_and_leaves_the_first_working()
    {
        var (first, sink) = StartReal();
        var (peer, _) = StartReal();
        using var second = new NetworkTransport(Options(first.LocalNode));
        Assert.Throws<SocketException>(() => second.Start(new FrameCollector()));
        Assert.True(peer.Send(first.LocalNode, Frame(peer.LocalNode, 1), TransportKind.Tcp));
        WaitUntil(() => sink.Count == 1, "the first transport still receives");
    }

    [Fact]
    public void Drops_are_published_on_the_orleans_paxos_meter_with_kind_and_reason()
    {
        var seen = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "Orleans.Paxos" && instrument.Name == "paxos.transport.frames.dropped")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            string? kind = null;
            string? reason = null;
            foreach (var tag in tags)
            {
                kind = tag.Key == "kind" ? tag.Value as string : kind;
                reason = tag.Key == "reason" ? tag.Value as string : reason;
            }

            if (kind == "udp" && reason == "bad_length")
            {
                Interlocked.Add(ref seen, (int)value);
            }
        });
        listener.Start();

        var (node, _) = StartReal();
        using var raw = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        raw.SendTo(new byte[2], node.LocalNode.EndPoint);
        WaitUntil(() => Volatile.Read(ref seen) >= 1, "a udp/bad_length measurement");
    }

    [Fact]
    public void Options_are_validated()
    {
        Assert.Throws<ArgumentException>(() => new NetworkTransport(new NetworkTransportOptions()));
        Assert.Throws<ArgumentException>(() => new NetworkTransport(new NetworkTransportOptions { LocalNode = NodeId.Parse("127.0.0.1:0") }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new NetworkTransport(new NetworkTransportOptions { LocalNode = NodeId.Parse("127.0.0.1:1"), TcpIoThreadCount = 0 }));
    }
}
