using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Engine.Tests.Support;

/// <summary>Records every executed value in order and checks that instances never go backwards.</summary>
public sealed class RecordingStateMachine : IStateMachine
{
    public const int Id = 1;
    private readonly object _gate = new();
    private readonly List<(ulong Instance, byte[] Value)> _executed = [];

    public int SmId => Id;

    public string? OrderViolation { get; private set; }

    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _executed.Count;
            }
        }
    }

    public List<(ulong Instance, byte[] Value)> Snapshot()
    {
        lock (_gate)
        {
            return [.. _executed];
        }
    }

    public bool Execute(int groupIndex, ulong instanceId, ReadOnlySpan<byte> value, StateMachineContext? context)
    {
        lock (_gate)
        {
            if (_executed.Count > 0 && _executed[^1].Instance > instanceId)
            {
                OrderViolation ??= $"instance {instanceId} executed after {_executed[^1].Instance}";
            }

            _executed.Add((instanceId, value.ToArray()));
        }

        if (context is not null)
        {
            context.Output = "executed:" + Encoding.UTF8.GetString(value);
        }

        return true;
    }
}

/// <summary>
/// Several nodes in one process over an <see cref="InMemoryNetwork"/> with real file storage in a temp
/// folder. Nodes can be stopped and restarted from their folders.
/// </summary>
public sealed class TestCluster : IDisposable
{
    private readonly int _groups;
    private readonly Action<PaxosNodeOptions>? _configure;
    private readonly Action<int, PaxosNodeOptions>? _configureNode;
    private readonly ILogStorage?[] _storages;
    private readonly bool _recordingMachines;

    /// <summary>Creates the cluster and starts its first <paramref name="startNodes"/> nodes (all by default).</summary>
    /// <param name="nodeCount">Members of every group.</param>
    /// <param name="groups">Groups of every node.</param>
    /// <param name="seed">The network's fault decisions.</param>
    /// <param name="faults">The network's faults; none by default.</param>
    /// <param name="configure">Adjusts every node's options.</param>
    /// <param name="configureNode">Adjusts one node's options (node index, options).</param>
    /// <param name="startNodes">How many nodes start now; all when null.</param>
    /// <param name="recordingMachines">
    /// Mount a <see cref="RecordingStateMachine"/> on every group of every node (default). Without them a group
    /// has only the state machines <see cref="Mount"/> adds, and <see cref="Machines"/> holds empty arrays.
    /// </param>
    public TestCluster(int nodeCount, int groups, int seed, FaultOptions? faults = null, Action<PaxosNodeOptions>? configure = null, Action<int, PaxosNodeOptions>? configureNode = null, int? startNodes = null, bool recordingMachines = true)
    {
        _groups = groups;
        _recordingMachines = recordingMachines;
        _configure = configure;
        _configureNode = configureNode;
        Root = Path.Combine(Path.GetTempPath(), "paxos-cluster-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Root);
        Network = new InMemoryNetwork(seed, faults);
        Ids = new NodeId[nodeCount];
        for (var i = 0; i < nodeCount; i++)
        {
            Ids[i] = NodeId.Parse($"127.0.0.1:{21000 + i}");
        }

        Nodes = new PaxosNode?[nodeCount];
        Machines = new RecordingStateMachine[nodeCount][];
        _storages = new ILogStorage?[nodeCount];
        for (var i = 0; i < (startNodes ?? nodeCount); i++)
        {
            Start(i);
        }
    }

    public string Root { get; }

    public InMemoryNetwork Network { get; }

    public NodeId[] Ids { get; }

    public PaxosNode?[] Nodes { get; }

    public RecordingStateMachine[][] Machines { get; }

    public PaxosNode Node(int i) => Nodes[i] ?? throw new InvalidOperationException($"node {i} is stopped");

    /// <summary>Mounts more state machines on a node before it starts (node index, node, its options).</summary>
    public Action<int, PaxosNode, PaxosNodeOptions>? Mount { get; set; }

    /// <summary>Adjusts a node's storage options before it starts (node index, options); e.g. injects disk faults.</summary>
    public Func<int, LogStorageOptions, LogStorageOptions>? ConfigureStorage { get; set; }

    /// <summary>Where nodes started from now on log; none when null.</summary>
    public ILoggerFactory? LoggerFactory { get; set; }

    public void Start(int i)
    {
        var options = new PaxosNodeOptions
        {
            MyNode = Ids[i].ToString(),
            Members = [.. Ids.Select(id => id.ToString())],
            GroupCount = _groups,
            StoragePath = Path.Combine(Root, $"node{i}"),
            Sync = false,
            AskForLearnInterval = TimeSpan.FromMilliseconds(300),
            ProposeTimeout = TimeSpan.FromSeconds(20),
            DataFileSize = 1 << 20,
        };
        _configure?.Invoke(options);
        _configureNode?.Invoke(i, options);
        var storageOptions = new LogStorageOptions
        {
            RootPath = options.StoragePath,
            GroupCount = _groups,
            DataFileSize = (int)options.DataFileSize,
            Logger = LoggerFactory?.CreateLogger<FileLogStorage>() ?? (ILogger)NullLogger.Instance,
        };
        var storage = new FileLogStorage(ConfigureStorage?.Invoke(i, storageOptions) ?? storageOptions);
        var node = new PaxosNode(options, LoggerFactory, Network.CreateTransport(Ids[i]), storage);
        Machines[i] = new RecordingStateMachine[_recordingMachines ? _groups : 0];
        for (var g = 0; g < Machines[i].Length; g++)
        {
            Machines[i][g] = new RecordingStateMachine();
            node.AddStateMachine(g, Machines[i][g]);
        }

        Mount?.Invoke(i, node, options);

        node.Start();
        _storages[i] = storage;
        Nodes[i] = node;
    }

    public void Stop(int i)
    {
        Nodes[i]?.Dispose();
        Nodes[i] = null;
        _storages[i]?.Dispose();
        _storages[i] = null;
    }

    public Task<Engine.Consensus.ProposeResult> Propose(int node, int group, string value, CancellationToken ct = default) =>
        Node(node).ProposeAsync(group, Encoding.UTF8.GetBytes(value), new StateMachineContext(RecordingStateMachine.Id), ct);

    /// <summary>
    /// Waits until every running node has executed the same number of values in <paramref name="group"/> (at least
    /// <paramref name="atLeast"/>) and has moved past the last instance it executed: a node runs its state machines
    /// before it publishes its next instance, so a count alone may be read while it still reports the instance just executed.
    /// </summary>
    public async Task WaitConvergedAsync(int group, int atLeast, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var counts = new List<int>();
            var published = true;
            for (var i = 0; i < Nodes.Length; i++)
            {
                if (Nodes[i] is { } node)
                {
                    var executed = Machines[i][group].Snapshot();
                    counts.Add(executed.Count);
                    published &= executed.Count == 0 || node.GetNowInstanceId(group) > executed[^1].Instance;
                }
            }

            if (counts.Count > 0 && counts.Min() >= atLeast && counts.Distinct().Count() == 1 && published)
            {
                return;
            }

            if (DateTime.UtcNow > deadline)
            {
                var states = string.Join("; ", Nodes.Select((n, i) => n is null ? $"node {i} down" : $"node {i} now {n.GetNowInstanceId(group)} {n.GetGroupStoppedReason(group)}"));
                throw new TimeoutException($"group {group} did not converge: executed counts {string.Join(",", counts)}, wanted {atLeast} (seed {Network.Seed}); {states}");
            }

            await Task.Delay(50);
        }
    }

