using System.Buffers.Binary;
using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Tests.Support;
using Orleans.Paxos.Engine.Transport;
using Orleans.Paxos.TestSupport;
using static Orleans.Paxos.Engine.Tests.Transport.TransportConformanceTests;

namespace Orleans.Paxos.Engine.Tests.Transport;

/// <summary>The conformance suite with peer authentication on: every behaviour of the plain transport still holds.</summary>
public sealed class AuthenticatedNetworkTransportTests : TransportConformanceTests
{
    protected override ITransport CreateTransport(NodeId node) => new NetworkTransport(new NetworkTransportOptions
    {
        LocalNode = node,
        ReconnectBackoff = TimeSpan.FromMilliseconds(50),
        MaxReconnectBackoff = TimeSpan.FromMilliseconds(400),
        AuthenticationKey = PeerAuthenticationTests.KeyA,
    });

    protected override NodeId NewNodeId() => NodeId.From(IPAddress.Loopback, LoopbackPorts.Next());
}

/// <summary>Frames authenticated with a cluster secret (HMAC-SHA256), on real loopback sockets.</summary>
public sealed class PeerAuthenticationTests : IDisposable
{
    /// <summary>A 32-byte test key.</summary>
    internal static readonly byte[] KeyA = [.. Enumerable.Range(1, 32).Select(i => (byte)i)];

    private static readonly byte[] KeyB = [.. Enumerable.Range(101, 32).Select(i => (byte)i)];

    private readonly List<IDisposable> _disposables = [];

    public void Dispose()
    {
        for (var i = _disposables.Count - 1; i >= 0; i--)
        {
            _disposables[i].Dispose();
        }
    }

    [Fact]
    public void Transports_with_the_same_key_exchange_udp_and_large_tcp_frames()
    {
        var (a, _) = Start(KeyA);
        var (b, sink) = Start(KeyA);
        Assert.True(a.IsAuthenticating);

        var small = Frame(a.LocalNode, 1, 100);
        var large = Frame(a.LocalNode, 2, 3 * 1024 * 1024);
        var smallTcp = Frame(a.LocalNode, 3, 2000);
        Assert.True(a.Send(b.LocalNode, small, TransportKind.Udp));
        Assert.True(a.Send(b.LocalNode, large, TransportKind.Tcp));
        Assert.True(a.Send(b.LocalNode, smallTcp, TransportKind.Tcp));

        WaitUntil(() => sink.Count == 3, "three authenticated frames");
        Assert.Equal(1, sink.CountVia(TransportKind.Udp));
        Assert.Equal(2, sink.CountVia(TransportKind.Tcp));
        Assert.Equal(0, sink.Invalid);
        Assert.Contains(sink.Received, f => f.Instance == 2 && f.ValueLength == 3 * 1024 * 1024);
        Assert.Equal(0, b.Statistics.AuthenticationFailures);

        // The receiver hands the node the frame without the tag: the byte counts match the sender's frames.
        Assert.Equal(small.Length, b.Statistics.BytesReceived(TransportKind.Udp));
        Assert.Equal(large.Length + smallTcp.Length, b.Statistics.BytesReceived(TransportKind.Tcp));
    }

