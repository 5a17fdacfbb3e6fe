using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Checkpoints;

/// <summary>The optional checkpoint replayer: paused at start, then feeds chosen values in order.</summary>
public sealed class ReplayerTests
{
    [Fact]
    public async Task The_replayer_starts_paused_then_feeds_every_chosen_value_in_order_and_can_pause_again()
    {
        var machines = new ReplayedMachine?[3];
        using var cluster = new TestCluster(3, 1, seed: 401, configure: o => o.UseCheckpointReplayer = true, startNodes: 0);
        cluster.Mount = (i, node, _) =>
        {
            machines[i] = new ReplayedMachine();
            node.AddStateMachine(0, machines[i]!);
        };
        for (var i = 0; i < 3; i++)
        {
            cluster.Start(i);
        }

        for (var n = 0; n < 20; n++)
        {
            Assert.True((await cluster.Node(0).ProposeAsync(0, ReplayedMachine.Id, new byte[] { (byte)n })).IsOk);
        }

        // A window in which a replayer that is not paused would have run at least once (its first step is due
        // 1 s after start, the next every second); nothing can be waited for when nothing must happen.
        await Task.Delay(1500);
        Assert.Empty(machines[1]!.Replayed);

        cluster.Node(1).ContinueCheckpointReplayer();
        await KvCluster.WaitUntil(() => machines[1]!.Replayed.Count == 20, "20 values replayed", TimeSpan.FromSeconds(10));
        Assert.Equal(Enumerable.Range(0, 20).Select(n => (byte)n), machines[1]!.Replayed.Select(r => r.Value));
        Assert.True(machines[1]!.Replayed.Select(r => r.Instance).SequenceEqual(machines[1]!.Replayed.Select(r => r.Instance).Order()));

        // A step runs on node 1's loop and feeds only instances below the node's current one, all replayed by
        // now; node 1 learns the next values on that loop after the pause, so every step after them sees it.
        cluster.Node(1).PauseCheckpointReplayer();
        for (var n = 20; n < 30; n++)
        {
            Assert.True((await cluster.Node(0).ProposeAsync(0, ReplayedMachine.Id, new byte[] { (byte)n })).IsOk);
        }

        await KvCluster.WaitUntil(() => cluster.Node(1).GetNowInstanceId(0) >= 30, "node 1 to learn the next ten values", TimeSpan.FromSeconds(10));

        // Again a window for something that must not happen: a paused replayer feeds nothing.
        await Task.Delay(1500);
        Assert.Equal(20, machines[1]!.Replayed.Count);
        cluster.Node(1).ContinueCheckpointReplayer();
        await KvCluster.WaitUntil(() => machines[1]!.Replayed.Count == 30, "30 values replayed", TimeSpan.FromSeconds(10));
        Assert.Empty(machines[0]!.Replayed);
    }

    /// <summary>Builds its checkpoint from the replayer only; its live execution does nothing.</summary>
    private sealed class ReplayedMachine : IStateMachine
    {
        public const int Id = 3;
        private readonly object _gate = new();
        private readonly List<(ulong Instance, byte Value)> _replayed = [];

        public int SmId => Id;

        public List<(ulong Instance, byte Value)> Replayed
        {
            get
            {
                lock (_gate)
                {
                    return [.. _replayed];
                }
            }
        }

        public bool Execute(int groupIndex, ulong instanceId, ReadOnlySpan<byte> value, StateMachineContext? context) => true;

        public bool ExecuteForCheckpoint(int groupIndex, ulong instanceId, ReadOnlySpan<byte> value)
        {
            lock (_gate)
            {
                _replayed.Add((instanceId, value[0]));
            }

            return true;
        }
    }
}
