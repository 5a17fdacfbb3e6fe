using System.Text;
using Google.Protobuf;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Checkpoints;

/// <summary>
/// Start-up checks of a group's log against its state machines' checkpoint (PhxPaxos
/// <c>ProtectionLogic_IsCheckpointInstanceIDCorrect</c> and the replay in <c>Instance::Init</c>).
/// </summary>
public sealed class StartupProtectionTests : IDisposable
{
    private static readonly NodeId Me = NodeId.Parse("127.0.0.1:22000");
    private readonly string _root = Path.Combine(Path.GetTempPath(), "paxos-startup-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public void A_checkpoint_ahead_of_an_empty_log_starts_the_group_after_it()
    {
        using (var node = StartNode(new FixedCheckpointMachine(41)))
        {
            Assert.Equal(42ul, node.GetNowInstanceId(0));
            Assert.Equal(42ul, node.GetMinChosenInstanceId(0));
        }

        // The mark is durable: the next start agrees even before anything was learned.
        using var again = StartNode(new FixedCheckpointMachine(41));
        Assert.Equal(42ul, again.GetMinChosenInstanceId(0));
    }

    [Fact]
    public void A_checkpoint_ahead_of_a_non_empty_log_opens_the_log_s_last_instance_and_executes_nothing()
    {
        // Learned records lost with the unsynced tail at a crash, while the state machine kept their effect.
        // PhxPaxos refuses to start here until the log is deleted; this engine starts where its log ends and learns
        // instances 4..41 again from its peers without executing them (jumping past them would strand peers that
        // never learned them, and the record at 4 may be an accept that lost).
        WriteLog(0, 1, 2, 3, 4);
        var machine = new FixedCheckpointMachine(41);
        using (var node = StartNode(machine))
        {
            Assert.Empty(machine.Executed);
            Assert.Equal(4ul, node.GetNowInstanceId(0));
            Assert.Equal(0ul, node.GetMinChosenInstanceId(0));
            Assert.Equal(InstanceValueStatus.NotChosenYet, node.GetInstanceValue(0, 4).Status);
        }

        using var again = StartNode(new FixedCheckpointMachine(41));
        Assert.Equal(4ul, again.GetNowInstanceId(0));
        Assert.Equal(0ul, again.GetMinChosenInstanceId(0));
    }

    [Fact]
    public void A_checkpoint_at_the_last_record_opens_that_instance_again_without_executing_it_or_cleaning_the_log()
    {
        WriteLog(0, 1, 2, 3, 4);
        var machine = new FixedCheckpointMachine(4);
        using var node = StartNode(machine);
        Assert.Empty(machine.Executed);
        Assert.Equal(4ul, node.GetNowInstanceId(0));
        Assert.Equal(0ul, node.GetMinChosenInstanceId(0));
    }

    [Fact]
    public void A_log_older_than_the_checkpoint_replays_only_what_follows_it()
    {
        WriteLog(0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
        var machine = new FixedCheckpointMachine(5);
        using var node = StartNode(machine);

        // The last logged instance (9) is still open after a restart, as in PhxPaxos.
        Assert.Equal([6ul, 7ul, 8ul], machine.Executed);
        Assert.Equal(9ul, node.GetNowInstanceId(0));
    }

    [Fact]
    public void A_missing_needed_record_is_a_clear_error_naming_group_and_instance()
    {
        WriteLog(0, 1, 2, 3, 4, 5, 7, 8, 9);
        var error = Assert.Throws<LogStorageException>(() => StartNode(new FixedCheckpointMachine(2)).Dispose());
        Assert.Contains("Group 0: instance 6 is missing", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_checkpoint_older_than_the_cleaned_log_is_refused_with_a_clear_error()
    {
        WriteLog(0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
        using (var storage = OpenStorage())
        {
            storage.SetMinChosenInstanceId(0, 5);
            storage.DeleteBefore(0, 5);
        }

        var error = Assert.Throws<LogStorageException>(() => StartNode(new FixedCheckpointMachine(2)).Dispose());
        Assert.Contains("Group 0", error.Message, StringComparison.Ordinal);
        Assert.Contains("the log starts at 5", error.Message, StringComparison.Ordinal);
    }

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
            // A leftover temp folder is harmless.
        }
    }

    private FileLogStorage OpenStorage() =>
        new(new LogStorageOptions { RootPath = _root, GroupCount = 1, DataFileSize = 1 << 20 });

    private void WriteLog(params ulong[] instances)
    {
        using var storage = OpenStorage();
        foreach (var i in instances)
        {
            var record = new AcceptorStateData
            {
                InstanceID = i,
                PromiseID = 1,
                PromiseNodeID = Me.Value,
                AcceptedID = 1,
                AcceptedNodeID = Me.Value,
                AcceptedValue = ByteString.CopyFrom(ValueCodec.Pack(FixedCheckpointMachine.Id, Encoding.UTF8.GetBytes($"v{i}"))),
                Checksum = 0,
            };
            storage.PutAsync(0, i, record.ToByteArray(), sync: true).GetAwaiter().GetResult();
        }
    }

    private PaxosNode StartNode(IStateMachine machine)
    {
        var options = new PaxosNodeOptions
        {
            MyNode = Me.ToString(),
            Members = [Me.ToString()],
            StoragePath = _root,
            Sync = false,
            DataFileSize = 1 << 20,
        };
        var node = new PaxosNode(options, transport: new InMemoryNetwork(1).CreateTransport(Me));
        try
        {
            node.AddStateMachine(0, machine);
            node.Start();
            return node;
        }
        catch
        {
            node.Dispose();
            throw;
        }
    }

    /// <summary>A state machine whose checkpoint is fixed; records what it executes.</summary>
    private sealed class FixedCheckpointMachine(ulong checkpoint) : IStateMachine
    {
        public const int Id = 1;

        public List<ulong> Executed { get; } = [];

        public int SmId => Id;

        public bool Execute(int groupIndex, ulong instanceId, ReadOnlySpan<byte> value, StateMachineContext? context)
        {
            Executed.Add(instanceId);
            return true;
        }

        public ulong GetCheckpointInstanceId(int groupIndex) => checkpoint;
    }
}
