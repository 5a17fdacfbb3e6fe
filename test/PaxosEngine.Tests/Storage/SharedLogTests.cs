using Microsoft.Win32.SafeHandles;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Storage;

/// <summary>Runs the conformance suite against <see cref="FileLogStorage"/> with the shared log.</summary>
public sealed class SharedLogConformanceTests : LogStorageConformanceTests
{
    private readonly TempDirectory _root = new();

    public override void Dispose()
    {
        base.Dispose();
        _root.Dispose();
    }

    protected override ILogStorage CreateStorage(int groupCount) =>
        new FileLogStorage(new LogStorageOptions { RootPath = _root.Path, GroupCount = groupCount, DataFileSize = 64 * 1024, SharedLog = true });
}

/// <summary>
/// <see cref="LogStorageOptions.SharedLog"/>: one fsync makes a batch of several groups durable, and whatever part of
/// the unflushed writes a power loss keeps, every acknowledged record is read back after recovery.
/// </summary>
public sealed class SharedLogTests : IDisposable
{
    private const int Groups = 3;
    private readonly TempDirectory _root = new();

    public void Dispose() => _root.Dispose();

    [Fact]
    public async Task One_fsync_makes_a_batch_of_several_groups_durable_and_the_data_files_wait_for_the_checkpoint()
    {
        var files = new FaultyFileOperations();
        using var firstFlushStarted = new ManualResetEventSlim();
        using var releaseFirstFlush = new ManualResetEventSlim();
        var flushes = 0;
        files.BeforeFlush = path =>
        {
            if (Path.GetFileName(path) == SharedLog.FileName && Interlocked.Increment(ref flushes) == 2)
            {
                // The first flush after the open's checkpoint: hold it while puts of every group queue up behind it.
                firstFlushStarted.Set();
                releaseFirstFlush.Wait(TimeSpan.FromSeconds(30));
            }
        };

        using var storage = Open(files, groups: 8, checkpointOnClose: false);
        var before = storage.FsyncCount;
        var first = Task.Run(() => storage.PutAsync(0, 0, StorageTestData.Sized(0, 100, 1), sync: true));
        Assert.True(firstFlushStarted.Wait(TimeSpan.FromSeconds(30)), "the first put never reached its fsync");
        var queued = Enumerable.Range(1, 7).Select(g => storage.PutAsync(g, 0, StorageTestData.Sized(0, 100, g + 1), sync: true)).ToList();
        releaseFirstFlush.Set();
        await first;
        await Task.WhenAll(queued);

        // The first put alone, then the seven other groups together: two fsyncs for eight groups.
        Assert.Equal(2, storage.FsyncCount - before);
        for (var g = 0; g < 8; g++)
        {
            var body = StorageTestData.Sized(0, 100, g + 1);
            Assert.True(files.IsDurable(Path.Combine(_root.Path, SharedLog.FileName), body), $"group {g}'s record is not in the shared log's durable bytes");
            Assert.False(files.IsDurable(storage.GetGroupDirectory(g), body), $"group {g}'s data file was fsynced before a checkpoint");
            Assert.Equal(body, storage.Get(g, 0));
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    [InlineData(8)]
    public async Task Acknowledged_records_survive_power_losses_whatever_unflushed_pages_reach_the_disk(int seed)
    {
        var random = new Random(seed);
        var acked = new Dictionary<(int Group, ulong Instance), byte[]>();
        var next = new ulong[Groups];
        for (var round = 0; round < 3; round++)
        {
            var files = new FaultyFileOperations();
            var storage = Open(files, Groups, checkpointOnClose: false);
            AssertHolds(storage, acked, $"seed {seed}, after power loss {round}");
            await PutRandomly(storage, random, next, acked, steps: 60);
            storage.Dispose();
            files.SimulatePowerLoss(random);
        }

        using var last = Open(LogFileOperations.Os, Groups, checkpointOnClose: true);
        AssertHolds(last, acked, $"seed {seed}, at the end");
    }

    [Fact]
    public async Task A_disk_that_ignores_the_shared_log_fsync_loses_acknowledged_records()
    {
        // The check above can fail: when the shared log's fsync is a no-op, a power loss takes acknowledged records.
        // Few, small records: no rollover and no checkpoint fsyncs the data files behind them.
        var files = new FaultyFileOperations { IgnoreFlushesOf = SharedLog.FileName };
        var acked = new Dictionary<(int Group, ulong Instance), byte[]>();
        var storage = Open(files, Groups, checkpointOnClose: false);
        for (var g = 0; g < Groups; g++)
        {
            var body = StorageTestData.Sized(0, 100, g);
            await storage.PutAsync(g, 0, body, sync: true);
            acked[(g, 0)] = body;
        }

        storage.Dispose();
        files.SimulatePowerLoss(random: null);
        using var reopened = Open(LogFileOperations.Os, Groups, checkpointOnClose: true);
        Assert.Contains(acked, pair => !(reopened.Get(pair.Key.Group, pair.Key.Instance) ?? []).AsSpan().SequenceEqual(pair.Value));
    }

    [Fact]
    public async Task Opening_without_the_option_replays_the_shared_log_and_removes_it()
    {
        var files = new FaultyFileOperations();
        var acked = new Dictionary<(int Group, ulong Instance), byte[]>();
        var storage = Open(files, Groups, checkpointOnClose: false);
        await PutRandomly(storage, new Random(7), new ulong[Groups], acked, steps: 30);
        storage.Dispose();
        files.SimulatePowerLoss(random: null);

        using (var plain = Open(LogFileOperations.Os, Groups, checkpointOnClose: true, sharedLog: false))
        {
            AssertHolds(plain, acked, "replayed without the option");
        }

        Assert.False(File.Exists(Path.Combine(_root.Path, SharedLog.FileName)));
        using var again = Open(LogFileOperations.Os, Groups, checkpointOnClose: true, sharedLog: false);
        AssertHolds(again, acked, "reopened in the groups' own format");
    }

    [Fact]
    public async Task A_cleared_group_does_not_get_its_old_records_back_after_a_power_loss()
    {
        var files = new FaultyFileOperations();
        var storage = Open(files, Groups, checkpointOnClose: false);
        for (ulong i = 0; i < 10; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, 300, (int)i), sync: true);
            await storage.PutAsync(1, i, StorageTestData.Sized(i, 300, 100 + (int)i), sync: true);
        }

        storage.ClearAllLog(0);
        for (ulong i = 50; i < 53; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, 300, 200 + (int)i), sync: true);
        }

        storage.Dispose();
        files.SimulatePowerLoss(new Random(3));
        using var reopened = Open(LogFileOperations.Os, Groups, checkpointOnClose: true);
        Assert.Null(reopened.Get(0, 5));
        Assert.Equal(52ul, reopened.GetMaxInstanceId(0));
        for (ulong i = 50; i < 53; i++)
        {
            Assert.Equal(StorageTestData.Sized(i, 300, 200 + (int)i), reopened.Get(0, i));
        }

        for (ulong i = 0; i < 10; i++)
        {
            Assert.Equal(StorageTestData.Sized(i, 300, 100 + (int)i), reopened.Get(1, i));
        }
    }

    [Fact]
    public async Task Instances_the_log_cleaner_deleted_after_the_checkpoint_stay_deleted_after_a_crash()
    {
        // Small records, no roll-over and no checkpoint between them: the shared log holds all of them at the crash.
        var files = new FaultyFileOperations();
        var storage = Open(files, Groups, checkpointOnClose: false);
        for (ulong i = 0; i < 20; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, 40, (int)i), sync: true);
        }

        storage.DeleteBefore(0, 10);
        Assert.Null(storage.Get(0, 5));
        storage.Dispose();
        files.SimulatePowerLoss(random: null);

        using var reopened = Open(LogFileOperations.Os, Groups, checkpointOnClose: true);
        for (ulong i = 0; i < 10; i++)
        {
            Assert.Null(reopened.Get(0, i));
        }

        for (ulong i = 10; i < 20; i++)
        {
            Assert.Equal(StorageTestData.Sized(i, 40, (int)i), reopened.Get(0, i));
        }
    }

    [Fact]
    public async Task A_caller_that_writes_its_own_batch_leaves_the_checkpoint_to_the_writer_thread()
    {
        var files = new FaultyFileOperations();
        var storage = Open(files, Groups, checkpointOnClose: false);
        var callerThread = Environment.CurrentManagedThreadId;
        var checkpointThreads = new System.Collections.Concurrent.ConcurrentBag<int>();
        files.BeforeFlush = path =>
        {
            if (Path.GetFileName(Path.GetDirectoryName(path)) == "vfile")
            {
                // A data file is fsynced only by a checkpoint here (no roll-over: 8 small records in 4 KiB files).
                checkpointThreads.Add(Environment.CurrentManagedThreadId);
            }
        };

        // Puts that the calling thread may write itself (when the lane is idle, as it is for the first one), until
        // the records pass the checkpoint threshold.
        var first = StorageTestData.Sized(0, 400, 1);
        var puts = new List<CompletedPut>();
        for (ulong i = 0; i < 8; i++)
        {
            var done = new CompletedPut();
            puts.Add(done);
            storage.Put((int)(i % Groups), i / Groups, i == 0 ? first : StorageTestData.Sized(i / Groups, 400, (int)i + 1), sync: true, done);
            Assert.True(i > 0 || done.Done.IsCompleted, "the first put, on an idle lane, was not written by the calling thread");
        }

        await Task.WhenAll(puts.Select(p => p.Done)).WaitAsync(TimeSpan.FromSeconds(30));

        // Closing joins the writer thread, which takes a due checkpoint before it exits (this storage takes none itself on close).
        var groupDirectory = storage.GetGroupDirectory(0);
        storage.Dispose();
        Assert.True(files.IsDurable(groupDirectory, first), "no checkpoint made the data files durable");
        Assert.NotEmpty(checkpointThreads);
        Assert.DoesNotContain(callerThread, checkpointThreads);
    }

    [Fact]
    public async Task The_write_back_of_a_data_file_starts_every_mebibyte_between_checkpoints_without_making_it_durable()
    {
        var files = new WriteBackRecorder();
        var recordLength = 12 + StorageTestData.Sized(0, 300 * 1024, 1).Length;
        using (var storage = new FileLogStorage(new LogStorageOptions
        {
            RootPath = _root.Path,
            GroupCount = 2,
            SharedLog = true,
            SharedLogCheckpointOnClose = false,
            FileOperations = files,
        }))
        {
            // Three records of 300 KiB: under a mebibyte, no write-back yet.
            for (ulong i = 0; i < 3; i++)
            {
                await storage.PutAsync(0, i, StorageTestData.Sized(i, 300 * 1024, (int)i), sync: true);
            }

            Assert.Empty(files.WriteBacks);

            // The fourth passes it: the write-back of everything written so far starts, and nothing waits for it.
            await storage.PutAsync(0, 3, StorageTestData.Sized(3, 300 * 1024, 3), sync: true);
            var first = Assert.Single(files.WriteBacks);
            Assert.Equal((0L, 4L * recordLength, false), (first.Offset, first.Length, first.Wait));

            // Three more stay under a mebibyte past it; the fourth starts the next range, from the page the first ended in.
            for (ulong i = 4; i < 8; i++)
            {
                await storage.PutAsync(0, i, StorageTestData.Sized(i, 300 * 1024, (int)i), sync: true);
                Assert.Equal(i < 7 ? 1 : 2, files.WriteBacks.Count);
            }

            var second = files.WriteBacks[1];
            Assert.Equal(first.Length / 4096 * 4096, second.Offset);
            Assert.Equal(8L * recordLength, second.Offset + second.Length);
            Assert.False(second.Wait);
            Assert.All(files.WriteBacks, w => Assert.Equal(storage.GetGroupDirectory(0), Path.GetDirectoryName(Path.GetDirectoryName(w.Path))));
        }

        // Starting a write-back promised nothing: no checkpoint ran, so the data file was never fsynced, and the
        // records came back from the shared log.
        Assert.DoesNotContain(files.Flushes, path => path.EndsWith(".f", StringComparison.Ordinal));
        using var reopened = new FileLogStorage(new LogStorageOptions { RootPath = _root.Path, GroupCount = 2, SharedLog = true });
        for (ulong i = 0; i < 8; i++)
        {
            Assert.Equal(StorageTestData.Sized(i, 300 * 1024, (int)i), reopened.Get(0, i));
        }
    }

    [Fact]
    public void The_data_ranges_of_a_sparse_file_cover_every_byte_written()
    {
        // The cut reads only these ranges of a data file: they must hold every byte that is not a hole.
        var path = Path.Combine(_root.Path, "sparse");
        using (var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite))
        {
            RandomAccess.Write(handle, new byte[] { 1, 2, 3 }, 10);
            RandomAccess.Write(handle, new byte[] { 4 }, (8 << 20) + 5);
            RandomAccess.Write(handle, new byte[] { 5 }, (16 << 20) - 1);
            var ranges = DataSync.DataRanges(handle, 0, 16 << 20).ToList();
            foreach (var written in new long[] { 10, 12, (8 << 20) + 5, (16 << 20) - 1 })
            {
                Assert.Contains(ranges, r => r.Start <= written && written < r.End);
            }

            Assert.All(ranges, r => Assert.True(r.Start < r.End && r.End <= 16 << 20, $"range {r.Start}..{r.End}"));
            var from = DataSync.DataRanges(handle, (8 << 20) + 6, 16 << 20).ToList();
            Assert.DoesNotContain(from, r => r.Start <= (8 << 20) + 5 && (8 << 20) + 5 < r.End && r.Start < (8 << 20) + 6);
            Assert.Contains(from, r => r.Start <= (16 << 20) - 1 && (16 << 20) - 1 < r.End);
        }
    }

    [Fact]
    public void A_shared_log_whose_headers_are_both_damaged_is_reported_not_ignored()
    {
        using (Open(LogFileOperations.Os, Groups, checkpointOnClose: true))
        {
        }

        var path = Path.Combine(_root.Path, SharedLog.FileName);
        using (var file = new FileStream(path, FileMode.Open, FileAccess.Write))
        {
            file.Position = 20;
            file.WriteByte(0x5A);
            file.Position = SharedLog.SlotLength + 20;
            file.WriteByte(0x5A);
        }

        var error = Assert.Throws<LogStorageException>(() => Open(LogFileOperations.Os, Groups, checkpointOnClose: true));
        Assert.Contains("neither of its two header slots", error.Message, StringComparison.Ordinal);
        Assert.Equal(path, error.File);
    }

    [Fact]
    public void A_shared_log_written_for_another_group_count_is_refused()
    {
        using (Open(LogFileOperations.Os, Groups, checkpointOnClose: true))
        {
        }

        var error = Assert.Throws<LogStorageException>(() => Open(LogFileOperations.Os, Groups + 1, checkpointOnClose: true));
        Assert.Contains($"written for {Groups} groups", error.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// Puts records to random groups, a few at a time so that batches span groups: new instances, and now and then
    /// the same instance again (a promise, then an accept). Remembers every acknowledged record.
    /// </summary>
    private static async Task PutRandomly(FileLogStorage storage, Random random, ulong[] next, Dictionary<(int, ulong), byte[]> acked, int steps)
    {
        for (var step = 0; step < steps; step++)
        {
            var puts = new List<(int Group, ulong Instance, byte[] Body, Task Put)>();
            foreach (var group in Enumerable.Range(0, Groups).Where(_ => random.Next(2) == 0))
            {
                var again = next[group] > 0 && random.Next(4) == 0;
                var instance = again ? next[group] - 1 : next[group]++;
                var body = StorageTestData.Sized(instance, random.Next(50, 900), random.Next());
                puts.Add((group, instance, body, storage.PutAsync(group, instance, body, sync: true)));
            }

            foreach (var (group, instance, body, put) in puts)
            {
                await put;
                acked[(group, instance)] = body;
            }
        }
    }

    private static void AssertHolds(FileLogStorage storage, Dictionary<(int Group, ulong Instance), byte[]> acked, string when)
    {
        foreach (var ((group, instance), body) in acked)
        {
            var read = storage.Get(group, instance);
            Assert.True(read is not null && read.AsSpan().SequenceEqual(body), $"{when}: group {group} instance {instance} is {(read is null ? "missing" : "different")}");
        }
    }

    /// <summary>The operating system's file operations, recording every write-back started and every file flushed.</summary>
    private sealed class WriteBackRecorder : LogFileOperations
    {
        private readonly Lock _gate = new();
        private readonly List<(string Path, long Offset, long Length, bool Wait)> _writeBacks = [];
        private readonly List<string> _flushes = [];

        public List<(string Path, long Offset, long Length, bool Wait)> WriteBacks
        {
            get
            {
                lock (_gate)
                {
                    return [.. _writeBacks];
                }
            }
        }

        public List<string> Flushes
        {
            get
            {
                lock (_gate)
                {
                    return [.. _flushes];
                }
            }
        }

        public override void WriteBack(SafeFileHandle handle, string path, long offset, long length, bool wait)
        {
            base.WriteBack(handle, path, offset, length, wait);
            lock (_gate)
            {
                _writeBacks.Add((path, offset, length, wait));
            }
        }

        public override void Flush(SafeFileHandle handle, string path, bool dataOnly)
        {
            base.Flush(handle, path, dataOnly);
            lock (_gate)
            {
                _flushes.Add(path);
            }
        }
    }

    private FileLogStorage Open(LogFileOperations files, int groups, bool checkpointOnClose, bool sharedLog = true) =>
        new(new LogStorageOptions
        {
            RootPath = _root.Path,
            GroupCount = groups,
            DataFileSize = 4096,
            SharedLog = sharedLog,
            SharedLogCheckpointBytes = 3000,
            SharedLogCheckpointOnClose = checkpointOnClose,
            FileOperations = files,
        });
}
