using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Google.Protobuf;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Tests.Support;
using Orleans.Paxos.Engine.Transport;
using Orleans.Paxos.TestSupport;
using Xunit.Abstractions;

namespace Orleans.Paxos.Engine.Tests.Transport;

/// <summary>
/// A seeded fuzzer against the live UDP and TCP ports of one node of a three-node loopback cluster (real
/// transport, real data files) while the cluster keeps choosing values. PAXOS_FAULT_SOAK=1 fuzzes ten times longer;
/// PAXOS_FUZZ_SEED=N replays a seed.
/// </summary>
// Measures process memory, so it runs in the non-parallel collection.
[Collection(nameof(Consensus.MasterTests))]
public sealed class NetworkFuzzTests(ITestOutputHelper output) : IDisposable
{
    private const int Groups = 2;
    private static readonly bool Soak = Environment.GetEnvironmentVariable("PAXOS_FAULT_SOAK") == "1";

    private readonly string _root = Path.Combine(Path.GetTempPath(), "paxos-fuzz-" + Guid.NewGuid().ToString("N"));
    private readonly List<IDisposable> _disposables = [];

    public void Dispose()
    {
        for (var i = _disposables.Count - 1; i >= 0; i--)
        {
            _disposables[i].Dispose();
        }

        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
            // Leftover temp files do not change the result.
        }
    }

    [Fact]
    public Task Fuzzed_traffic_neither_stops_nor_splits_the_cluster() =>
        RunAsync(key: null, Seed(20261128), TimeSpan.FromSeconds(Soak ? 150 : 15));

    [Fact]
    public Task Fuzzed_traffic_is_refused_by_an_authenticated_cluster() =>
        RunAsync(key: PeerAuthenticationTests.KeyA, Seed(20261129), TimeSpan.FromSeconds(Soak ? 60 : 6));

    /// <summary>Regression: a TCP prefix announcing a large frame used to make the reader rent a buffer that size at once.</summary>
    [Fact]
    public void Announced_but_unsent_tcp_frames_cost_no_memory()
    {
        var node = new NetworkTransport(new NetworkTransportOptions { LocalNode = NodeId.From(IPAddress.Loopback, LoopbackPorts.Next()) });
        _disposables.Add(node);
        var sink = new TransportConformanceTests.FrameCollector();
        node.Start(sink);
        var before = GC.GetTotalMemory(forceFullCollection: true);

        const int Connections = 40;
        var sockets = new List<Socket>();
        try
        {
            for (var i = 0; i < Connections; i++)
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                sockets.Add(socket);
                socket.Connect(node.LocalNode.EndPoint);
                var bytes = new byte[4 + 70_000];
                TcpFraming.WritePrefix(bytes, FrameCodec.DefaultMaxFrameLength);
                socket.Send(bytes);
            }

            // A complete frame on one more connection: once it arrives the reader has read the others too.
            using (var last = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
            {
                last.Connect(node.LocalNode.EndPoint);
                var frame = TransportConformanceTests.Frame(NodeId.From(IPAddress.Loopback, 1), 1);
                var message = new byte[4 + frame.Length];
                TcpFraming.WritePrefix(message, frame.Length);
                frame.CopyTo(message, 4);
                last.Send(message);
                TransportConformanceTests.WaitUntil(() => sink.Count == 1, "the complete frame");
            }

            TransportConformanceTests.WaitUntil(() => node.IncomingConnections == Connections, $"{Connections} open connections");
            Thread.Sleep(200);
            var growth = GC.GetTotalMemory(forceFullCollection: true) - before;

            // Before the fix: 40 buffers of 16 MiB (640 MiB). Now each holds what arrived (at most twice 70 kB).
            Assert.True(growth < 64L << 20, $"{Connections} connections announcing {FrameCodec.DefaultMaxFrameLength} B frames hold {growth >> 20} MiB");
        }
        finally
        {
            foreach (var socket in sockets)
            {
                socket.Dispose();
            }
        }

        TransportConformanceTests.WaitUntil(() => node.IncomingConnections == 0, "every connection released");
    }

    private static int Seed(int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable("PAXOS_FUZZ_SEED"), out var seed) ? seed : fallback;

    /// <summary>Regression: one datagram from a non-member naming a far instance used to stop the node proposing for good.</summary>
    [Fact]
    public async Task A_non_member_naming_a_far_instance_does_not_stop_proposals()
    {
        var (nodes, _, _) = await StartClusterAsync(key: null);
        var stranger = NodeId.From(IPAddress.Loopback, LoopbackPorts.Next());
        var invalidBefore = nodes[0].InvalidFramesReceived;
        using (var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp))
        {
            foreach (var type in new[] { PaxosMsgType.AskForLearn, PaxosMsgType.SendNowInstanceId })
            {
                var gid = nodes[0].GetMembership(0).Gid;
                udp.SendTo(FrameCodec.Encode(0, gid, new PaxosMsg { MsgType = (int)type, NodeID = stranger, InstanceID = 1UL << 40, NowInstanceID = 1UL << 40 }), nodes[0].MyNodeId.EndPoint);
            }

            // Then a frame for a group the node does not have, which it counts as invalid. One thread receives the
            // node's datagrams, in order on loopback, and hands each to its group's loop before taking the next: once
            // this one is counted, the two above are queued on group 0's loop, ahead of the proposal below.
            udp.SendTo(FrameCodec.Encode(Groups + 7, 0, new PaxosMsg { MsgType = (int)PaxosMsgType.AskForLearn, NodeID = stranger }), nodes[0].MyNodeId.EndPoint);
        }

        await WaitUntilAsync(() => nodes[0].InvalidFramesReceived > invalidBefore, "node 0 to receive the stranger's frames");
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        var result = await nodes[0].ProposeAsync(0, "after-stranger"u8.ToArray(), new StateMachineContext(RecordingStateMachine.Id), timeout.Token);
        Assert.True(result.IsOk, $"the node could not propose after a stranger's far instance: {result.Status}");
    }

    private async Task<(PaxosNode[] Nodes, NetworkTransport[] Transports, RecordingStateMachine[][] Machines)> StartClusterAsync(byte[]? key)
    {
        var addresses = Enumerable.Range(0, 3).Select(_ => NodeId.From(IPAddress.Loopback, LoopbackPorts.Next())).ToArray();
        var nodes = new PaxosNode[3];
        var transports = new NetworkTransport[3];
        var machines = new RecordingStateMachine[3][];
        for (var i = 0; i < 3; i++)
        {
            var options = new PaxosNodeOptions
            {
                MyNode = addresses[i].ToString(),
                Members = [.. addresses.Select(a => a.ToString())],
                GroupCount = Groups,
                StoragePath = Path.Combine(_root, $"node{i}"),
                DataFileSize = 4 << 20,
                UseMembership = true,
                AskForLearnInterval = TimeSpan.FromMilliseconds(500),
            };
            transports[i] = new NetworkTransport(new NetworkTransportOptions
            {
                LocalNode = addresses[i],
                MaxFrameLength = PaxosNode.MaxFrameLength(options),
                AuthenticationKey = key,
                ReconnectBackoff = TimeSpan.FromMilliseconds(50),
                MaxReconnectBackoff = TimeSpan.FromMilliseconds(400),
            });
            _disposables.Add(transports[i]);
            nodes[i] = new PaxosNode(options, transport: transports[i]);
            _disposables.Add(nodes[i]);
            machines[i] = new RecordingStateMachine[Groups];
            for (var g = 0; g < Groups; g++)
            {
                machines[i][g] = new RecordingStateMachine();
                nodes[i].AddStateMachine(g, machines[i][g]);
            }

            nodes[i].Start();
        }

        // The first value of each group creates its cluster id, so that gid checks apply during the fuzz.
        for (var g = 0; g < Groups; g++)
        {
            var first = await nodes[1].ProposeAsync(g, "first"u8.ToArray(), new StateMachineContext(RecordingStateMachine.Id));
            Assert.True(first.IsOk, first.Status.ToString());
        }

        // Each group has its own cluster id; the fuzzer's frames carry group 0's.
        await WaitUntilAsync(() => Enumerable.Range(0, Groups).All(g => nodes[1].GetMembership(g).Gid != 0 && nodes.All(n => n.GetMembership(g).Gid == nodes[1].GetMembership(g).Gid)), "every node knows each group's cluster id");
        return (nodes, transports, machines);
    }

    private async Task RunAsync(byte[]? key, int seed, TimeSpan duration)
    {
        var (nodes, transports, machines) = await StartClusterAsync(key);
        var addresses = nodes.Select(n => n.MyNodeId).ToArray();
        var gid = nodes[0].GetMembership(0).Gid;
        var victim = transports[0];
        var memoryBefore = GC.GetTotalMemory(forceFullCollection: true);
        var statsBefore = (Malformed: Malformed(victim), Invalid: nodes[0].InvalidFramesReceived, Auth: victim.Statistics.AuthenticationFailures);

        // Load: node 0 (the fuzzed one) proposes on group 0, node 1 on group 1, one value at a time.
        using var stopLoad = new CancellationTokenSource();
        var loads = Enumerable.Range(0, Groups).Select(g => Task.Run(() => LoadAsync(nodes[g], g, stopLoad.Token))).ToArray();

        var fuzzer = new Fuzzer(new Random(seed), addresses[0].EndPoint, gid);
        await fuzzer.RunAsync(duration);
        stopLoad.Cancel();
        var results = await Task.WhenAll(loads);

        output.WriteLine($"seed {seed}, {duration.TotalSeconds} s, authentication {(key is null ? "off" : "on")}: values chosen {string.Join(", ", results.Select((r, g) => $"group {g}: {r.Ok}"))}; fuzzer: {fuzzer}");
        output.WriteLine($"victim transport: {victim.Statistics}; node refused {nodes[0].InvalidFramesReceived - statsBefore.Invalid} undecodable or unknown-group frames");

        // Proposals kept succeeding while the fuzzer ran.
        for (var g = 0; g < Groups; g++)
        {
            var (ok, failures) = results[g];
            Assert.True(failures.Count == 0, $"seed {seed}, group {g}: {failures.Count} failed proposals ({string.Join(", ", failures.Take(5))}); fuzzer: {fuzzer}");
            Assert.True(ok >= 10, $"seed {seed}, group {g}: only {ok} values chosen in {duration.TotalSeconds} s of fuzzing; fuzzer: {fuzzer}");
        }

        // The fuzzed node is alive and proposes; every node agrees on every group.
        for (var g = 0; g < Groups; g++)
        {
            // The flood can cost the fuzzed node real frames too (its socket buffer overflows), so it may be a few
            // instances behind and lose them to the values already chosen there: Conflict, which a client retries.
            var after = await nodes[0].ProposeAsync(g, Encoding.UTF8.GetBytes($"after-{g}"), new StateMachineContext(RecordingStateMachine.Id));
            for (var attempt = 1; attempt < 5 && after.Status == Engine.Consensus.ProposeStatus.Conflict; attempt++)
            {
                after = await nodes[0].ProposeAsync(g, Encoding.UTF8.GetBytes($"after-{g}-{attempt}"), new StateMachineContext(RecordingStateMachine.Id));
            }

            Assert.True(after.IsOk, $"seed {seed}: the fuzzed node could not propose after the fuzz: {after.Status}");
            Assert.Null(nodes[0].GetGroupStoppedReason(g));
        }

        for (var g = 0; g < Groups; g++)
        {
            var group = g;
            await WaitUntilAsync(() => machines.All(m => m[group].Count == machines[0][group].Count), $"group {g} to converge");
            var reference = Describe(machines[0][g]);
            Assert.Equal(reference, Describe(machines[1][g]));
            Assert.Equal(reference, Describe(machines[2][g]));
            Assert.All(machines, m => Assert.Null(m[group].OrderViolation));
        }

        // Connections are released and memory stayed bounded.
        await WaitUntilAsync(() => victim.IncomingConnections <= 2, $"the fuzzer's connections released (open: {victim.IncomingConnections})");
        var growth = GC.GetTotalMemory(forceFullCollection: true) - memoryBefore;
        output.WriteLine($"managed memory growth {growth / 1024} KiB");
        Assert.True(growth < 64L << 20, $"seed {seed}: managed memory grew by {growth >> 20} MiB during the fuzz");

        // What the fuzzer sent was refused and counted.
        Assert.True(fuzzer.Actions > 200, $"the fuzzer did only {fuzzer.Actions} actions");
        Assert.True(Malformed(victim) > statsBefore.Malformed, $"no malformed frame counted by the transport; {victim.Statistics}");
        if (key is null)
        {
            Assert.True(nodes[0].InvalidFramesReceived > statsBefore.Invalid + 100, $"only {nodes[0].InvalidFramesReceived - statsBefore.Invalid} invalid frames counted by the node; fuzzer: {fuzzer}");
            Assert.Equal(0, victim.Statistics.AuthenticationFailures);
        }
        else
        {
            // Nothing the fuzzer sent carries a valid tag: the node never even sees it.
            Assert.Equal(statsBefore.Invalid, nodes[0].InvalidFramesReceived);
            Assert.True(victim.Statistics.AuthenticationFailures > statsBefore.Auth + 100, $"only {victim.Statistics.AuthenticationFailures - statsBefore.Auth} authentication failures counted; fuzzer: {fuzzer}");
        }
    }

    private static long Malformed(NetworkTransport transport)
    {
        var s = transport.Statistics;
        return s.Dropped(TransportKind.Udp, DropReason.BadLength) + s.Dropped(TransportKind.Tcp, DropReason.BadLength)
            + s.Dropped(TransportKind.Udp, DropReason.TooLarge) + s.Dropped(TransportKind.Tcp, DropReason.TooLarge)
            + s.AuthenticationFailures;
    }

    private static async Task<(int Ok, List<string> Failures)> LoadAsync(PaxosNode node, int group, CancellationToken stop)
    {
        var ok = 0;
        var failures = new List<string>();
        for (var i = 0; !stop.IsCancellationRequested; i++)
        {
            var result = await node.ProposeAsync(group, Encoding.UTF8.GetBytes($"load-{group}-{i}"), new StateMachineContext(RecordingStateMachine.Id));
            if (result.IsOk)
            {
                ok++;
            }
            else
            {
                failures.Add($"#{i}: {result.Status}");
            }
        }

        return (ok, failures);
    }

    private static string Describe(RecordingStateMachine m) =>
        string.Join(",", m.Snapshot().Select(e => $"{e.Instance}:{Encoding.UTF8.GetString(e.Value)}"));

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for: {what}");
            await Task.Delay(50);
        }
    }

    /// <summary>Sends seeded garbage, mutated frames and abusive connections to one node; it never holds the cluster's key.</summary>
    private sealed class Fuzzer
    {
        private readonly Random _random;
        private readonly IPEndPoint _target;
        private readonly ulong _gid;
        private readonly ulong[] _strangers;
        private readonly List<byte[]> _templates = [];
        private readonly Dictionary<string, int> _counts = [];
        private readonly Socket _udp = new(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);

        public Fuzzer(Random random, IPEndPoint target, ulong gid)
        {
            _random = random;
            _target = target;
            _gid = gid;

            // Senders that are not members, on addresses nobody listens on (replies to them go nowhere), and several
            // bits away from every member id: a bit flip must not turn a stranger into a member. Frames that forge a
            // member's id are what authentication is for (see the README); an unauthenticated cluster trusts them.
            _strangers = [NodeId.Parse("127.0.0.77:7001"), NodeId.Parse("127.0.0.78:7002")];
            foreach (var type in Enum.GetValues<PaxosMsgType>())
            {
                _templates.Add(PaxosFrame(type, _gid));
            }

            foreach (var type in Enum.GetValues<CheckpointMsgType>())
            {
                _templates.Add(FrameCodec.Encode(0, _gid, new CheckpointMsg
                {
                    MsgType = (int)type,
                    NodeID = _strangers[0],
                    Flag = (int)CheckpointSendFileFlag.Begin,
                    UUID = 42,
                    Sequence = 0,
                    CheckpointInstanceID = 1UL << 40,
                    FilePath = "../../etc/passwd",
                    SMID = RecordingStateMachine.Id,
                    Buffer = ByteString.CopyFrom(new byte[64]),
                }));
            }
        }

        public int Actions { get; private set; }

        public override string ToString() =>
            $"{Actions} actions: " + string.Join(", ", _counts.OrderBy(c => c.Key, StringComparer.Ordinal).Select(c => $"{c.Key}={c.Value}"));

        public async Task RunAsync(TimeSpan duration)
        {
            var held = new List<Socket>();
            var end = DateTime.UtcNow + duration;
            try
            {
                while (DateTime.UtcNow < end)
                {
                    for (var i = 0; i < 20; i++)
                    {
                        Step(held);
                        Actions++;
                    }

                    // Abandoned connections are closed a while later, a few at a time.
                    while (held.Count > 64)
                    {
                        held[0].Dispose();
                        held.RemoveAt(0);
                    }

                    // Paced so that the fuzz tests robustness, not the socket buffers of a two-core machine.
                    await Task.Delay(5);
                }
            }
            finally
            {
                _udp.Dispose();
                foreach (var socket in held)
                {
                    socket.Dispose();
                }
            }
        }

        private static byte[] Frame(int group, ulong gid, PaxosMsg message) => FrameCodec.Encode(group, gid, message);

        private byte[] PaxosFrame(PaxosMsgType type, ulong gid, int group = 0) => Frame(group, gid, new PaxosMsg
        {
            MsgType = (int)type,
            NodeID = _strangers[_random.Next(_strangers.Length)],

            // Far beyond any instance the cluster reaches: even a frame that got through would concern no live instance.
            InstanceID = (1UL << 40) + (ulong)_random.Next(1000),
            ProposalID = (ulong)_random.NextInt64(1, long.MaxValue),
            ProposalNodeID = _strangers[0],
            Value = ByteString.CopyFrom(RandomBytes(_random.Next(0, 200))),
            PreAcceptID = 3,
            NowInstanceID = 1UL << 41,
            MinChosenInstanceID = 1UL << 41,
            LastChecksum = 7,
        });

        private void Step(List<Socket> held)
        {
            switch (_random.Next(12))
            {
                case 0:
                    Count("udp-random");
                    Udp(RandomBytes(_random.Next(0, 1500)));
                    break;
                case 1:
                case 2:
                case 3:
                    Count("udp-mutated");
                    Udp(Mutate(_templates[_random.Next(_templates.Count)]));
                    break;
                case 4:
                    Count("tcp-mutated");
                    Tcp(held, Framed(Mutate(_templates[_random.Next(_templates.Count)])), keep: false);
                    break;
                case 5:
                    Count("tcp-random");
                    Tcp(held, RandomBytes(_random.Next(1, 3000)), keep: false);
                    break;
                case 6:
                    Count("tcp-bad-prefix");
                    Tcp(held, BadPrefix(), keep: _random.Next(2) == 0);
                    break;
                case 7:
                    Count("unknown-group");
                    var group = _random.Next(3) switch { 0 => Groups, 1 => -1, _ => _random.Next() };
                    Udp(PaxosFrame(PaxosMsgType.Prepare, _gid, group));
                    break;
                case 8:
                    Count("wrong-gid");
                    var wrong = PaxosFrame((PaxosMsgType)_random.Next(1, 14), _gid ^ (ulong)_random.NextInt64(1, long.MaxValue));
                    if (_random.Next(2) == 0)
                    {
                        Udp(wrong);
                    }
                    else
                    {
                        Tcp(held, Framed(wrong), keep: false);
                    }

                    break;
                case 9:
                    Count("non-member");
                    Udp(PaxosFrame((PaxosMsgType)_random.Next(1, 14), _gid));
                    break;
                case 10:
                    Count("abandoned-connections");
                    for (var i = 0; i < 8; i++)
                    {
                        Tcp(held, RandomBytes(_random.Next(0, 4)), keep: true);
                    }

                    break;
                default:
                    Count("large-datagram");
                    Udp(RandomBytes(_random.Next(60_000, 65_507)));
                    break;
            }
        }

        private void Count(string what) => _counts[what] = _counts.GetValueOrDefault(what) + 1;

        private byte[] Mutate(byte[] template)
        {
            var bytes = template.ToArray();
            switch (_random.Next(4))
            {
                case 0:
                    // Bit flips; most land on bytes the PhxPaxos checksum skips.
                    for (var i = _random.Next(1, 4); i > 0; i--)
                    {
                        bytes[_random.Next(bytes.Length)] ^= (byte)(1 << _random.Next(8));
                    }

                    return bytes;
                case 1:
                    return bytes[.._random.Next(bytes.Length)];
                case 2:
                    return [.. bytes, .. RandomBytes(_random.Next(1, 100))];
                default:
                    // A header length pointing anywhere.
                    BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(4), (ushort)_random.Next(ushort.MaxValue + 1));
                    return bytes;
            }
        }

        private byte[] BadPrefix()
        {
            uint prefix = _random.Next(6) switch
            {
                0 => 0xFFFFFFFFu,
                1 => 0x80000000u,
                2 => (uint)_random.Next(0, 4),
                3 => (uint)FrameCodec.DefaultMaxFrameLength + 100,

                // Plausible but never completed: the reader must wait without holding the announced size.
                _ => (uint)_random.Next(100_000, FrameCodec.DefaultMaxFrameLength),
            };
            var bytes = new byte[4 + _random.Next(0, 200)];
            BinaryPrimitives.WriteUInt32BigEndian(bytes, prefix);
            return bytes;
        }

        private static byte[] Framed(byte[] frame)
        {
            var bytes = new byte[4 + frame.Length];
            TcpFraming.WritePrefix(bytes, frame.Length);
            frame.CopyTo(bytes, 4);
            return bytes;
        }

        private byte[] RandomBytes(int length)
        {
            var bytes = new byte[length];
            _random.NextBytes(bytes);
            return bytes;
        }

        private void Udp(byte[] datagram)
        {
            try
            {
                _udp.SendTo(datagram, _target);
            }
            catch (SocketException)
            {
                // A full buffer or an ICMP error from an earlier datagram: the fuzz goes on.
            }
        }

        private void Tcp(List<Socket> held, byte[] bytes, bool keep)
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { SendTimeout = 2000 };
            try
            {
                socket.Connect(_target);
                if (bytes.Length > 0)
                {
                    socket.Send(bytes);
                }
            }
            catch (SocketException)
            {
                // The node closed the connection or refused it: fine.
            }

            if (keep)
            {
                held.Add(socket);
            }
            else
            {
                socket.Dispose();
            }
        }
    }
}
