using System.Text;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Groups;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Checkpoints;

/// <summary>
/// A node restarted from its folder (PhxPaxos <c>Instance::Init</c>): its state machines execute again what the
/// log holds after their checkpoint, and a checkpoint that covers the whole log starts the group after it.
/// </summary>
public sealed class RestartTests
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Without_a_checkpoint_a_restarted_node_executes_its_log_again_from_the_start()
    {
        using var cluster = new TestCluster(3, 1, seed: 531);
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal((ulong)i, Ok(await cluster.Propose(i % 3, 0, $"v{i}")).InstanceId);
        }

        await cluster.WaitConvergedAsync(0, 10, Generous);
        cluster.Stop(2);
        cluster.Start(2);

        // Replayed during Start, in order: instances 0..8. The last record (9) is still open after a restart, as in
        // PhxPaxos; it is learned from the peers afterwards.
        var replayed = cluster.Machines[2][0].Snapshot();
        Assert.Equal(Enumerable.Range(0, 9).Select(i => ((ulong)i, $"v{i}")), replayed.Take(9).Select(e => (e.Instance, Encoding.UTF8.GetString(e.Value))));
        await cluster.WaitConvergedAsync(0, 10, Generous);
        cluster.AssertSafety(0);
        Assert.Equal(Enumerable.Range(0, 10).Select(i => (ulong)i), cluster.Machines[2][0].Snapshot().Select(e => e.Instance));
    }

    [Fact]
    public async Task A_restarted_node_executes_again_only_what_follows_its_state_machines_checkpoint()
    {
        var stores = new MachineStore[3];
        using var cluster = Cluster(seed: 532, stores);
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal((ulong)i, Ok(await Propose(cluster, i % 3, $"v{i}")).InstanceId);
        }

        await Polling.WaitUntilAsync(() => stores.All(s => s.Executed.Count == 10), Generous, "every node to execute ten values");

        // Node 2's state machine made instances up to 4 durable; what it did after that is lost with the process.
        cluster.Stop(2);
        stores[2].Restart(checkpoint: 4);
        cluster.Start(2);
        Assert.Equal(Enumerable.Range(5, 4).Select(i => ((ulong)i, $"v{i}")), stores[2].Executed);

        await Polling.WaitUntilAsync(() => stores[2].Executed.Count == 5, Generous, "node 2 to learn the last instance");
        Assert.Equal(Enumerable.Range(5, 5).Select(i => ((ulong)i, $"v{i}")), stores[2].Executed);
        Assert.Equal(10ul, cluster.Node(2).GetNowInstanceId(0));
    }

    [Fact]
    public async Task A_node_whose_state_machine_checkpointed_every_value_it_executed_restarts_and_executes_nothing_twice()
    {
        // The checkpoint is then the log's last instance. Start-up used to refuse it as a checkpoint ahead of the log.
        var stores = new MachineStore[3];
        using var cluster = Cluster(seed: 533, stores, checkpointEveryValue: true);
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal((ulong)i, Ok(await Propose(cluster, i % 3, $"v{i}")).InstanceId);
        }

        await Polling.WaitUntilAsync(() => stores.All(s => s.Executed.Count == 10), Generous, "every node to execute ten values");
        for (var n = 0; n < 3; n++)
        {
            var last = (ulong)(9 + n);
            await Polling.WaitUntilAsync(() => Enumerable.Range(0, 3).All(i => cluster.Node(i).GetNowInstanceId(0) == last + 1), Generous, $"every node to execute instance {last}");
            Assert.Equal(last, cluster.Node(n).GetCheckpointInstanceId(0));
            cluster.Stop(n);
            stores[n].Restart(checkpoint: last);
            cluster.Start(n);

            // Nothing to execute again. The last instance is open again (as in PhxPaxos): the record there may be an
            // accept that lost rather than the value learned, so it is learned again, not executed again.
            Assert.Empty(stores[n].Executed);
            Assert.Equal(last, cluster.Node(n).GetNowInstanceId(0));
            Assert.Equal(VotingState.Voting, cluster.Node(n).GetGroupVotingState(0).State);
            Assert.Null(cluster.Node(n).GetGroupStoppedReason(0));

            Assert.Equal((ulong)(10 + n), Ok(await Propose(cluster, n, $"after-restart-{n}")).InstanceId);
        }

        await Polling.WaitUntilAsync(() => Enumerable.Range(0, 3).All(n => cluster.Node(n).GetNowInstanceId(0) == 13), Generous, "every node to reach instance 13");
        Assert.Equal([(10ul, "after-restart-0"), (11ul, "after-restart-1"), (12ul, "after-restart-2")], stores[0].Executed);
        Assert.Equal([(12ul, "after-restart-2")], stores[2].Executed);
    }

    [Fact]
    public async Task A_group_whose_only_state_machine_is_the_master_restarts()
    {
        // With no user state machine the group's checkpoint is the master's version: the instance of the last
        // master operation that took effect. Between the master's renewals that is the log's last instance.
        using var cluster = new TestCluster(3, 1, seed: 534, configure: o => o.UseMaster = true, recordingMachines: false);
        await Polling.WaitUntilAsync(() => Enumerable.Range(0, 3).All(n => cluster.Node(n).GetNowInstanceId(0) >= 1 && !cluster.Node(n).GetMaster(0).Node.IsNull), Generous, "a master every node knows");
        for (var n = 0; n < 3; n++)
        {
            var node = n;
            await Polling.WaitUntilAsync(
                () => cluster.Node(node).GetCheckpointInstanceId(0) + 1 == cluster.Node(node).GetNowInstanceId(0),
                Generous,
                $"node {n}'s last executed instance to be a master operation that took effect (a renewal)");
            var checkpoint = cluster.Node(n).GetCheckpointInstanceId(0);
            cluster.Stop(n);
            cluster.Start(n);
            Assert.Null(cluster.Node(n).GetGroupStoppedReason(0));
            Assert.True(cluster.Node(n).GetNowInstanceId(0) >= checkpoint, $"node {n} restarted at {cluster.Node(n).GetNowInstanceId(0)}, checkpoint {checkpoint}");
        }

        // The group goes on: a master is (re)elected and every node follows it.
        var before = cluster.Node(0).GetNowInstanceId(0);
        await Polling.WaitUntilAsync(
            () => Enumerable.Range(0, 3).Select(n => cluster.Node(n).GetMaster(0).Node).Distinct().Count() == 1
                && !cluster.Node(0).GetMaster(0).Node.IsNull
                && Enumerable.Range(0, 3).All(n => cluster.Node(n).GetNowInstanceId(0) > before),
            Generous,
            "every node to follow one master past the restarts");
        Assert.All(Enumerable.Range(0, 3), n => Assert.Equal(VotingState.Voting, cluster.Node(n).GetGroupVotingState(0).State));
    }

    private static TestCluster Cluster(int seed, MachineStore[] stores, bool checkpointEveryValue = false)
    {
        var cluster = new TestCluster(3, 1, seed, startNodes: 0);
        for (var i = 0; i < stores.Length; i++)
        {
            stores[i] = new MachineStore(checkpointEveryValue);
        }

        cluster.Mount = (i, node, _) => node.AddStateMachine(0, new CheckpointedMachine(stores[i]));
        for (var i = 0; i < stores.Length; i++)
        {
            cluster.Start(i);
        }

        return cluster;
    }

    private static Task<ProposeResult> Propose(TestCluster cluster, int node, string value) =>
        cluster.Node(node).ProposeAsync(0, CheckpointedMachine.Id, Encoding.UTF8.GetBytes(value));

    private static ProposeResult Ok(ProposeResult result)
    {
        Assert.Equal(ProposeStatus.Ok, result.Status);
        return result;
    }

    /// <summary>What a state machine keeps across restarts: its checkpoint; and what it executed since it started.</summary>
    private sealed class MachineStore(bool checkpointEveryValue)
    {
        private readonly object _gate = new();
        private readonly List<(ulong Instance, string Value)> _executed = [];
        private ulong _checkpoint = StateMachineCheckpoint.None;

        public ulong Checkpoint
        {
            get
            {
                lock (_gate)
                {
                    return _checkpoint;
                }
            }
        }

        public List<(ulong Instance, string Value)> Executed
        {
            get
            {
                lock (_gate)
                {
                    return [.. _executed];
                }
            }
        }

        public void Add(ulong instance, string value)
        {
            lock (_gate)
            {
                _executed.Add((instance, value));
                if (checkpointEveryValue)
                {
                    _checkpoint = instance;
                }
            }
        }

        /// <summary>The process restarts: only the checkpoint survived.</summary>
        public void Restart(ulong checkpoint)
        {
            lock (_gate)
            {
                _executed.Clear();
                _checkpoint = checkpoint;
            }
        }
    }

    private sealed class CheckpointedMachine(MachineStore store) : IStateMachine
    {
        public const int Id = 2;

        public int SmId => Id;

        public bool Execute(int groupIndex, ulong instanceId, ReadOnlySpan<byte> value, StateMachineContext? context)
        {
            store.Add(instanceId, Encoding.UTF8.GetString(value));
            return true;
        }

        public ulong GetCheckpointInstanceId(int groupIndex) => store.Checkpoint;
    }
}
