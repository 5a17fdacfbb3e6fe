using System.Buffers.Binary;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Telemetry;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Tests.Checkpoints;
using Orleans.Paxos.Engine.Tests.Support;
using Orleans.Paxos.Engine.Tests.Telemetry;

namespace Orleans.Paxos.Engine.Tests.Storage;

/// <summary>
/// A full disk (ENOSPC) and a failing disk (EIO) under <see cref="FileLogStorage"/>, injected through its
/// file operations: the storage stops, says why once, and never acknowledges a record that is not durable.
/// In the telemetry collection because it reads the process-wide meter.
/// </summary>
[Collection(TelemetryCollection.Name)]
public sealed class DiskFaultTests : IDisposable
{
    private const int DataFileSize = 4096;
    private readonly TempDirectory _root = new();

    public static TheoryData<string, DiskError> Faults => new()
    {
        { "Write", DiskError.NoSpace },
        { "Write", DiskError.Io },
        { "Fsync", DiskError.NoSpace },
        { "Fsync", DiskError.Io },
        { "Preallocate", DiskError.NoSpace },
        { "Meta", DiskError.Io },
        { "Index", DiskError.NoSpace },
    };

    public void Dispose() => _root.Dispose();

    [Theory]
    [MemberData(nameof(Faults))]
    public async Task Disk_error_stops_the_storage_once_and_only_durable_puts_succeed(string failing, DiskError error)
    {
        var operation = Enum.Parse<LogFileOperation>(failing);
        using var capture = new MeterCapture();
        var logs = new CollectingLoggerFactory();
        var files = new FaultyFileOperations();
        var storage = Open(files, logs);
        var groupDirectory = storage.GetGroupDirectory(0);
        var acked = new List<(ulong Instance, byte[] Body)>();
        for (ulong i = 0; i < 3; i++)
        {
            var body = StorageTestData.Sized(i, 700, (int)i);
            await storage.PutAsync(0, i, body, sync: true);
            acked.Add((i, body));
        }

        files.Fail(operation, error);

        // Records of ~750 bytes in 4 KiB files: a rollover (fsync, meta, preallocate) within every five puts.
        LogStorageException? failure = null;
        ulong failedInstance = 0;
        for (ulong i = 3; i < 200 && failure is null; i++)
        {
            var body = StorageTestData.Sized(i, 700, (int)i);
            try
            {
                await storage.PutAsync(0, i, body, sync: true);
                acked.Add((i, body));
                if (operation == LogFileOperation.Index)
                {
                    // A put completes once its record is durable; its index row follows within the flush
                    // interval, and the put after a failed index write is refused with the failure inside.
                    await Polling.WaitUntilAsync(() => storage.Failure is not null, TimeSpan.FromSeconds(30), $"the index write after put {i} to fail");
                }
            }
            catch (LogStorageException e)
            {
                failure = operation == LogFileOperation.Index ? e.InnerException as LogStorageException ?? e : e;
                failedInstance = i;
            }
        }

        Assert.NotNull(failure);
        Assert.True(files.FailuresInjected >= 1);
        Assert.Same(failure, storage.Failure);
        Assert.Equal(0, failure.GroupIndex);
        var expectedFile = operation switch
        {
            LogFileOperation.Meta => Path.Combine(groupDirectory, "vfile", "meta"),
            LogFileOperation.Index => Path.Combine(groupDirectory, "index.db"),
            _ => failure.File!,
        };
        Assert.Equal(expectedFile, failure.File);
        Assert.StartsWith(groupDirectory, failure.File, StringComparison.Ordinal);
        Assert.Contains(failure.File!, failure.Message, StringComparison.Ordinal);
        var osText = (operation, error) switch
        {
            (LogFileOperation.Index, DiskError.NoSpace) => "database or disk is full",
            (_, DiskError.NoSpace) => "No space left on device",
            _ => "Input/output error",
        };
        Assert.Contains(osText, failure.Message, StringComparison.Ordinal);
        if (operation is LogFileOperation.Write or LogFileOperation.Fsync or LogFileOperation.Preallocate)
        {
            Assert.EndsWith(".f", failure.File, StringComparison.Ordinal);
        }

        // Every later put fails at once, in this group and in the others, and names the cause.
        foreach (var group in new[] { 0, 1 })
        {
            var later = await Assert.ThrowsAsync<LogStorageException>(() => storage.PutAsync(group, 100, StorageTestData.Promise(100), sync: false));
            Assert.Contains("stopped", later.Message, StringComparison.Ordinal);
            Assert.Contains(osText, later.Message, StringComparison.Ordinal);
        }

        // Nothing acknowledged was left unflushed.
        foreach (var (instance, body) in acked)
        {
            Assert.True(files.IsDurable(groupDirectory, Record(instance, body)), $"instance {instance} was acknowledged but is not durable");
        }

        // Said once, at Critical level, with the group, the step, the file and the error; counted once.
        var errorName = (operation, error) switch
        {
            (LogFileOperation.Index, DiskError.NoSpace) => "SQLITE_FULL",
            (LogFileOperation.Index, DiskError.Io) => "SQLITE_IOERR",
            (_, DiskError.NoSpace) => "ENOSPC",
            _ => "EIO",
        };
        var opName = operation.ToString().ToLowerInvariant();
        var critical = logs.Lines.Where(l => l.Contains("Critical:", StringComparison.Ordinal)).ToList();
        var line = Assert.Single(critical);
        Assert.Contains($"Log storage for group 0 stopped: {opName} failed on {failure.File} ({errorName})", line, StringComparison.Ordinal);
        Assert.Equal(1, capture.Sum("paxos.storage.failures", ("operation", opName), ("error", errorName)));

        // After a power loss only the durable bytes remain; every acknowledged record is read back intact.
        storage.Dispose();
        files.SimulatePowerLoss();
        using var reopened = Open(LogFileOperations.Os, logs);
        Assert.Null(reopened.Failure);
        foreach (var (instance, body) in acked)
        {
            Assert.Equal(body, reopened.Get(0, instance));
        }

        // The failed record either never landed or landed whole; it is never other bytes.
        var failedRead = reopened.Get(0, failedInstance);
        Assert.True(failedRead is null || failedRead.AsSpan().SequenceEqual(StorageTestData.Sized(failedInstance, 700, (int)failedInstance)));
        await reopened.PutAsync(0, 50, StorageTestData.Promise(50), sync: true);
        Assert.Equal(StorageTestData.Promise(50), reopened.Get(0, 50));
    }

