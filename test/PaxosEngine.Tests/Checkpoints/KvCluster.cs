using System.Text;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.StateMachines.KeyValue;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Checkpoints;

/// <summary>
/// A <see cref="TestCluster"/> whose nodes also run, in group 0, the real <see cref="KeyValueStateMachine"/>,
/// whose checkpoints (SQLite snapshots) make log cleaning and checkpoint transfer real.
/// </summary>
internal sealed class KvCluster : IDisposable
{
    public const int KvSmId = 2;

    public KvCluster(int nodeCount, int seed, Action<PaxosNodeOptions> configure, int groups = 1)
    {
        Cluster = new TestCluster(nodeCount, groups, seed, configure: configure, startNodes: 0) { LoggerFactory = Logs };
        Kv = new KeyValueStateMachine?[nodeCount];
        Cluster.Mount = (i, node, options) =>
        {
            Kv[i]?.Dispose();
            Kv[i] = new KeyValueStateMachine(options.StoragePath, KvSmId);
            node.AddStateMachine(0, Kv[i]!);
        };
        for (var i = 0; i < nodeCount; i++)
        {
            Cluster.Start(i);
        }
    }

    public TestCluster Cluster { get; }

    /// <summary>What the nodes logged (Information and above).</summary>
    public CollectingLoggerFactory Logs { get; } = new();

    public KeyValueStateMachine?[] Kv { get; }

    public PaxosNode Node(int i) => Cluster.Node(i);

    public void Start(int i) => Cluster.Start(i);

    public void Stop(int i)
    {
        Cluster.Stop(i);
        Kv[i]?.Dispose();
        Kv[i] = null;
    }

    public Task<ProposeResult> Put(int node, string key, string value) =>
        Node(node).ProposeAsync(0, KeyValueCommand.Put(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes(value)), new StateMachineContext(KvSmId));

    /// <summary>
    /// Writes from <paramref name="node"/> until the group's instance reaches <paramref name="until"/>, with
    /// <paramref name="concurrency"/> proposals in flight, over <paramref name="keys"/> keys of <paramref name="valueBytes"/> bytes.
    /// </summary>
    public async Task<int> WriteUntil(int node, ulong until, int concurrency = 64, int keys = 1000, int valueBytes = 40, CancellationToken ct = default)
    {
        var counter = 0;
        var padding = new string('x', valueBytes);
        var workers = Enumerable.Range(0, concurrency).Select(async _ =>
        {
            while (!ct.IsCancellationRequested && Node(node).GetNowInstanceId(0) < until)
            {
                var n = Interlocked.Increment(ref counter);
                var r = await Put(node, $"k{n % keys}", $"{n}:{padding}");
                Assert.True(r.Status is ProposeStatus.Ok or ProposeStatus.Conflict, $"put {n}: {r.Status}");
            }
        });
        await Task.WhenAll(workers);
        return counter;
    }

    /// <summary>Waits until every running node is at the same instance as <paramref name="reference"/>, at least <paramref name="atLeast"/>.</summary>
    public async Task WaitSameInstance(int reference, ulong atLeast, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var target = Node(reference).GetNowInstanceId(0);
            var running = Enumerable.Range(0, Cluster.Nodes.Length).Where(i => Cluster.Nodes[i] is not null).ToList();
            if (target >= atLeast && running.All(i => Node(i).GetNowInstanceId(0) == target))
            {
                return;
            }

            if (DateTime.UtcNow > deadline)
            {
                var states = string.Join("; ", running.Select(i => $"node {i} at {Node(i).GetNowInstanceId(0)} (min chosen {Node(i).GetMinChosenInstanceId(0)}) {Node(i).GetGroupStoppedReason(0)}"));
                throw new TimeoutException($"nodes did not reach the same instance (wanted >= {atLeast}): {states}");
            }

            await Task.Delay(20);
        }
    }

    /// <summary>Every running node holds exactly the same keys, values and versions.</summary>
    public void AssertSameState(int keys = 1000)
    {
        var running = Enumerable.Range(0, Cluster.Nodes.Length).Where(i => Kv[i] is not null).ToList();
        for (var k = 0; k < keys; k++)
        {
            var key = Encoding.UTF8.GetBytes($"k{k}");
            var first = Kv[running[0]]!.ReadStale(0, key);
            foreach (var i in running.Skip(1))
            {
                var other = Kv[i]!.ReadStale(0, key);
                Assert.True(
                    first.Status == other.Status && first.Version == other.Version && (first.Value ?? []).AsSpan().SequenceEqual(other.Value ?? []),
                    $"key k{k}: node {running[0]} has {first.Status} v{first.Version}, node {i} has {other.Status} v{other.Version}");
            }
        }
    }

    /// <summary>Data files, their bytes and the highest file number under a node's <c>g0/vfile/</c>.</summary>
    public (int Files, long Bytes, int HighestId) LogFiles(int node)
    {
        var dir = Path.Combine(Cluster.Root, $"node{node}", "g0", "vfile");
        var files = Directory.GetFiles(dir, "*.f");
        var highest = files.Select(f => int.Parse(Path.GetFileNameWithoutExtension(f), System.Globalization.CultureInfo.InvariantCulture)).DefaultIfEmpty(-1).Max();
        return (files.Length, files.Sum(SizeOrZero), highest);

        // The cleaner may delete a file between the listing and its size.
        static long SizeOrZero(string file)
        {
            try
            {
                return new FileInfo(file).Length;
            }
            catch (FileNotFoundException)
            {
                return 0;
            }
        }
    }

    public static Task WaitUntil(Func<bool> condition, string what, TimeSpan timeout) => Polling.WaitUntilAsync(condition, timeout, what);

    public void Dispose()
    {
        Cluster.Network.SendObserver = null;
        for (var i = 0; i < Kv.Length; i++)
        {
            Stop(i);
        }

        Cluster.Dispose();
    }
}