    /// <summary>Waits until every running node's acceptor in <paramref name="group"/> votes (a new group first hears from every member).</summary>
    public Task WaitVotingAsync(int group, TimeSpan timeout) => Polling.WaitUntilAsync(
        () => Nodes.All(n => n is null || n.GetGroupVotingState(group).State == Engine.Groups.VotingState.Voting),
        timeout,
        $"every running node to vote in group {group} (seed {Network.Seed})");

    /// <summary>
    /// Safety and order: every pair of running nodes executed identical sequences up to the shorter
    /// one (same instance, same value at each position), and instances never went backwards.
    /// </summary>
    public void AssertSafety(int group)
    {
        Dictionary<ulong, (int Node, string Values)> chosen = [];
        for (var i = 0; i < Nodes.Length; i++)
        {
            if (Nodes[i] is null)
            {
                continue;
            }

            var m = Machines[i][group];
            Assert.True(m.OrderViolation is null, $"node {i} group {group}: {m.OrderViolation} (seed {Network.Seed})");
            foreach (var instance in m.Snapshot().GroupBy(e => e.Instance))
            {
                var values = string.Join("|", instance.Select(e => Encoding.UTF8.GetString(e.Value)));
                if (!chosen.TryAdd(instance.Key, (i, values)) && chosen[instance.Key].Values != values)
                {
                    Assert.Fail($"group {group} instance {instance.Key}: node {i} executed [{values}] but node {chosen[instance.Key].Node} executed [{chosen[instance.Key].Values}] (seed {Network.Seed})");
                }
            }
        }

        // Every running node executed a gap-free prefix of the instances (values with no state machine excepted).
        for (var i = 0; i < Nodes.Length; i++)
        {
            if (Nodes[i] is null)
            {
                continue;
            }

            // The current instance first: a node executes an instance before it moves past it, so every
            // instance below the one read here is in the snapshot taken after it, even while the node runs on.
            var now = Nodes[i]!.GetNowInstanceId(group);
            var executed = Machines[i][group].Snapshot().Select(e => e.Instance).ToHashSet();
            foreach (var instance in chosen.Keys.Where(k => k < now && !executed.Contains(k)))
            {
                Assert.Fail($"group {group}: node {i} is at instance {now} but never executed instance {instance}, which node {chosen[instance].Node} executed as [{chosen[instance].Values}] (seed {Network.Seed})");
            }
        }
    }

    public void Dispose()
    {
        for (var i = 0; i < Nodes.Length; i++)
        {
            Stop(i);
        }

        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // A leftover temp folder is harmless; the test result stands.
        }
    }
}