    [Fact]
    public async Task After_a_failed_fsync_deleting_old_instances_is_refused_and_leaves_every_file()
    {
        var logs = new CollectingLoggerFactory();
        var files = new FaultyFileOperations();
        var storage = Open(files, logs);
        var vfile = Path.Combine(storage.GetGroupDirectory(0), "vfile");

        // Records of ~750 bytes in 4 KiB files: several files.
        for (ulong i = 0; i < 20; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, 700, (int)i), sync: true);
        }

        var dataFiles = Directory.GetFiles(vfile, "*.f").Order(StringComparer.Ordinal).ToList();
        Assert.True(dataFiles.Count >= 3, $"{dataFiles.Count} data files");

        files.Fail(LogFileOperation.Fsync, DiskError.Io);
        await Assert.ThrowsAsync<LogStorageException>(() => storage.PutAsync(0, 20, StorageTestData.Sized(20, 700, 20), sync: true));
        Assert.NotNull(storage.Failure);

        // The cleaner's call: refused with the cause, and no file goes.
        var refused = Assert.Throws<LogStorageException>(() => storage.DeleteBefore(0, 15));
        Assert.Contains("stopped", refused.Message, StringComparison.Ordinal);
        Assert.Contains("Input/output error", refused.Message, StringComparison.Ordinal);
        Assert.All(dataFiles, file => Assert.True(File.Exists(file), file + " was deleted"));

        // After a power loss every acknowledged record is still there, and the failed one is not other bytes.
        storage.Dispose();
        files.SimulatePowerLoss();
        using var reopened = Open(LogFileOperations.Os, logs);
        for (ulong i = 0; i < 20; i++)
        {
            Assert.Equal(StorageTestData.Sized(i, 700, (int)i), reopened.Get(0, i));
        }

        var failedRead = reopened.Get(0, 20);
        Assert.True(failedRead is null || failedRead.AsSpan().SequenceEqual(StorageTestData.Sized(20, 700, 20)));
    }

    [Fact]
    public async Task Concurrent_sync_puts_racing_a_failing_fsync_are_acknowledged_only_when_durable()
    {
        var files = new FaultyFileOperations();
        var storage = Open(files, new CollectingLoggerFactory());
        var groupDirectory = storage.GetGroupDirectory(0);
        var bodies = Enumerable.Range(0, 400).Select(i => StorageTestData.Sized((ulong)i, 60, i)).ToArray();
        var puts = new Task[bodies.Length];
        for (var i = 0; i < bodies.Length; i++)
        {
            puts[i] = storage.PutAsync(0, (ulong)i, bodies[i], sync: true);
            if (i == 150)
            {
                files.Fail(LogFileOperation.Fsync, DiskError.Io);
            }
        }

        try
        {
            await Task.WhenAll(puts);
        }
        catch (LogStorageException)
        {
            // Checked put by put below.
        }

        var acked = Enumerable.Range(0, bodies.Length).Where(i => puts[i].IsCompletedSuccessfully).ToList();
        Assert.True(acked.Count < bodies.Length, "the failing fsync failed no put");
        Assert.All(puts, p => Assert.True(p.IsCompleted));
        Assert.All(acked, i => Assert.True(files.IsDurable(groupDirectory, Record((ulong)i, bodies[i])), $"instance {i} acknowledged but not durable"));

        // Puts are committed in order: once one failed, no later one succeeded.
        var firstFailed = Enumerable.Range(0, bodies.Length).First(i => !puts[i].IsCompletedSuccessfully);
        Assert.All(acked, i => Assert.True(i < firstFailed, $"instance {i} succeeded after instance {firstFailed} failed"));

        storage.Dispose();
        files.SimulatePowerLoss();
        using var reopened = Open(LogFileOperations.Os, new CollectingLoggerFactory());
        Assert.All(acked, i => Assert.Equal(bodies[i], reopened.Get(0, (ulong)i)));
    }

    [Fact]
    public async Task Flipped_byte_in_the_index_header_moves_it_aside_and_rebuilds_it_from_the_data_files()
    {
        var storage = Open(LogFileOperations.Os, new CollectingLoggerFactory());
        var bodies = Enumerable.Range(0, 20).Select(i => StorageTestData.Sized((ulong)i, 40, i)).ToArray();
        for (var i = 0; i < bodies.Length; i++)
        {
            await storage.PutAsync(0, (ulong)i, bodies[i], sync: true);
        }

        storage.Dispose();
        var index = Path.Combine(_root.Path, "g0", "index.db");
        FlipByte(index, 3); // inside "SQLite format 3"

        var logs = new CollectingLoggerFactory();
        using var reopened = Open(LogFileOperations.Os, logs);
        Assert.True(reopened.WasIndexRebuilt(0));
        Assert.False(reopened.WasIndexRebuilt(1));
        for (var i = 0; i < bodies.Length; i++)
        {
            Assert.Equal(bodies[i], reopened.Get(0, (ulong)i));
        }

        Assert.Single(Directory.GetFiles(Path.Combine(_root.Path, "g0"), "index.db.damaged-*"), f => !f.EndsWith("-wal", StringComparison.Ordinal) && !f.EndsWith("-shm", StringComparison.Ordinal));
        Assert.Contains(logs.Lines, l => l.Contains(index, StringComparison.Ordinal) && l.Contains("damaged", StringComparison.Ordinal));
    }

    /// <summary>
    /// Flips, one at a time, bytes of the pages holding index rows. Each flip is found when the index is
    /// opened (quick_check, naming index.db) or when a row is used (the record at the indexed position must
    /// hold the instance and crc of the row, naming the file); no read ever returns other bytes.
    /// </summary>
    [Fact]
    public async Task Flipped_byte_in_an_index_page_is_detected_and_never_returns_other_bytes()
    {
        var storage = Open(LogFileOperations.Os, new CollectingLoggerFactory());
        var bodies = Enumerable.Range(0, 300).Select(i => StorageTestData.Sized((ulong)i, 30, i)).ToArray();
        for (var i = 0; i < bodies.Length; i++)
        {
            await storage.PutAsync(0, (ulong)i, bodies[i], sync: i % 50 == 49);
        }

        storage.Dispose();
        var index = Path.Combine(_root.Path, "g0", "index.db");
        var original = File.ReadAllBytes(index);
        var pageSize = BinaryPrimitives.ReadUInt16BigEndian(original.AsSpan(16));
        Assert.True(original.Length >= 3 * pageSize, $"index of {original.Length} bytes has too few pages");

        int detectedOnOpen = 0, detectedOnRead = 0, harmless = 0;
        var random = new Random(1234);
        for (var trial = 0; trial < 60; trial++)
        {
            // Pages after the schema page hold the rows; flip a byte in the cell area (the second half of a page).
            var page = random.Next(1, original.Length / pageSize);
            var offset = ((long)page * pageSize) + random.Next(pageSize / 2, pageSize);
            foreach (var aside in Directory.GetFiles(Path.Combine(_root.Path, "g0"), "index.db*"))
            {
                File.Delete(aside);
            }

            File.WriteAllBytes(index, original);
            FlipByte(index, offset);
            FileLogStorage reopened;
            try
            {
                reopened = Open(LogFileOperations.Os, new CollectingLoggerFactory());
            }
            catch (LogStorageException e)
            {
                Assert.NotNull(e.File);
                Assert.Contains(e.File, e.Message, StringComparison.Ordinal);
                detectedOnOpen++;
                continue;
            }

            using (reopened)
            {
                if (reopened.WasIndexRebuilt(0))
                {
                    // Found on open: moved aside and rebuilt from the data files, which the reads below check.
                    detectedOnOpen++;
                }

                var failed = false;
                for (var i = 0; i < bodies.Length; i++)
                {
                    try
                    {
                        var read = reopened.Get(0, (ulong)i);
                        Assert.True(read is not null, $"trial {trial}, byte {offset}: instance {i} vanished");
                        Assert.True(read.AsSpan().SequenceEqual(bodies[i]), $"trial {trial}, byte {offset}: instance {i} read other bytes");
                    }
                    catch (LogStorageException e)
                    {
                        Assert.NotNull(e.File);
                        Assert.Contains(e.File, e.Message, StringComparison.Ordinal);
                        failed = true;
                    }
                }

                if (failed)
                {
                    detectedOnRead++;
                }
                else if (!reopened.WasIndexRebuilt(0))
                {
                    harmless++;
                }
            }
        }

        File.WriteAllBytes(index, original);
        Assert.True(detectedOnOpen + detectedOnRead > 0, $"no flip was detected ({harmless} harmless)");
    }

    /// <summary>
    /// Flips, one at a time, every byte of a record in the middle of a data file (length, instance id,
    /// ballot, value, checksum). A read of that instance fails naming the data file and the record's
    /// offset, or (for a byte that changes nothing the record means) returns the original bytes.
    /// </summary>
    [Fact]
    public async Task Flipped_byte_anywhere_in_a_middle_record_fails_the_read_naming_file_and_offset()
    {
        var storage = Open(LogFileOperations.Os, new CollectingLoggerFactory());
        var bodies = Enumerable.Range(0, 5).Select(i => StorageTestData.Sized((ulong)i, 40, i)).ToArray();
        for (var i = 0; i < bodies.Length; i++)
        {
            await storage.PutAsync(0, (ulong)i, bodies[i], sync: true);
        }

        storage.Dispose();
        var dataFile = Path.Combine(_root.Path, "g0", "vfile", "0.f");
        var original = File.ReadAllBytes(dataFile);
        var recordOffset = (12L * 2) + bodies[0].Length + bodies[1].Length;
        var undetected = new List<long>();
        for (var at = recordOffset; at < recordOffset + 12 + bodies[2].Length; at++)
        {
            File.WriteAllBytes(dataFile, original);
            FlipByte(dataFile, at);
            using var reopened = Open(LogFileOperations.Os, new CollectingLoggerFactory());
            try
            {
                var read = reopened.Get(0, 2);
                if (read is null || !read.AsSpan().SequenceEqual(bodies[2]))
                {
                    undetected.Add(at - recordOffset);
                }
            }
            catch (LogStorageException e)
            {
                Assert.Equal(dataFile, e.File);
                Assert.Equal(recordOffset, e.Offset);
                Assert.Contains($"offset {recordOffset}", e.Message, StringComparison.Ordinal);
            }

            Assert.Equal(bodies[3], reopened.Get(0, 3));
        }

        Assert.True(undetected.Count == 0, $"flips at record bytes {string.Join(",", undetected)} returned other bytes");
    }

    [Fact]
    public async Task Node_whose_fsync_fails_stops_acknowledging_and_catches_up_after_a_restart()
    {
        using var capture = new MeterCapture();
        var logs = new CollectingLoggerFactory();
        var files = new FaultyFileOperations();
        using var cluster = new TestCluster(3, 1, seed: 4242, configure: o => o.Sync = true, startNodes: 0)
        {
            LoggerFactory = logs,
            ConfigureStorage = (i, options) => i == 2 ? options with { FileOperations = files } : options,
        };
        for (var i = 0; i < 3; i++)
        {
            cluster.Start(i);
        }

        for (var i = 0; i < 10; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(i % 3, 0, $"before-{i}")).Status);
        }

        await cluster.WaitConvergedAsync(0, 10, TimeSpan.FromSeconds(60));

        // From here node 2 must not promise or accept anything: every such reply needs a durable record.
        // Nothing is in flight (no master, every proposal returned), so no record of the current instance
        // can have been made durable before the fault.
        var faultInstance = cluster.Node(2).GetNowInstanceId(0);
        var acknowledgedAfterFault = new System.Collections.Concurrent.ConcurrentQueue<string>();
        cluster.Network.SendObserver = (from, to, frame) =>
        {
            if (from == cluster.Ids[2]
                && FrameCodec.TryDecode(frame, FrameCodec.DefaultMaxFrameLength, out var decoded) == FrameError.None
                && decoded!.Paxos is { } message
                && message.MsgType is (int)PaxosMsgType.PrepareReply or (int)PaxosMsgType.AcceptReply
                && message.RejectByPromiseID == 0
                && message.InstanceID >= faultInstance)
            {
                acknowledgedAfterFault.Enqueue($"{(PaxosMsgType)message.MsgType} for instance {message.InstanceID} to {to}");
            }
        };
        files.Fail(LogFileOperation.Fsync, DiskError.NoSpace);

        // The other two keep choosing values.
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(i % 2, 0, $"during-{i}")).Status);
        }

        await WaitUntil(() => cluster.Node(2).GetGroupStoppedReason(0) is not null, "node 2's group did not stop");
        Assert.Equal(ProposeStatus.GroupStopped, (await cluster.Propose(2, 0, "on-the-failed-node")).Status);
        Assert.Empty(acknowledgedAfterFault);
        Assert.True(files.FailuresInjected >= 1);

        var stopped = Assert.Single(logs.Lines, l => l.Contains("Critical: Log storage for group 0 stopped: fsync failed on", StringComparison.Ordinal));
        Assert.Contains("(ENOSPC)", stopped, StringComparison.Ordinal);
        Assert.Contains("No space left on device", stopped, StringComparison.Ordinal);
        Assert.Contains(logs.Lines, l => l.Contains("Critical: Group 0 STOPPED", StringComparison.Ordinal));
        Assert.Equal(1, capture.Sum("paxos.storage.failures", ("operation", "fsync"), ("error", "ENOSPC")));
        capture.ObserveGauges();
        Assert.Equal(1, capture.Gauge("paxos.storage.failed", (PaxosMetrics.NodeTag, cluster.Ids[2].ToString()), (PaxosMetrics.GroupTag, "0")));
        Assert.Equal(0, capture.Gauge("paxos.storage.failed", (PaxosMetrics.NodeTag, cluster.Ids[0].ToString()), (PaxosMetrics.GroupTag, "0")));

        // Power loss on node 2: what was never flushed is gone. Restarted on a healthy disk it recovers and catches up.
        cluster.Stop(2);
        files.SimulatePowerLoss();
        cluster.ConfigureStorage = null;
        cluster.Start(2);
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(i % 3, 0, $"after-{i}")).Status);
        }

        await cluster.WaitConvergedAsync(0, 35, TimeSpan.FromSeconds(90));
        cluster.AssertSafety(0);
        var reference = cluster.Machines[0][0].Snapshot();
        Assert.Equal(reference.Select(e => (e.Instance, Convert.ToHexString(e.Value))), cluster.Machines[2][0].Snapshot().Select(e => (e.Instance, Convert.ToHexString(e.Value))));
    }

    private static async Task WaitUntil(Func<bool> condition, string failure)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, failure);
            await Task.Delay(50);
        }
    }

    private static void FlipByte(string path, long offset)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        file.Position = offset;
        var value = file.ReadByte();
        file.Position = offset;
        file.WriteByte((byte)(value ^ 0x5A));
    }

    /// <summary>A record as it lies in a data file: <c>[int32 len][uint64 instance][body]</c>.</summary>
    private static byte[] Record(ulong instance, byte[] body)
    {
        var record = new byte[12 + body.Length];
        BinaryPrimitives.WriteInt32LittleEndian(record, 8 + body.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(record.AsSpan(4), instance);
        body.CopyTo(record, 12);
        return record;
    }

    private FileLogStorage Open(LogFileOperations files, CollectingLoggerFactory logs) =>
        new(new LogStorageOptions
        {
            RootPath = _root.Path,
            GroupCount = 2,
            DataFileSize = DataFileSize,
            Logger = logs.CreateLogger("storage"),
            FileOperations = files,
        });
}
