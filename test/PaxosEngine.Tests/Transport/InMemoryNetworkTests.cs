using System.Collections.Concurrent;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Tests.Support;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Tests.Transport;

/// <summary>Fault behaviour specific to the simulated network (the shared behaviour is in the conformance suite).</summary>
public sealed class InMemoryNetworkTests
{
    private static readonly NodeId A = NodeId.Parse("127.0.0.1:1001");
    private static readonly NodeId B = NodeId.Parse("127.0.0.1:1002");
    private static readonly NodeId C = NodeId.Parse("127.0.0.1:1003");

    private sealed class CollectingSink : IFrameSink
    {
        public ConcurrentQueue<(byte[] Frame, TransportKind Via)> Frames { get; } = new();

        public void OnFrame(ReadOnlySpan<byte> frame, TransportKind via) => Frames.Enqueue((frame.ToArray(), via));
    }

    private static byte[] Frame(ulong instance, int bodySize = 0) =>
        FrameCodec.Encode(0, 0, new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.Accept,
            InstanceID = instance,
            Value = Google.Protobuf.ByteString.CopyFrom(new byte[bodySize]),
        });

    private static ulong InstanceOf(byte[] frame)
    {
        Assert.Equal(FrameError.None, FrameCodec.TryDecode(frame, FrameCodec.DefaultMaxFrameLength, out var decoded));
        return decoded!.Paxos!.InstanceID;
    }

    private static void WaitFor(Func<bool> condition, int timeoutMs = 5000)
    {
        Assert.True(SpinWait.SpinUntil(condition, timeoutMs), "condition not reached in time");
    }

    private static (List<ulong> Received, InMemoryNetwork Net) RunFaulty(int seed)
    {
        var net = new InMemoryNetwork(seed, new FaultOptions { DropRate = 0.2, DuplicateRate = 0.1 });
        using var a = net.CreateTransport(A);
        using var b = net.CreateTransport(B);
        var sink = new CollectingSink();
        a.Start(new CollectingSink());
        b.Start(sink);
        for (ulong i = 0; i < 500; i++)
        {
            a.Send(B, Frame(i), TransportKind.Udp);
        }

        WaitFor(() => net.Delivered + net.Dropped == 500 + net.Duplicated);
        return (sink.Frames.Select(f => InstanceOf(f.Frame)).Order().ToList(), net);
    }

    [Fact]
    public void Same_seed_makes_the_same_fault_decisions()
    {
        var (first, net1) = RunFaulty(42);
        var (second, net2) = RunFaulty(42);
        Assert.Equal(first, second);
        Assert.Equal(net1.Dropped, net2.Dropped);
        Assert.Equal(net1.Duplicated, net2.Duplicated);
        Assert.InRange(net1.Dropped, 50, 150);
        Assert.True(net1.Duplicated > 0);
    }

    [Fact]
    public void Partitions_block_and_heal_while_running()
    {
        var net = new InMemoryNetwork(1);
        using var a = net.CreateTransport(A);
        using var b = net.CreateTransport(B);
        using var c = net.CreateTransport(C);
        var sa = new CollectingSink();
        var sb = new CollectingSink();
        var sc = new CollectingSink();
        a.Start(sa);
        b.Start(sb);
        c.Start(sc);

        net.Partition(A, B, oneWay: true);
        a.Send(B, Frame(1), TransportKind.Udp);
        b.Send(A, Frame(2), TransportKind.Udp);
        WaitFor(() => sa.Frames.Count == 1);
        Assert.Equal(1, net.DroppedByPartition);

        net.Isolate(C);
        a.Send(C, Frame(3), TransportKind.Udp);
        c.Send(A, Frame(4), TransportKind.Udp);
        Assert.Equal(3, net.DroppedByPartition);

        net.HealAll();
        a.Send(B, Frame(5), TransportKind.Udp);
        a.Send(C, Frame(6), TransportKind.Udp);
        WaitFor(() => sb.Frames.Count == 1 && sc.Frames.Count == 1);
        Assert.Equal(5ul, InstanceOf(sb.Frames.Single().Frame));
    }

    [Fact]
    public void Delays_reorder_udp_but_not_tcp()
    {
        var net = new InMemoryNetwork(7, new FaultOptions { MinDelay = TimeSpan.Zero, MaxDelay = TimeSpan.FromMilliseconds(5), ReorderRate = 0.3 });
        using var a = net.CreateTransport(A);
        using var b = net.CreateTransport(B);
        var sink = new CollectingSink();
        a.Start(new CollectingSink());
        b.Start(sink);
        for (ulong i = 0; i < 200; i++)
        {
            a.Send(B, Frame(i), TransportKind.Udp);
            a.Send(B, Frame(1000 + i), TransportKind.Tcp);
        }

        WaitFor(() => sink.Frames.Count == 400);
        var udp = sink.Frames.Where(f => f.Via == TransportKind.Udp).Select(f => InstanceOf(f.Frame)).ToList();
        var tcp = sink.Frames.Where(f => f.Via == TransportKind.Tcp).Select(f => InstanceOf(f.Frame)).ToList();
        Assert.NotEqual(udp.Order().ToList(), udp);
        Assert.Equal(tcp.Order().ToList(), tcp);
    }

    [Fact]
    public void A_stopped_node_receives_nothing_and_can_be_recreated()
    {
        var net = new InMemoryNetwork(3);
        using var a = net.CreateTransport(A);
        a.Start(new CollectingSink());
        var b = net.CreateTransport(B);
        b.Start(new CollectingSink());
        Assert.Throws<InvalidOperationException>(() => net.CreateTransport(B));
        b.Dispose();
        b.Dispose();
        Assert.False(b.Send(A, Frame(0), TransportKind.Udp));

        a.Send(B, Frame(1), TransportKind.Udp);
        Assert.Equal(1, net.DroppedNoReceiver);

        using var b2 = net.CreateTransport(B);
        var sink = new CollectingSink();
        b2.Start(sink);
        a.Send(B, Frame(2), TransportKind.Udp);
        WaitFor(() => sink.Frames.Count == 1);
        Assert.Equal(2ul, InstanceOf(sink.Frames.Single().Frame));
    }
}
