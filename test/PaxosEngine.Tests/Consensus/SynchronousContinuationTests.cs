using System.Text;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Tests.Support;
using Orleans.Paxos.TestSupport;

namespace Orleans.Paxos.Engine.Tests.Consensus;

/// <summary>
/// <see cref="PaxosNodeOptions.AllowSynchronousContinuations"/> on three nodes on 127.0.0.1 with the real transport
/// and fsynced files: where a caller's code continues, and that proposing again from there loses and refuses nothing.
/// </summary>
public sealed class SynchronousContinuationTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "paxos-synccont-" + Guid.NewGuid().ToString("N"));
    private readonly string[] _addresses = [.. Enumerable.Range(0, 3).Select(_ => $"127.0.0.1:{LoopbackPorts.Next()}")];
    private readonly PaxosNode[] _nodes = new PaxosNode[3];
    private readonly RecordingStateMachine[] _machines = new RecordingStateMachine[3];

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

    [Fact]
    public async Task By_default_a_caller_continues_on_the_thread_pool()
    {
        Start(synchronousContinuations: false, maxWaiting: 10_000);
        var threads = await Task.Run(() => ProposeInTurn(caller: 0, count: 10, batch: false));
        Assert.All(threads, t => Assert.True(t.Pool, $"continued on {t.Name}, not on the thread pool"));
    }

    [Fact]
    public async Task With_synchronous_continuations_a_caller_continues_on_an_engine_thread_and_proposes_again_from_there()
    {
        // One waiting proposal per group: the next one, made from the code that awaited the last, fits only if the
        // engine counted the last one done before that code ran.
        Start(synchronousContinuations: true, maxWaiting: 1);
        var threads = await Task.Run(() => ProposeInTurn(caller: 0, count: 30, batch: false));
        Assert.All(threads, t => Assert.False(t.Pool, "continued on the thread pool"));
        Assert.All(threads, t => Assert.StartsWith("paxos", t.Name ?? string.Empty, StringComparison.OrdinalIgnoreCase));
        await AssertSameLogEverywhere(30);
    }

    [Fact]
    public async Task With_synchronous_continuations_callers_that_share_instances_all_get_their_values_chosen_once()
    {
        Start(synchronousContinuations: true, maxWaiting: 10_000);
        var callers = Enumerable.Range(0, 6).Select(c => Task.Run(() => ProposeInTurn(c, count: 20, batch: c % 2 == 0))).ToArray();
        await Task.WhenAll(callers);
        await AssertSameLogEverywhere(6 * 20);
        var values = _machines[0].Snapshot().Select(e => Encoding.UTF8.GetString(e.Value)).ToList();
        Assert.Equal(values.Count, values.Distinct().Count());
        for (var c = 0; c < 6; c++)
        {
            // Each caller's values were chosen in the order it proposed them.
            var mine = values.Where(v => v.StartsWith($"c{c}-", StringComparison.Ordinal)).ToList();
            Assert.Equal(Enumerable.Range(0, 20).Select(i => $"c{c}-{i}"), mine);
        }
    }

    /// <summary>Proposes <paramref name="count"/> values from node 0 one after another; returns the thread each await resumed on.</summary>
    private async Task<List<(bool Pool, string? Name)>> ProposeInTurn(int caller, int count, bool batch)
    {
        var threads = new List<(bool, string?)>();
        for (var i = 0; i < count; i++)
        {
            var value = Encoding.UTF8.GetBytes($"c{caller}-{i}");
            var context = new StateMachineContext(RecordingStateMachine.Id);
            var result = batch
                ? await _nodes[0].BatchProposeAsync(0, value, context).ConfigureAwait(false)
                : await _nodes[0].ProposeAsync(0, value, context).ConfigureAwait(false);
            threads.Add((Thread.CurrentThread.IsThreadPoolThread, Thread.CurrentThread.Name));
            Assert.True(result.IsOk, $"caller {caller} value {i}: {result.Status}");
        }

        return threads;
    }

    private async Task AssertSameLogEverywhere(int values)
    {
        await Polling.WaitUntilAsync(() => _machines.All(m => m.Count >= values), TimeSpan.FromSeconds(30), "every node to execute every value");
        var reference = Describe(_machines[0]);
        Assert.Equal(values, _machines[0].Count);
        Assert.Equal(reference, Describe(_machines[1]));
        Assert.Equal(reference, Describe(_machines[2]));
    }

    private static string Describe(RecordingStateMachine m) =>
        string.Join(",", m.Snapshot().Select(e => $"{e.Instance}:{Encoding.UTF8.GetString(e.Value)}"));

    private void Start(bool synchronousContinuations, int maxWaiting)
    {
        for (var i = 0; i < 3; i++)
        {
            var node = new PaxosNode(new PaxosNodeOptions
            {
                MyNode = _addresses[i],
                Members = [.. _addresses],
                StoragePath = Path.Combine(_root, $"node{i}"),
                Sync = true,
                BatchFlushWhenIdle = true,
                MaxWaitingProposals = maxWaiting,
                AllowSynchronousContinuations = synchronousContinuations,
                DataFileSize = 4 << 20,
            });
            _machines[i] = new RecordingStateMachine();
            node.AddStateMachine(0, _machines[i]);
            node.Start();
            _nodes[i] = node;
        }
    }
}
