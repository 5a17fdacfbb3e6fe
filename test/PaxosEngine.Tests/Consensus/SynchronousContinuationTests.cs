using System.Text;
using Orleans.Paxos.Engine.Consensus;
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
    private readonly TemporaryDirectory _root = new("paxos-synccont");
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
        _root.Dispose();
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

    [Fact]
    public async Task With_synchronous_continuations_a_caller_that_proposes_again_at_once_whatever_it_hears_lets_the_node_stop()
    {
        Start(synchronousContinuations: true, maxWaiting: 10_000);
        var chosen = 0;
        var disposed = false;
        var caller = Task.Run(async () =>
        {
            // Proposes again as soon as it hears anything, failures included, until the node is gone.
            var last = ProposeStatus.Ok;
            while (!Volatile.Read(ref disposed))
            {
                var result = await _nodes[0].ProposeAsync(0, Encoding.UTF8.GetBytes("again"), new StateMachineContext(RecordingStateMachine.Id)).ConfigureAwait(false);
                last = result.Status;
                if (result.IsOk)
                {
                    Interlocked.Increment(ref chosen);
                }
            }

            return last;
        });
        await Polling.WaitUntilAsync(() => Volatile.Read(ref chosen) >= 20, TimeSpan.FromSeconds(30), "the caller's first values to be chosen");

        // The caller is always waiting or proposing again on an engine thread: the node must stop all the same.
        await Task.Run(() => _nodes[0].Dispose()).WaitAsync(TimeSpan.FromSeconds(30));
        Volatile.Write(ref disposed, true);
        Assert.Equal(ProposeStatus.NodeStopped, await caller.WaitAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task With_synchronous_continuations_an_outcome_other_than_chosen_reaches_the_caller_on_the_thread_pool()
    {
        Start(synchronousContinuations: true, maxWaiting: 10_000, proposeTimeout: TimeSpan.FromMilliseconds(300));
        var first = await _nodes[0].ProposeAsync(0, Encoding.UTF8.GetBytes("first"), new StateMachineContext(RecordingStateMachine.Id));
        for (var attempt = 0; attempt < 100 && !first.IsOk; attempt++)
        {
            // The group's first instance may take longer than the short timeout (its members survey each other first).
            first = await _nodes[0].ProposeAsync(0, Encoding.UTF8.GetBytes("first"), new StateMachineContext(RecordingStateMachine.Id));
        }

        Assert.True(first.IsOk, first.Status.ToString());
        _nodes[1].Dispose();
        _nodes[2].Dispose();

        // No majority: the group's loop times the proposal out (its timeout sweep) and the caller hears of it off that thread.
        var (status, pool, name) = await Task.Run(async () =>
        {
            var result = await _nodes[0].ProposeAsync(0, Encoding.UTF8.GetBytes("alone"), new StateMachineContext(RecordingStateMachine.Id)).ConfigureAwait(false);
            return (result.Status, Thread.CurrentThread.IsThreadPoolThread, Thread.CurrentThread.Name);
        }).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(ProposeStatus.Timeout, status);
        Assert.True(pool, $"continued on {name}");
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

    private void Start(bool synchronousContinuations, int maxWaiting, TimeSpan? proposeTimeout = null)
    {
        for (var i = 0; i < 3; i++)
        {
            var node = new PaxosNode(new PaxosNodeOptions
            {
                MyNode = _addresses[i],
                Members = [.. _addresses],
                StoragePath = Path.Combine(_root.Path, $"node{i}"),
                Sync = true,
                BatchFlushWhenIdle = true,
                MaxWaitingProposals = maxWaiting,
                AllowSynchronousContinuations = synchronousContinuations,
                ProposeTimeout = proposeTimeout ?? TimeSpan.FromSeconds(30),
                DataFileSize = 4 << 20,
            });
            _machines[i] = new RecordingStateMachine();
            node.AddStateMachine(0, _machines[i]);
            node.Start();
            _nodes[i] = node;
        }
    }
}
