using System.Text;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.StateMachines.KeyValue;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.StateMachines;

public sealed class KeyValueStateMachineTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "kv-sm-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private static byte[] B(string s) => Encoding.UTF8.GetBytes(s);

    private static KeyValueResult Run(KeyValueStateMachine sm, ulong instance, byte[] op, int group = 0)
    {
        var ctx = new StateMachineContext(sm.SmId);
        Assert.True(sm.Execute(group, instance, op, ctx));
        return Assert.IsType<KeyValueResult>(ctx.Output);
    }

    [Fact]
    public void Put_get_cas_delete_with_versions()
    {
        using var sm = new KeyValueStateMachine(_root);
        Assert.Equal(KeyValueStatus.NotFound, Run(sm, 0, KeyValueCommand.Get(B("a"))).Status);

        var put = Run(sm, 1, KeyValueCommand.Put(B("a"), B("one")));
        Assert.Equal(new KeyValueResult(KeyValueStatus.Ok, null, 2), put);

        var get = Run(sm, 2, KeyValueCommand.Get(B("a")));
        Assert.Equal("one", Encoding.UTF8.GetString(get.Value!));
        Assert.Equal(2UL, get.Version);

        var conflict = Run(sm, 3, KeyValueCommand.CompareAndSet(B("a"), B("two"), expectedVersion: 7));
        Assert.Equal(KeyValueStatus.VersionConflict, conflict.Status);
        Assert.Equal(2UL, conflict.Version);
        Assert.Equal("one", Encoding.UTF8.GetString(conflict.Value!));

        var cas = Run(sm, 4, KeyValueCommand.CompareAndSet(B("a"), B("two"), expectedVersion: 2));
        Assert.Equal(KeyValueStatus.Ok, cas.Status);
        Assert.Equal(5UL, cas.Version);

        var create = Run(sm, 5, KeyValueCommand.CompareAndSet(B("b"), B("new"), expectedVersion: 0));
        Assert.Equal(KeyValueStatus.Ok, create.Status);
        Assert.Equal(KeyValueStatus.VersionConflict, Run(sm, 6, KeyValueCommand.CompareAndSet(B("b"), B("again"), 0)).Status);

        Assert.Equal(KeyValueStatus.VersionConflict, Run(sm, 7, KeyValueCommand.Delete(B("a"), expectedVersion: 2)).Status);
        Assert.Equal(KeyValueStatus.Ok, Run(sm, 8, KeyValueCommand.Delete(B("a"), expectedVersion: 5)).Status);
        Assert.Equal(KeyValueStatus.NotFound, Run(sm, 9, KeyValueCommand.Delete(B("a"))).Status);
        Assert.Equal(KeyValueStatus.NotFound, sm.ReadStale(0, B("a")).Status);
        Assert.Equal("new", Encoding.UTF8.GetString(sm.ReadStale(0, B("b")).Value!));
        Assert.Equal(7UL, sm.GetCheckpointInstanceId(0));
    }

    [Fact]
    public void Garbage_is_answered_with_bad_request_and_does_not_stop_the_group()
    {
        using var sm = new KeyValueStateMachine(_root);
        Assert.Equal(KeyValueStatus.BadRequest, Run(sm, 0, [0xFF, 0xFF, 0xFF]).Status);
        Assert.Throws<ArgumentException>(() => KeyValueCommand.Put([], B("x")));
    }

    [Fact]
    public void A_second_write_of_a_key_in_one_instance_is_refused_so_a_version_names_one_write()
    {
        // Found by the fault harness: with batching, cas(c3-37 -> c3-38) and put(c4-39) of one key were
        // chosen in one instance, both got version 1 + instance, and a later cas holding the version of
        // c3-38 overwrote c4-39.
        using (var sm = new KeyValueStateMachine(_root))
        {
            Run(sm, 0, KeyValueCommand.Put(B("k"), B("v0")));
            var cas = Run(sm, 1, KeyValueCommand.CompareAndSet(B("k"), B("a"), expectedVersion: 1));
            Assert.Equal(KeyValueStatus.Ok, cas.Status);
            Assert.Equal(KeyValueStatus.Retry, Run(sm, 1, KeyValueCommand.Put(B("k"), B("b"))).Status);
            Assert.Equal(KeyValueStatus.Retry, Run(sm, 1, KeyValueCommand.Delete(B("k"))).Status);
            Assert.Equal(KeyValueStatus.Ok, Run(sm, 1, KeyValueCommand.Put(B("other"), B("x"))).Status);
            Assert.Equal("a", Run(sm, 1, KeyValueCommand.Get(B("k"))).Value is { } v ? Encoding.UTF8.GetString(v) : null);

            // A refused conditional write still counts: the rule depends on the operations only.
            Assert.Equal(KeyValueStatus.VersionConflict, Run(sm, 2, KeyValueCommand.CompareAndSet(B("k"), B("c"), expectedVersion: 99)).Status);
            Assert.Equal(KeyValueStatus.Retry, Run(sm, 2, KeyValueCommand.Put(B("k"), B("d"))).Status);

            // The next instance accepts it; the version held by the cas caller now names "a" only.
            Assert.Equal(KeyValueStatus.Ok, Run(sm, 3, KeyValueCommand.CompareAndSet(B("k"), B("e"), cas.Version)).Status);
        }

        // Replaying instance 1 after a restart in the middle refuses the same operations.
        using (var sm = new KeyValueStateMachine(Path.Combine(_root, "replay")))
        {
            Run(sm, 0, KeyValueCommand.Put(B("k"), B("v0")));
            Run(sm, 1, KeyValueCommand.CompareAndSet(B("k"), B("a"), expectedVersion: 1));
        }

        using (var sm = new KeyValueStateMachine(Path.Combine(_root, "replay")))
        {
            Assert.True(sm.Execute(0, 1, KeyValueCommand.CompareAndSet(B("k"), B("a"), 1), null));
            Assert.Equal(KeyValueStatus.Retry, Run(sm, 1, KeyValueCommand.Put(B("k"), B("b"))).Status);
            Assert.Equal("a", Encoding.UTF8.GetString(sm.ReadStale(0, B("k")).Value!));
        }
    }

    [Fact]
    public void Replay_after_restart_is_idempotent_including_a_partly_applied_batch()
    {
        using (var sm = new KeyValueStateMachine(_root))
        {
            Run(sm, 0, KeyValueCommand.Put(B("k"), B("v0")));
            // Instance 1 is a batch of three operations; only the first two were applied before the "crash".
            Run(sm, 1, KeyValueCommand.Put(B("x"), B("1")));
            Run(sm, 1, KeyValueCommand.CompareAndSet(B("k"), B("v1"), expectedVersion: 1));
        }

        using (var sm = new KeyValueStateMachine(_root))
        {
            var cp = sm.GetCheckpointInstanceId(0);
            Assert.Equal(0UL, cp);

            // The engine replays from checkpoint + 1: the whole of instance 1.
            foreach (var op in new[] { KeyValueCommand.Put(B("x"), B("1")), KeyValueCommand.CompareAndSet(B("k"), B("v1"), 1), KeyValueCommand.Put(B("y"), B("2")) })
            {
                Assert.True(sm.Execute(0, 1, op, null));
            }

            // Applied once: v1 at version 2 (instance 1); the third operation was applied by the replay.
            Assert.Equal("v1", Encoding.UTF8.GetString(sm.ReadStale(0, B("k")).Value!));
            Assert.Equal(2UL, sm.ReadStale(0, B("k")).Version);
            Assert.Equal("2", Encoding.UTF8.GetString(sm.ReadStale(0, B("y")).Value!));

            // Live execution continues normally.
            Assert.Equal(KeyValueStatus.Ok, Run(sm, 2, KeyValueCommand.CompareAndSet(B("k"), B("v2"), expectedVersion: 2)).Status);
            Assert.Equal(1UL, sm.GetCheckpointInstanceId(0));
        }
    }

    [Fact]
    public async Task Checkpoint_snapshot_is_installed_in_place_on_another_node()
    {
        using var source = new KeyValueStateMachine(Path.Combine(_root, "a"));
        for (var i = 0UL; i < 20; i++)
        {
            Run(source, i, KeyValueCommand.Put(B("key" + i), B("value" + i)), group: 3);
        }

        Assert.True(source.LockCheckpointState());
        var state = source.GetCheckpointState(3);
        Assert.NotNull(state);
        Assert.Equal(["kv.db"], state!.Files);

        // The live store keeps changing while the checkpoint is locked; the snapshot does not.
        Run(source, 20, KeyValueCommand.Put(B("late"), B("x")), group: 3);

        using var target = new KeyValueStateMachine(Path.Combine(_root, "b"));
        Run(target, 0, KeyValueCommand.Put(B("stale"), B("old")), group: 3);
        var reader = Task.Run(() => target.ReadStale(3, B("stale")));
        Assert.True(target.LoadCheckpointState(3, state.Directory, state.Files, source.GetCheckpointInstanceId(3) - 1));
        await reader;
        source.UnlockCheckpointState();
        Assert.False(Directory.Exists(state.Directory));

        Assert.Equal(18UL, target.GetCheckpointInstanceId(3));
        Assert.Equal(KeyValueStatus.NotFound, target.ReadStale(3, B("stale")).Status);
        Assert.Equal(KeyValueStatus.NotFound, target.ReadStale(3, B("late")).Status);
        Assert.Equal("value7", Encoding.UTF8.GetString(target.ReadStale(3, B("key7")).Value!));

        // Execution continues on the installed state.
        Assert.Equal(KeyValueStatus.Ok, Run(target, 20, KeyValueCommand.CompareAndSet(B("key7"), B("z"), expectedVersion: 8), group: 3).Status);
    }

    [Fact]
    public async Task Three_nodes_agree_and_a_restarted_node_resumes_from_its_store()
    {
        var network = new InMemoryNetwork(seed: 7);
        var ids = new[] { NodeId.Parse("127.0.0.1:23001"), NodeId.Parse("127.0.0.1:23002"), NodeId.Parse("127.0.0.1:23003") };
        var nodes = new PaxosNode?[3];
        var machines = new KeyValueStateMachine?[3];
        var storages = new ILogStorage?[3];

        void Start(int i)
        {
            var options = new PaxosNodeOptions
            {
                MyNode = ids[i].ToString(),
                Members = [.. ids.Select(x => x.ToString())],
                GroupCount = 2,
                StoragePath = Path.Combine(_root, "n" + i),
                Sync = false,
                DataFileSize = 1 << 20,
                AskForLearnInterval = TimeSpan.FromMilliseconds(300),
            };
            storages[i] = new FileLogStorage(new LogStorageOptions { RootPath = options.StoragePath, GroupCount = 2, DataFileSize = 1 << 20 });
            machines[i] = new KeyValueStateMachine(options.StoragePath);
            nodes[i] = new PaxosNode(options, null, network.CreateTransport(ids[i]), storages[i]);
            nodes[i]!.AddStateMachine(machines[i]!);
            nodes[i]!.Start();
        }

        void Stop(int i)
        {
            nodes[i]?.Dispose();
            storages[i]?.Dispose();
            machines[i]?.Dispose();
            nodes[i] = null;
        }

        try
        {
            for (var i = 0; i < 3; i++)
            {
                Start(i);
            }

            async Task<KeyValueResult> Propose(int node, int group, byte[] op)
            {
                var r = await nodes[node]!.ProposeAsync(group, op, new StateMachineContext(KeyValueStateMachine.DefaultSmId));
                Assert.Equal(ProposeStatus.Ok, r.Status);
                return Assert.IsType<KeyValueResult>(r.Output);
            }

            var put = await Propose(0, 1, KeyValueCommand.Put(B("k"), B("v1")));
            Assert.Equal(KeyValueStatus.Ok, put.Status);
            var cas = await Propose(1, 1, KeyValueCommand.CompareAndSet(B("k"), B("v2"), put.Version));
            Assert.Equal(KeyValueStatus.Ok, cas.Status);
            var loser = await Propose(2, 1, KeyValueCommand.CompareAndSet(B("k"), B("v3"), put.Version));
            Assert.Equal(KeyValueStatus.VersionConflict, loser.Status);
            var read = await Propose(2, 1, KeyValueCommand.Get(B("k")));
            Assert.Equal("v2", Encoding.UTF8.GetString(read.Value!));

            Stop(2);
            await Propose(0, 1, KeyValueCommand.Put(B("while-down"), B("x")));
            Start(2);
            var deadline = DateTime.UtcNow.AddSeconds(20);
            while (machines[2]!.ReadStale(1, B("while-down")).Status != KeyValueStatus.Ok)
            {
                Assert.True(DateTime.UtcNow < deadline, "the restarted node did not catch up");
                await Task.Delay(50);
            }

            Assert.Equal("v2", Encoding.UTF8.GetString(machines[2]!.ReadStale(1, B("k")).Value!));
            Assert.Equal(cas.Version, machines[2]!.ReadStale(1, B("k")).Version);
        }
        finally
        {
            for (var i = 0; i < 3; i++)
            {
                Stop(i);
            }
        }
    }
}
