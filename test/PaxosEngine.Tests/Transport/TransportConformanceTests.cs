using System.Collections.Concurrent;
using System.Diagnostics;
using Google.Protobuf;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Tests.Transport;

/// <summary>
/// Behaviour every <see cref="ITransport"/> must show, written once and run against each implementation
/// (real sockets on loopback, and the in-memory network used by the consensus tests).
/// </summary>
public abstract class TransportConformanceTests : IDisposable
{
    protected static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    private readonly List<ITransport> _created = [];

    /// <summary>Creates a transport for <paramref name="node"/>, not started. It is disposed at the end of the test.</summary>
    protected abstract ITransport CreateTransport(NodeId node);

    /// <summary>A node id nobody else uses (for sockets: a free port).</summary>
    protected abstract NodeId NewNodeId();

    /// <summary>Checks what the implementation says it carried by each kind (the real transport's statistics).</summary>
    protected virtual void AssertCarried(ITransport sender, long udpFrames, long tcpFrames)
    {
    }

    protected ITransport Track(ITransport transport)
    {
        lock (_created)
        {
            _created.Add(transport);
        }

        return transport;
    }

    protected (ITransport Transport, FrameCollector Sink) StartNode(NodeId? id = null)
    {
        var transport = Track(CreateTransport(id ?? NewNodeId()));
        var sink = new FrameCollector();
        transport.Start(sink);
        return (transport, sink);
    }

    public void Dispose()
    {
        lock (_created)
        {
            foreach (var transport in _created)
            {
                transport.Dispose();
            }
        }

        GC.SuppressFinalize(this);
    }

