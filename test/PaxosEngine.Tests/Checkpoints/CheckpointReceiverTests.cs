using Google.Protobuf;
using Orleans.Paxos.Engine.Checkpoints;
using Orleans.Paxos.Engine.Hashing;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Tests.Checkpoints;

/// <summary>The receiving side of a transfer on its own: order, checksums, paths, and one transfer at a time.</summary>
public sealed class CheckpointReceiverTests : IDisposable
{
    private const ulong SenderA = 1001;
    private const ulong SenderB = 1002;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "paxos-cp-recv-" + Guid.NewGuid().ToString("N"));
    private readonly CheckpointReceiver _receiver;

    public CheckpointReceiverTests()
    {
        Directory.CreateDirectory(_dir);
        _receiver = new CheckpointReceiver(_dir);
    }

    [Fact]
    public void A_complete_transfer_reassembles_every_file()
    {
        var data = new byte[3000];
        new Random(5).NextBytes(data);
        Assert.Equal(ReceiveOutcome.Begun, _receiver.Receive(Begin(SenderA, 7, 99), out _));
        Assert.Equal(ReceiveOutcome.Written, _receiver.Receive(Chunk(SenderA, 7, 1, "sub/a.db", 0, data.AsSpan(0, 1000)), out _));
        Assert.Equal(ReceiveOutcome.Duplicate, _receiver.Receive(Chunk(SenderA, 7, 1, "sub/a.db", 0, data.AsSpan(0, 1000)), out _));
        Assert.Equal(ReceiveOutcome.Written, _receiver.Receive(Chunk(SenderA, 7, 2, "sub/a.db", 1000, data.AsSpan(1000)), out _));
        Assert.Equal(ReceiveOutcome.Written, _receiver.Receive(Chunk(SenderA, 7, 3, "empty", 0, []), out _));
        Assert.Equal(ReceiveOutcome.Ended, _receiver.Receive(End(SenderA, 7, 4), out _));

        Assert.Equal(99ul, _receiver.CheckpointInstanceId);
        Assert.Equal(["sub/a.db", "empty"], _receiver.Files[3]);
        Assert.Equal(data, File.ReadAllBytes(Path.Combine(_receiver.TempDirectory(3), "sub", "a.db")));
        Assert.Empty(File.ReadAllBytes(Path.Combine(_receiver.TempDirectory(3), "empty")));

        _receiver.Reset();
        Assert.False(Directory.Exists(_receiver.TempDirectory(3)));
    }

    [Fact]
    public void A_second_sender_is_refused_while_a_transfer_runs_and_the_first_continues()
    {
        Assert.Equal(ReceiveOutcome.Begun, _receiver.Receive(Begin(SenderA, 7, 99), out _));
        Assert.Equal(ReceiveOutcome.Refused, _receiver.Receive(Begin(SenderB, 8, 120), out var problem));
        Assert.Contains("under way", problem, StringComparison.Ordinal);
        Assert.Equal(ReceiveOutcome.Refused, _receiver.Receive(Chunk(SenderB, 8, 1, "a.db", 0, [1, 2, 3]), out _));
        Assert.Equal(ReceiveOutcome.Refused, _receiver.Receive(Chunk(SenderA, 9, 1, "a.db", 0, [1, 2, 3]), out _));
        Assert.Equal(ReceiveOutcome.Written, _receiver.Receive(Chunk(SenderA, 7, 1, "a.db", 0, [4, 5, 6]), out _));
        Assert.Equal(ReceiveOutcome.Ended, _receiver.Receive(End(SenderA, 7, 2), out _));
        Assert.Equal([4, 5, 6], File.ReadAllBytes(Path.Combine(_receiver.TempDirectory(3), "a.db")));
    }

    [Fact]
    public void Chunks_without_a_begin_are_refused()
    {
        Assert.Equal(ReceiveOutcome.Refused, _receiver.Receive(Chunk(SenderA, 7, 1, "a.db", 0, [1]), out var problem));
        Assert.Contains("no transfer", problem, StringComparison.Ordinal);
    }

    [Fact]
    public void A_damaged_chunk_breaks_the_transfer()
    {
        _receiver.Receive(Begin(SenderA, 7, 99), out _);
        var chunk = Chunk(SenderA, 7, 1, "a.db", 0, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        chunk.Buffer = ByteString.CopyFrom([9, 2, 3, 4, 5, 6, 7, 8, 9]);
        Assert.Equal(ReceiveOutcome.Broken, _receiver.Receive(chunk, out var problem));
        Assert.Contains("checksum", problem, StringComparison.Ordinal);
        Assert.Contains("a.db", problem, StringComparison.Ordinal);
    }

    [Fact]
    public void A_gap_in_the_sequence_breaks_the_transfer()
    {
        _receiver.Receive(Begin(SenderA, 7, 99), out _);
        Assert.Equal(ReceiveOutcome.Broken, _receiver.Receive(Chunk(SenderA, 7, 2, "a.db", 0, [1]), out var problem));
        Assert.Contains("lost", problem, StringComparison.Ordinal);
    }

    [Fact]
    public void A_chunk_at_the_wrong_offset_breaks_the_transfer()
    {
        _receiver.Receive(Begin(SenderA, 7, 99), out _);
        Assert.Equal(ReceiveOutcome.Broken, _receiver.Receive(Chunk(SenderA, 7, 1, "a.db", 10, [1]), out var problem));
        Assert.Contains("offset 10", problem, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("../escape.db")]
    [InlineData("/etc/passwd")]
    [InlineData("")]
    public void A_path_outside_the_checkpoint_folder_breaks_the_transfer(string path)
    {
        _receiver.Receive(Begin(SenderA, 7, 99), out _);
        Assert.Equal(ReceiveOutcome.Broken, _receiver.Receive(Chunk(SenderA, 7, 1, path, 0, [1]), out _));
        Assert.False(File.Exists(Path.Combine(_dir, "escape.db")));
    }

    [Fact]
    public void A_new_begin_after_reset_deletes_leftovers_of_an_abandoned_transfer()
    {
        _receiver.Receive(Begin(SenderA, 7, 99), out _);
        _receiver.Receive(Chunk(SenderA, 7, 1, "a.db", 0, [1, 2]), out _);
        var restarted = new CheckpointReceiver(_dir);
        Assert.Equal(ReceiveOutcome.Begun, restarted.Receive(Begin(SenderB, 8, 120), out _));
        Assert.False(File.Exists(Path.Combine(restarted.TempDirectory(3), "a.db")));
        Assert.Equal(ReceiveOutcome.Written, restarted.Receive(Chunk(SenderB, 8, 1, "a.db", 0, [3]), out _));
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
            // A leftover temp folder is harmless.
        }
    }

    private static CheckpointMsg Begin(ulong sender, ulong uuid, ulong checkpoint) => new()
    {
        MsgType = (int)CheckpointMsgType.SendFile,
        NodeID = sender,
        UUID = uuid,
        Sequence = 0,
        Flag = (int)CheckpointSendFileFlag.Begin,
        CheckpointInstanceID = checkpoint,
    };

    private static CheckpointMsg End(ulong sender, ulong uuid, ulong sequence) => new()
    {
        MsgType = (int)CheckpointMsgType.SendFile,
        NodeID = sender,
        UUID = uuid,
        Sequence = sequence,
        Flag = (int)CheckpointSendFileFlag.End,
    };

    private static CheckpointMsg Chunk(ulong sender, ulong uuid, ulong sequence, string path, ulong offset, ReadOnlySpan<byte> data) => new()
    {
        MsgType = (int)CheckpointMsgType.SendFile,
        NodeID = sender,
        UUID = uuid,
        Sequence = sequence,
        Flag = (int)CheckpointSendFileFlag.Ing,
        SMID = 3,
        FilePath = path,
        Offset = offset,
        Buffer = ByteString.CopyFrom(data),
        Checksum = SkipCrc32.Compute(0, data, SkipCrc32.ValueSkip),
    };
}