    [Fact]
    public void The_wire_carries_the_frame_then_the_first_16_bytes_of_its_hmac()
    {
        var (a, _) = Start(KeyA);
        var peer = NodeId.From(IPAddress.Loopback, LoopbackPorts.Next());
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { ReceiveTimeout = 20_000 };
        udp.Bind(peer.EndPoint);
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(peer.EndPoint);
        listener.Listen();

        var frame = Frame(a.LocalNode, 7, 50);
        var expectedTag = HMACSHA256.HashData(KeyA, frame)[..16];
        Assert.True(a.Send(peer, frame, TransportKind.Udp));
        var datagram = new byte[65536];
        var length = udp.Receive(datagram);
        Assert.Equal(frame.Concat(expectedTag).ToArray(), datagram[..length]);

        Assert.True(a.Send(peer, frame, TransportKind.Tcp));
        using var connection = listener.Accept();
        connection.ReceiveTimeout = 20_000;
        var stream = new byte[4 + frame.Length + 16];
        var read = 0;
        while (read < stream.Length)
        {
            var n = connection.Receive(stream, read, stream.Length - read, SocketFlags.None);
            Assert.True(n > 0, "the connection closed early");
            read += n;
        }

        Assert.Equal((uint)(frame.Length + 16 + 4), BinaryPrimitives.ReadUInt32BigEndian(stream));
        Assert.Equal(frame.Concat(expectedTag).ToArray(), stream[4..]);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Frames_from_a_sender_with_another_key_or_none_are_refused_and_counted(bool otherKey)
    {
        long published = 0;
        using var meter = new MeterListener();
        meter.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "Orleans.Paxos" && instrument.Name == "paxos.transport.authentication.failures")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        meter.SetMeasurementEventCallback<long>((_, value, _, _) => Interlocked.Add(ref published, value));
        meter.Start();

        var (node, sink) = Start(KeyA);
        var (stranger, _) = Start(otherKey ? KeyB : null);
        for (var i = 0; i < 5; i++)
        {
            Assert.True(stranger.Send(node.LocalNode, Frame(stranger.LocalNode, (ulong)i, 100), TransportKind.Udp));
        }

        Assert.True(stranger.Send(node.LocalNode, Frame(stranger.LocalNode, 10, 100_000), TransportKind.Tcp));
        WaitUntil(() => node.Statistics.Dropped(TransportKind.Udp, DropReason.Unauthenticated) == 5, "five refused datagrams");
        WaitUntil(() => node.Statistics.Dropped(TransportKind.Tcp, DropReason.Unauthenticated) == 1, "one refused TCP frame");
        Assert.Equal(6, node.Statistics.AuthenticationFailures);
        WaitUntil(() => Interlocked.Read(ref published) >= 6, "the failures on the Orleans.Paxos meter");

        // A keyed peer still gets through, and nothing from the stranger was ever delivered.
        var (friend, _) = Start(KeyA);
        Assert.True(friend.Send(node.LocalNode, Frame(friend.LocalNode, 99), TransportKind.Udp));
        WaitUntil(() => sink.Count == 1, "the keyed peer's frame");
        Assert.All(sink.Received, f => Assert.Equal(friend.LocalNode.Value, f.From));
        Assert.Equal(0, node.Statistics.FramesReceived(TransportKind.Tcp));
    }

    [Fact]
    public void An_authenticating_sender_is_not_understood_by_a_plain_receiver()
    {
        var (plain, sink) = Start(key: null);
        var (keyed, _) = Start(KeyA);
        Assert.True(keyed.Send(plain.LocalNode, Frame(keyed.LocalNode, 1, 100), TransportKind.Udp));

        // The plain node sees a frame with 16 stray bytes at the end: its decoder refuses it (the checksum fails).
        WaitUntil(() => sink.Invalid == 1, "the keyed datagram fails to decode on the plain node");
        Assert.Equal(0, sink.Count);
    }