    public static byte[] Frame(NodeId from, ulong instance, int valueLength = 16)
    {
        var value = new byte[valueLength];
        for (var i = 0; i < value.Length; i++)
        {
            value[i] = (byte)(instance + (ulong)i);
        }

        return FrameCodec.Encode(0, 0, new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.Accept,
            NodeID = from,
            InstanceID = instance,
            ProposalID = 1,
            Value = UnsafeByteOperations.UnsafeWrap(value),
        });
    }

    public static void WaitUntil(Func<bool> condition, string what)
    {
        Assert.True(SpinWait.SpinUntil(condition, Patience), $"timed out waiting for: {what}");
    }

    [Theory]
    [InlineData(0, TransportKind.Udp)]
    [InlineData(100, TransportKind.Udp)]
    [InlineData(4000, TransportKind.Udp)]
    [InlineData(5000, TransportKind.Tcp)]
    [InlineData(100 * 1024, TransportKind.Tcp)]
    [InlineData(10 * 1024 * 1024, TransportKind.Tcp)]
    public void Frames_of_every_size_arrive_intact_by_the_expected_kind(int valueLength, TransportKind expected)
    {
        var (a, _) = StartNode();
        var (b, sink) = StartNode();
        var frame = Frame(a.LocalNode, 7, valueLength);

        Assert.True(a.Send(b.LocalNode, frame, TransportKind.Udp));

        WaitUntil(() => sink.Count == 1, "the frame");
        var got = sink.Received.Single();
        Assert.Equal(7ul, got.Instance);
        Assert.Equal(valueLength, got.ValueLength);
        Assert.Equal(expected, got.Via);
        Assert.Equal(0, sink.Invalid);
        AssertCarried(a, expected == TransportKind.Udp ? 1 : 0, expected == TransportKind.Tcp ? 1 : 0);
    }

    [Fact]
    public void Large_frames_one_after_another_on_one_connection_arrive_intact_and_in_order()
    {
        // The first grows the reader's buffer step by step; the later ones get a buffer their size at once.
        var (a, _) = StartNode();
        var (b, sink) = StartNode();
        var lengths = new[] { 3 * 1024 * 1024, 100 * 1024, 3 * 1024 * 1024, 5 * 1024 * 1024 };
        for (var i = 0; i < lengths.Length; i++)
        {
            Assert.True(a.Send(b.LocalNode, Frame(a.LocalNode, (ulong)i + 1, lengths[i]), TransportKind.Tcp));
        }

        WaitUntil(() => sink.Count == lengths.Length, "every frame");
        Assert.Equal(0, sink.Invalid);
        Assert.Equal(lengths.Select((l, i) => ((ulong)i + 1, l)), sink.Received.Select(f => (f.Instance, f.ValueLength)));
    }

    [Fact]
    public void Small_frames_go_by_tcp_when_asked()
    {
        var (a, _) = StartNode();
        var (b, sink) = StartNode();
        Assert.True(a.Send(b.LocalNode, Frame(a.LocalNode, 1), TransportKind.Tcp));
        WaitUntil(() => sink.Count == 1, "the frame");
        Assert.Equal(TransportKind.Tcp, sink.Received.Single().Via);
        AssertCarried(a, 0, 1);
    }

    [Fact]
    public void Many_concurrent_senders_deliver_every_tcp_frame_and_nearly_every_udp_frame()
    {
        const int Senders = 8;
        const int PerSender = 200;
        var refused = 0;
        var (receiver, sink) = StartNode();
        var senders = Enumerable.Range(0, 4).Select(_ => StartNode().Transport).ToArray();
        var threads = Enumerable.Range(0, Senders).Select(t => new Thread(() =>
        {
            var from = senders[t % senders.Length];
            for (var i = 0; i < PerSender; i++)
            {
                var instance = (ulong)((t * PerSender) + i);
                if (!from.Send(receiver.LocalNode, Frame(from.LocalNode, instance, 64), TransportKind.Tcp)
                    | !from.Send(receiver.LocalNode, Frame(from.LocalNode, 1_000_000 + instance, 64), TransportKind.Udp))
                {
                    Interlocked.Increment(ref refused);
                }
            }
        })).ToArray();
        foreach (var thread in threads)
        {
            thread.Start();
        }

        foreach (var thread in threads)
        {
            thread.Join();
        }

        Assert.Equal(0, refused);
        WaitUntil(() => sink.CountVia(TransportKind.Tcp) == Senders * PerSender, "every TCP frame");
        Assert.Equal(Senders * PerSender, sink.Received.Where(r => r.Via == TransportKind.Tcp).Select(r => r.Instance).Distinct().Count());

        // UDP may lose datagrams by design; on loopback with a 4 MiB socket buffer nearly all arrive.
        WaitUntil(() => sink.CountVia(TransportKind.Udp) >= Senders * PerSender * 9 / 10, "nearly every UDP frame");
        Assert.Equal(0, sink.Invalid);
    }

    [Fact]
    public void Tcp_frames_keep_their_order_per_sender()
    {
        const int PerSender = 1000;
        var refused = 0;
        var (receiver, sink) = StartNode();
        var senders = Enumerable.Range(0, 3).Select(_ => StartNode().Transport).ToArray();
        var threads = senders.Select(s => new Thread(() =>
        {
            for (var i = 0; i < PerSender; i++)
            {
                // Mixed sizes so that batching and the large-frame path interleave.
                if (!s.Send(receiver.LocalNode, Frame(s.LocalNode, (ulong)i, i % 50 == 0 ? 70_000 : 100), TransportKind.Tcp))
                {
                    Interlocked.Increment(ref refused);
                }
            }
        })).ToArray();
        foreach (var thread in threads)
        {
            thread.Start();
        }

        foreach (var thread in threads)
        {
            thread.Join();
        }

        Assert.Equal(0, refused);
        WaitUntil(() => sink.Count == senders.Length * PerSender, "every frame");
        foreach (var s in senders)
        {
            var sequence = sink.Received.Where(r => r.From == s.LocalNode.Value).Select(r => r.Instance).ToList();
            Assert.Equal(Enumerable.Range(0, PerSender).Select(i => (ulong)i), sequence);
        }
    }

    [Fact]
    public void After_bursts_from_concurrent_senders_single_frames_still_move_at_once()
    {
        // Bursts from many threads race the transport threads' sleep/wake hand-off; a wake-up lost there used to
        // leave a loop asleep until its one-second safety timeout, for every later frame. Single frames after the
        // bursts show it: none may need that timeout to move.
        const int Rounds = 5;
        const int Threads = 8;
        const int PerThread = 300;
        var (receiver, sink) = StartNode();
        var (sender, _) = StartNode();
        var expected = 0;
        for (var round = 0; round < Rounds; round++)
        {
            var threads = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
            {
                for (var i = 0; i < PerThread; i++)
                {
                    sender.Send(receiver.LocalNode, Frame(sender.LocalNode, 1_000_000, 32), TransportKind.Tcp);
                }
            })).ToArray();
            foreach (var thread in threads)
            {
                thread.Start();
            }

            foreach (var thread in threads)
            {
                thread.Join();
            }

            expected += Threads * PerThread;
            WaitUntil(() => sink.Count >= expected, "the burst");
        }

        var slow = 0;
        for (var i = 0; i < 40; i++)
        {
            var instance = (ulong)i;
            var kind = i % 2 == 0 ? TransportKind.Tcp : TransportKind.Udp;
            if (!sender.Send(receiver.LocalNode, Frame(sender.LocalNode, instance), kind)
                || !SpinWait.SpinUntil(() => sink.HasSeen(instance), TimeSpan.FromMilliseconds(900)))
            {
                slow++;
            }
        }

        Assert.Equal(0, slow);
    }

    [Fact]
    public void A_restarted_peer_receives_again_by_both_kinds()
    {
        var (a, _) = StartNode();
        var (b, sinkB) = StartNode();
        var bId = b.LocalNode;
        Assert.True(a.Send(bId, Frame(a.LocalNode, 1), TransportKind.Tcp));
        WaitUntil(() => sinkB.Count == 1, "the first frame");

        b.Dispose();
        var (b2, sinkB2) = StartNode(bId);

        // The connection to the old incarnation is dead; the transport must notice and reconnect. A frame sent
        // while it notices may be lost (as in PhxPaxos), so keep sending until one arrives.
        var instance = 100ul;
        var deadline = Stopwatch.StartNew();
        while (sinkB2.CountVia(TransportKind.Tcp) == 0 && deadline.Elapsed < Patience)
        {
            a.Send(bId, Frame(a.LocalNode, instance++), TransportKind.Tcp);
            Thread.Sleep(50);
        }

        Assert.True(sinkB2.CountVia(TransportKind.Tcp) > 0, "no TCP frame reached the restarted peer");
        Assert.True(a.Send(bId, Frame(a.LocalNode, 9999), TransportKind.Udp));
        WaitUntil(() => sinkB2.Received.Any(r => r.Instance == 9999), "a UDP frame after the restart");
        Assert.Equal(0, sinkB2.Invalid);
    }

    [Fact]
    public void Sending_to_a_down_peer_neither_blocks_nor_hangs_dispose()
    {
        var (a, _) = StartNode();
        var down = NewNodeId();
        var watch = Stopwatch.StartNew();
        for (var i = 0; i < 2000; i++)
        {
            a.Send(down, Frame(a.LocalNode, (ulong)i, 100), TransportKind.Tcp);
            a.Send(down, Frame(a.LocalNode, (ulong)i, 100), TransportKind.Udp);
        }

        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), "Send blocked on a down peer");

        // Let a connect attempt or two fail, then stop while frames are still queued.
        Thread.Sleep(300);
        watch.Restart();
        a.Dispose();
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"Dispose took {watch.Elapsed}");
        Assert.False(a.Send(down, Frame(a.LocalNode, 1), TransportKind.Udp));
        a.Dispose();
    }

    [Fact]
    public void A_frame_larger_than_the_maximum_is_refused()
    {
        var (a, _) = StartNode();
        var (b, sink) = StartNode();
        Assert.False(a.Send(b.LocalNode, new byte[FrameCodec.DefaultMaxFrameLength + 1], TransportKind.Tcp));
        Assert.True(a.Send(b.LocalNode, Frame(a.LocalNode, 2), TransportKind.Udp));
        WaitUntil(() => sink.Count == 1, "the next frame");
    }

    [Fact]
    public void A_stopped_transport_refuses_frames_and_stops_idempotently()
    {
        var (a, _) = StartNode();
        var (b, _) = StartNode();
        a.Dispose();
        a.Dispose();
        Assert.False(a.Send(b.LocalNode, Frame(a.LocalNode, 1), TransportKind.Udp));
        Assert.False(a.Send(b.LocalNode, Frame(a.LocalNode, 1), TransportKind.Tcp));
    }

    /// <summary>A sink that decodes every frame and keeps what the tests compare.</summary>
    public sealed class FrameCollector : IFrameSink
    {
        private readonly ConcurrentQueue<ReceivedFrame> _received = new();
        private readonly ConcurrentDictionary<ulong, bool> _seen = new();
        private int _count;
        private int _invalid;
        private int _udp;
        private int _tcp;

        public IReadOnlyCollection<ReceivedFrame> Received => _received;

        public int Count => Volatile.Read(ref _count);

        public int Invalid => Volatile.Read(ref _invalid);

        public bool HasSeen(ulong instance) => _seen.ContainsKey(instance);

        public int CountVia(TransportKind kind) => kind == TransportKind.Udp ? Volatile.Read(ref _udp) : Volatile.Read(ref _tcp);

        public void OnFrame(ReadOnlySpan<byte> frame, TransportKind via)
        {
            if (FrameCodec.TryDecode(frame, FrameCodec.DefaultMaxFrameLength, out var decoded) != FrameError.None || decoded!.Paxos is null)
            {
                Interlocked.Increment(ref _invalid);
                return;
            }

            var msg = decoded.Paxos;
            _received.Enqueue(new ReceivedFrame(msg.NodeID, msg.InstanceID, msg.Value.Length, via));
            _seen[msg.InstanceID] = true;
            Interlocked.Increment(ref via == TransportKind.Udp ? ref _udp : ref _tcp);
            Interlocked.Increment(ref _count);
        }
    }

    public sealed record ReceivedFrame(ulong From, ulong Instance, int ValueLength, TransportKind Via);
}
