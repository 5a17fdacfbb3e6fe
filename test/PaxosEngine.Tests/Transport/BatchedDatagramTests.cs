using System.Net;
using System.Net.Sockets;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Transport;
using Orleans.Paxos.TestSupport;
using static Orleans.Paxos.Engine.Tests.Transport.TransportConformanceTests;

namespace Orleans.Paxos.Engine.Tests.Transport;

/// <summary>
/// <see cref="NetworkTransportOptions.BatchDatagrams"/> on real loopback sockets: a held burst leaves with
/// <c>sendmmsg</c> as one plain PhxPaxos datagram per frame, byte for byte and in order, authenticated frames with
/// their tags; datagrams waiting on the receive socket are read together with <c>recvmmsg</c> and each is checked
/// on its own.
/// </summary>
public sealed class BatchedDatagramTests : IDisposable
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
    public void A_held_burst_leaves_as_one_phxpaxos_datagram_per_frame_in_order()
    {
        var (a, _) = Start(batch: true);
        using var first = RawReceiver(out var firstNode);
        using var second = RawReceiver(out var secondNode);
        var batching = (ISendBatching)a;
        var toFirst = Enumerable.Range(1, 5).Select(i => Frame(a.LocalNode, (ulong)i, 10 * i)).ToArray();
        var toSecond = Enumerable.Range(11, 3).Select(i => Frame(a.LocalNode, (ulong)i)).ToArray();

        batching.HoldSends();
        for (var i = 0; i < 5; i++)
        {
            Assert.True(a.Send(firstNode, toFirst[i], TransportKind.Udp));
            if (i < 3)
            {
                Assert.True(a.Send(secondNode, toSecond[i], TransportKind.Udp));
            }
        }

        Assert.Equal(0, a.Statistics.DatagramsSent);
        batching.SendHeld();
        Assert.Equal(8, a.Statistics.DatagramsSent);
        Assert.Equal(8, a.Statistics.FramesSent(TransportKind.Udp));
        Assert.Equal(1, a.SendBatchCalls);
        Assert.Equal(toFirst, toFirst.Select(_ => Receive(first)));
        Assert.Equal(toSecond, toSecond.Select(_ => Receive(second)));

        // Not holding any more: a frame leaves at once.
        Assert.True(a.Send(firstNode, toFirst[0], TransportKind.Udp));
        Assert.Equal(9, a.Statistics.DatagramsSent);
        Assert.Equal(toFirst[0], Receive(first));
    }

    [Fact]
    public void A_burst_longer_than_one_call_takes_arrives_whole_and_in_order()
    {
        var (a, _) = Start(batch: true);
        var (b, sink) = Start(batch: false);
        var batching = (ISendBatching)a;
        var count = (NetworkTransport.MaxSendBatch * 2) + 5;

        batching.HoldSends();
        for (var i = 1; i <= count; i++)
        {
            Assert.True(a.Send(b.LocalNode, Frame(a.LocalNode, (ulong)i), TransportKind.Udp));
        }

        batching.SendHeld();
        WaitUntil(() => sink.Count == count, "every frame of the burst");
        Assert.Equal(Enumerable.Range(1, count).Select(i => (ulong)i), sink.Received.Select(f => f.Instance));
        Assert.Equal(0, sink.Invalid);
        Assert.Equal(count, a.Statistics.DatagramsSent);
        Assert.Equal(3, a.SendBatchCalls);
    }

    [Fact]
    public void Authenticated_frames_in_a_burst_each_carry_their_tag()
    {
        var (a, _) = Start(batch: true, o => o.AuthenticationKey = PeerAuthenticationTests.KeyA);
        var (b, sink) = Start(batch: true, o => o.AuthenticationKey = PeerAuthenticationTests.KeyA);
        using var raw = RawReceiver(out var rawNode);
        var batching = (ISendBatching)a;
        var frame = Frame(a.LocalNode, 7);

        batching.HoldSends();
        for (ulong i = 1; i <= 6; i++)
        {
            a.Send(b.LocalNode, Frame(a.LocalNode, i), TransportKind.Udp);
        }

        a.Send(rawNode, frame, TransportKind.Udp);
        batching.SendHeld();

        Assert.Equal(1, a.SendBatchCalls);
        WaitUntil(() => sink.Count == 6, "the authenticated frames");
        Assert.Equal(0, b.Statistics.AuthenticationFailures);
        var datagram = Receive(raw);
        Assert.Equal(frame.Length + NetworkTransportOptions.AuthenticationTagLength, datagram.Length);
        Assert.Equal(frame, datagram[..frame.Length]);
        var expectedTag = new byte[NetworkTransportOptions.AuthenticationTagLength];
        new FrameAuthenticator(PeerAuthenticationTests.KeyA).WriteTag(frame, expectedTag);
        Assert.Equal(expectedTag, datagram[frame.Length..]);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Datagrams_waiting_together_are_each_checked_and_delivered_in_order(bool batch)
    {
        // The sink holds the receive thread on the first frame while the rest arrive, so that they wait on the
        // socket together and (with batching) come out of one recvmmsg call.
        using var release = new ManualResetEventSlim();
        using var firstArrived = new ManualResetEventSlim();
        var received = new List<ulong>();
        var sink = new BlockingSink(instance =>
        {
            lock (received)
            {
                received.Add(instance);
            }

            if (instance == 1)
            {
                firstArrived.Set();
                release.Wait(TimeSpan.FromSeconds(30));
            }
        });
        var a = new NetworkTransport(new NetworkTransportOptions
        {
            LocalNode = NodeId.From(IPAddress.Loopback, LoopbackPorts.Next()),
            BatchDatagrams = batch,
        });
        _disposables.Add(a);
        a.Start(sink);
        Assert.Equal(batch && OperatingSystem.IsLinux(), a.BatchesDatagrams);

        using var sender = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        sender.SendTo(Frame(a.LocalNode, 1), a.LocalNode.EndPoint);
        Assert.True(firstArrived.Wait(TimeSpan.FromSeconds(30)), "the first frame");
        for (ulong i = 2; i <= 40; i++)
        {
            sender.SendTo(Frame(a.LocalNode, i), a.LocalNode.EndPoint);
            if (i == 10)
            {
                sender.SendTo(new byte[3], a.LocalNode.EndPoint);
            }

            if (i == 20)
            {
                var corrupt = Frame(a.LocalNode, 1000);
                corrupt[^1] ^= 0xFF;
                sender.SendTo(corrupt, a.LocalNode.EndPoint);
            }
        }

        release.Set();
        WaitUntil(() => { lock (received) { return received.Count == 40; } }, "every good frame");
        WaitUntil(() => a.Statistics.Dropped(TransportKind.Udp, DropReason.BadLength) == 1 && sink.Invalid == 1, "the short and the corrupt datagram counted");
        lock (received)
        {
            Assert.Equal(Enumerable.Range(1, 40).Select(i => (ulong)i), received);
        }

        // 41 datagrams waited behind the first: with batching they came in full batches, else one per call.
        Assert.Equal(batch ? NetworkTransport.ReceiveBatchLength : 0, a.LargestReceiveBatch);
    }

    private (NetworkTransport Transport, FrameCollector Sink) Start(bool batch, Action<NetworkTransportOptions>? configure = null)
    {
        var options = new NetworkTransportOptions
        {
            LocalNode = NodeId.From(IPAddress.Loopback, LoopbackPorts.Next()),
            BatchDatagrams = batch,
        };
        configure?.Invoke(options);
        var transport = new NetworkTransport(options);
        _disposables.Add(transport);
        var sink = new FrameCollector();
        transport.Start(sink);
        return (transport, sink);
    }

    /// <summary>Hands each valid frame's instance to a callback on the receive thread; counts frames that do not decode.</summary>
    private sealed class BlockingSink(Action<ulong> onFrame) : IFrameSink
    {
        private int _invalid;

        public int Invalid => Volatile.Read(ref _invalid);

        public void OnFrame(ReadOnlySpan<byte> frame, TransportKind via)
        {
            if (FrameCodec.TryDecode(frame, FrameCodec.DefaultMaxFrameLength, out var decoded) == FrameError.None && decoded!.Paxos is { } paxos)
            {
                onFrame(paxos.InstanceID);
            }
            else
            {
                Interlocked.Increment(ref _invalid);
            }
        }
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
}