    [Fact]
    public void A_tampered_byte_in_an_authenticated_frame_is_refused_by_udp_and_tcp()
    {
        var (node, sink) = Start(KeyA);
        var from = NodeId.From(IPAddress.Loopback, 1);
        var good = Authenticated(Frame(from, 1, 200));
        var tampered = Authenticated(Frame(from, 2, 200));

        // Bytes the PhxPaxos checksum skips (it reads every 7th byte): only the tag can catch these.
        tampered[FrameCodec.PrefixLength + 16] ^= 0x01;
        var tamperedTag = Authenticated(Frame(from, 3, 200));
        tamperedTag[^1] ^= 0x80;

        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        udp.SendTo(tampered, node.LocalNode.EndPoint);
        udp.SendTo(tamperedTag, node.LocalNode.EndPoint);
        udp.SendTo(good, node.LocalNode.EndPoint);
        WaitUntil(() => sink.Count == 1, "the untampered datagram");
        WaitUntil(() => node.Statistics.Dropped(TransportKind.Udp, DropReason.Unauthenticated) == 2, "two tampered datagrams refused");
        Assert.True(sink.HasSeen(1));

        // By TCP: a good frame is delivered; a tampered one is refused and the connection closed.
        using var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 20_000 };
        tcp.Connect(node.LocalNode.EndPoint);
        tcp.Send(TcpMessage(Authenticated(Frame(from, 4, 200))));
        WaitUntil(() => sink.Count == 2, "the untampered TCP frame");
        tcp.Send(TcpMessage(tampered));
        Assert.Equal(0, tcp.Receive(new byte[1]));
        Assert.Equal(1, node.Statistics.Dropped(TransportKind.Tcp, DropReason.Unauthenticated));
        Assert.False(sink.HasSeen(2));
        Assert.False(sink.HasSeen(3));
    }

    [Fact]
    public void A_tcp_length_too_short_to_hold_a_tag_closes_the_connection()
    {
        var (node, sink) = Start(KeyA);
        using var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 20_000 };
        tcp.Connect(node.LocalNode.EndPoint);
        tcp.Send(TcpMessage(new byte[10]));
        Assert.Equal(0, tcp.Receive(new byte[1]));
        WaitUntil(() => node.Statistics.Dropped(TransportKind.Tcp, DropReason.BadLength) == 1, "a bad length counted");
        Assert.Equal(0, sink.Count);
    }

    [Fact]
    public async Task A_three_node_cluster_with_authentication_chooses_values()
    {
        var root = Path.Combine(Path.GetTempPath(), "paxos-auth-" + Guid.NewGuid().ToString("N"));
        var addresses = Enumerable.Range(0, 3).Select(_ => $"127.0.0.1:{LoopbackPorts.Next()}").ToArray();
        var secret = Convert.ToBase64String(KeyA);
        var nodes = new PaxosNode[3];
        var machines = new RecordingStateMachine[3];
        try
        {
            for (var i = 0; i < 3; i++)
            {
                machines[i] = new RecordingStateMachine();
                nodes[i] = new PaxosNode(new PaxosNodeOptions
                {
                    MyNode = addresses[i],
                    Members = [.. addresses],
                    StoragePath = Path.Combine(root, $"node{i}"),
                    DataFileSize = 1 << 20,
                    AskForLearnInterval = TimeSpan.FromMilliseconds(500),
                    PeerAuthentication = new PeerAuthenticationOptions { Enabled = true, Secret = secret },
                });
                nodes[i].AddStateMachine(0, machines[i]);
                nodes[i].Start();
            }

            for (var i = 0; i < 10; i++)
            {
                var result = await nodes[i % 3].ProposeAsync(0, Encoding.UTF8.GetBytes($"v{i}"), new StateMachineContext(RecordingStateMachine.Id));
                Assert.True(result.IsOk, result.Status.ToString());
            }

            await WaitUntilAsync(() => machines.All(m => m.Count == 10), "every node executed the ten values");
            var reference = string.Join(",", machines[0].Snapshot().Select(e => Encoding.UTF8.GetString(e.Value)));
            Assert.All(machines, m => Assert.Equal(reference, string.Join(",", m.Snapshot().Select(e => Encoding.UTF8.GetString(e.Value)))));
        }
        finally
        {
            foreach (var n in nodes)
            {
                n?.Dispose();
            }

            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
                // Leftover temp files do not change the result.
            }
        }
    }

    [Fact]
    public void A_short_key_is_refused_with_a_message_that_does_not_show_it()
    {
        byte[] shortKey = [.. "0123456789abcde"u8];
        var ex = Assert.Throws<ArgumentException>(() => new NetworkTransport(new NetworkTransportOptions
        {
            LocalNode = NodeId.Parse("127.0.0.1:1"),
            AuthenticationKey = shortKey,
        }));
        Assert.Contains("AuthenticationKey", ex.Message);
        Assert.Contains("16", ex.Message);
        Assert.DoesNotContain("0123456789", ex.Message);
        Assert.DoesNotContain(Convert.ToBase64String(shortKey), ex.Message);

        // Exactly 16 bytes is enough.
        using var ok = new NetworkTransport(new NetworkTransportOptions { LocalNode = NodeId.Parse("127.0.0.1:1"), AuthenticationKey = new byte[16] });
        Assert.True(ok.IsAuthenticating);
    }

    [Fact]
    public void Node_options_resolve_the_secret_and_never_show_it()
    {
        var secret = Convert.ToBase64String(KeyA);
        Assert.Null(new PeerAuthenticationOptions().ResolveKey());
        Assert.Equal(KeyA, new PeerAuthenticationOptions { Enabled = true, Secret = secret }.ResolveKey());

        var file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, secret + "\n");
            var fromFile = new PeerAuthenticationOptions { Enabled = true, SecretFile = file };
            Assert.Equal(KeyA, fromFile.ResolveKey());
            Assert.DoesNotContain(secret, fromFile.ToString());
        }
        finally
        {
            File.Delete(file);
        }

        var shortSecret = Convert.ToBase64String("fifteen bytes!!"u8);
        var errors = new[]
        {
            Assert.Throws<ArgumentException>(() => new PeerAuthenticationOptions { Enabled = true }.ResolveKey()),
            Assert.Throws<ArgumentException>(() => new PeerAuthenticationOptions { Enabled = true, Secret = shortSecret }.ResolveKey()),
            Assert.Throws<ArgumentException>(() => new PeerAuthenticationOptions { Enabled = true, Secret = "not base64 at all!" }.ResolveKey()),
            Assert.Throws<ArgumentException>(() => new PeerAuthenticationOptions { Enabled = true, Secret = secret, SecretFile = "x" }.ResolveKey()),
            Assert.Throws<ArgumentException>(() => new PeerAuthenticationOptions { Secret = secret }.ResolveKey()),
            Assert.Throws<ArgumentException>(() => new PeerAuthenticationOptions { Enabled = true, SecretFile = Path.Combine(Path.GetTempPath(), Guid.NewGuid().ToString("N")) }.ResolveKey()),
        };
        Assert.Contains("no secret is set", errors[0].Message);
        Assert.Contains("shorter than 16 bytes", errors[1].Message);
        Assert.Contains("not valid base64", errors[2].Message);
        Assert.Contains("both set", errors[3].Message);
        Assert.Contains("Enabled is false", errors[4].Message);
        Assert.Contains("cannot read", errors[5].Message);
        foreach (var e in errors)
        {
            Assert.DoesNotContain(secret, e.ToString());
            Assert.DoesNotContain(shortSecret, e.ToString());
            Assert.DoesNotContain("not base64 at all", e.ToString());
        }

        Assert.DoesNotContain(secret, new PeerAuthenticationOptions { Enabled = true, Secret = secret }.ToString());

        // The node validates the section with the rest of its options.
        var options = new PaxosNodeOptions
        {
            MyNode = "127.0.0.1:1",
            Members = ["127.0.0.1:1"],
            StoragePath = "unused",
            PeerAuthentication = new PeerAuthenticationOptions { Enabled = true, Secret = shortSecret },
        };
        var fromNode = Assert.Throws<ArgumentException>(() => new PaxosNode(options));
        Assert.DoesNotContain(shortSecret, fromNode.ToString());
    }

    private static byte[] Authenticated(byte[] frame) => [.. frame, .. HMACSHA256.HashData(KeyA, frame)[..16]];

    private static byte[] TcpMessage(byte[] message)
    {
        var bytes = new byte[4 + message.Length];
        TcpFraming.WritePrefix(bytes, message.Length);
        message.CopyTo(bytes, 4);
        return bytes;
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for: {what}");
            await Task.Delay(50);
        }
    }

    private (NetworkTransport Transport, FrameCollector Sink) Start(byte[]? key)
    {
        var transport = new NetworkTransport(new NetworkTransportOptions
        {
            LocalNode = NodeId.From(IPAddress.Loopback, LoopbackPorts.Next()),
            AuthenticationKey = key,
            ReconnectBackoff = TimeSpan.FromMilliseconds(50),
            MaxReconnectBackoff = TimeSpan.FromMilliseconds(400),
        });
        _disposables.Add(transport);
        var sink = new FrameCollector();
        transport.Start(sink);
        return (transport, sink);
    }
}
