using System.Text;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Tests.Support;
using Orleans.Paxos.TestSupport;

namespace Orleans.Paxos.Engine.Tests.Consensus;

/// <summary>Three nodes on 127.0.0.1 with the real UDP/TCP transport and real, fsynced data files.</summary>
public sealed class RealClusterTests : IDisposable
{
    private const int Groups = 4;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "paxos-real-" + Guid.NewGuid().ToString("N"));
    private readonly string[] _addresses = [.. Enumerable.Range(0, 3).Select(_ => $"127.0.0.1:{LoopbackPorts.Next()}")];
    private readonly PaxosNode?[] _nodes = new PaxosNode?[3];
    private readonly RecordingStateMachine[][] _machines = new RecordingStateMachine[3][];
    private bool _coalesce;

    public void Dispose()
    {
        foreach (var n in _nodes)
        {
            n?.Dispose();
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

    /// <param name="sharedLog">Every node with the node-wide shared log.</param>
    /// <param name="coalesce">Nodes 0 and 1 coalesce datagrams, node 2 does not (it reads theirs and they read its).</param>
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public async Task A_stopped_node_restarts_from_its_folder_catches_up_and_matches(bool sharedLog, bool coalesce)
    {
        _coalesce = coalesce;
        for (var i = 0; i < 3; i++)
        {
            StartNode(i, sharedLog);
        }

        await ProposeFromAll(nodes: [0, 1, 2], perNodePerGroup: 20, tag: "a");

        _nodes[2]!.Dispose();
        _nodes[2] = null;
        await ProposeFromAll(nodes: [0, 1], perNodePerGroup: 20, tag: "b");

        StartNode(2, sharedLog);
        for (var g = 0; g < Groups; g++)
        {
            var expected = _machines[0][g].Count;
            await WaitUntil(() => _machines[2][g].Count >= expected && _machines[1][g].Count >= expected, $"group {g} to catch up on node 2");
        }

        // And the restarted node proposes again.
        var r = await _nodes[2]!.ProposeAsync(0, Encoding.UTF8.GetBytes("after-restart"), new StateMachineContext(RecordingStateMachine.Id));
        Assert.True(r.IsOk, r.Status.ToString());

        for (var g = 0; g < Groups; g++)
        {
            await WaitUntil(() => _machines.All(m => m[g].Count == _machines[0][g].Count), $"group {g} to converge");
            var reference = Describe(_machines[0][g]);
            Assert.Equal(reference, Describe(_machines[1][g]));
            Assert.Equal(reference, Describe(_machines[2][g]));
        }
    }

    private static string Describe(RecordingStateMachine m) =>
        string.Join(",", m.Snapshot().Select(e => $"{e.Instance}:{Encoding.UTF8.GetString(e.Value)}"));

    private async Task ProposeFromAll(int[] nodes, int perNodePerGroup, string tag)
    {
        var tasks = new List<Task<Engine.Consensus.ProposeResult>>();
        foreach (var n in nodes)
        {
            for (var g = 0; g < Groups; g++)
            {
                var node = n;
                var group = g;
                tasks.Add(Task.Run(async () =>
                {
                    Engine.Consensus.ProposeResult last = null!;
                    for (var i = 0; i < perNodePerGroup; i++)
                    {
                        last = await _nodes[node]!.ProposeAsync(group, Encoding.UTF8.GetBytes($"{tag}-{node}-{i}"), new StateMachineContext(RecordingStateMachine.Id));
                        Assert.True(last.IsOk || last.Status == Engine.Consensus.ProposeStatus.Conflict, $"node {node} group {group}: {last.Status}");
                    }

                    return last;
                }));
            }
        }

        await Task.WhenAll(tasks);
    }

    private void StartNode(int i, bool sharedLog)
    {
        var options = new PaxosNodeOptions
        {
            MyNode = _addresses[i],
            Members = [.. _addresses],
            GroupCount = Groups,
            StoragePath = Path.Combine(_root, $"node{i}"),
            Sync = true,
            SharedLog = sharedLog,
            CoalesceDatagrams = _coalesce && i != 2,
            DataFileSize = 4 << 20,
            AskForLearnInterval = TimeSpan.FromMilliseconds(500),
        };
        var node = new PaxosNode(options);
        _machines[i] = new RecordingStateMachine[Groups];
        for (var g = 0; g < Groups; g++)
        {
            _machines[i][g] = new RecordingStateMachine();
            node.AddStateMachine(g, _machines[i][g]);
        }

        node.Start();
        _nodes[i] = node;
    }

    private static async Task WaitUntil(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"timed out waiting for {what}");
            }

            await Task.Delay(50);
        }
    }
}
