using Microsoft.Win32.SafeHandles;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Storage;

/// <summary>
/// One flush of the disk for the records of several groups (<see cref="LogStorageOptions.FlushFilesTogether"/>): which
/// file operations a batch makes, in which order, and that what was acknowledged survives a power loss.
/// </summary>
public sealed class FlushTogetherTests : IDisposable
{
    private readonly TempDirectory _root = new();
    private readonly List<FileLogStorage> _opened = [];

    public void Dispose()
    {
        foreach (var storage in _opened)
        {
            storage.Dispose();
        }

        _root.Dispose();
    }

    [Fact]
    public void Groups_first_write_zeros_ahead_with_their_own_fsync_then_share_one_flush()
    {
        Assert.True(DataSync.SupportsWriteBack, "The storage flushes groups' files together on 64-bit Linux, where these tests run.");
        var files = new RecordingFileOperations();
        var storage = Open(files, groupCount: 4);

        // A first batch of groups 1-3: nothing is known to be allocated yet, so each writes zeros ahead of its
        // record, starts its write-back and fsyncs its own file.
        var first = WriteOneBatch(storage, files, instance: 0, groups: [1, 2, 3]);
        Assert.Equal([1, 2, 3], first.Where(e => e.Kind == "writeback").Select(e => e.Group).Order());
        Assert.DoesNotContain(first, e => e.Kind == "writeback" && e.Wait);
        Assert.Equal([1, 2, 3], first.Where(e => e.Kind == "flush").Select(e => e.Group).Order());
        var recordLength = 12 + StorageTestData.Promise(0).Length;
        foreach (var group in new[] { 1, 2, 3 })
        {
            // From the end of the record to a page boundary at least 1 MiB further.
            var zeros = Assert.Single(first, e => e.Kind == "write" && e.Group == group && e.Length > 1000);
            Assert.Equal(recordLength, zeros.Offset);
            Assert.Equal(0, (zeros.Offset + zeros.Length) % 4096);
            Assert.InRange(zeros.Length, FileLogStorage.ZeroAheadBytes, FileLogStorage.ZeroAheadBytes + 4096);
        }

        // The next batch of the same groups overwrites allocated blocks in place: every write-back started, then
        // waited for, then one fdatasync flushes the disk for all three.
        var second = WriteOneBatch(storage, files, instance: 1, groups: [1, 2, 3]);
        var kinds = second.Where(e => e.Kind is "writeback" or "flush").ToList();
        Assert.Equal(7, kinds.Count);
        Assert.All(kinds.Take(3), e => Assert.Equal(("writeback", false), (e.Kind, e.Wait)));
        Assert.All(kinds.Skip(3).Take(3), e => Assert.Equal(("writeback", true), (e.Kind, e.Wait)));
        Assert.Equal([1, 2, 3], kinds.Take(3).Select(e => e.Group).Order());
        Assert.Equal([1, 2, 3], kinds.Skip(3).Take(3).Select(e => e.Group).Order());
        Assert.Equal("flush", kinds[6].Kind);
        Assert.DoesNotContain(second, e => e.Kind == "write" && e.Length > 1000);

        for (var group = 1; group <= 3; group++)
        {
            Assert.Equal(StorageTestData.Promise(1), storage.Get(group, 1));
        }
    }

    [Fact]
    public void A_group_whose_records_pass_the_zeros_fsyncs_itself_and_that_flush_covers_the_others()
    {
        Assert.True(DataSync.SupportsWriteBack, "The storage flushes groups' files together on 64-bit Linux, where these tests run.");
        var files = new RecordingFileOperations();
        var storage = Open(files, groupCount: 4);
        WriteOneBatch(storage, files, instance: 0, groups: [1, 2]);

        // Group 1's records (each below SparseSyncBytes) reach past the zeros written ahead of them: its blocks are
        // new, so it writes zeros ahead again and fsyncs its file (metadata and all); group 2 is written back, and
        // group 1's fsync, which comes after that write-back completed, flushes the disk for both.
        const int size = FileLogStorage.SparseSyncBytes - 4096;
        var passed = false;
        for (ulong instance = 1; !passed; instance++)
        {
            Assert.True(instance < 64, "group 1's records never passed its zeros");
            var batch = WriteOneBatch(storage, files, instance, groups: [1, 2], valueSize: group => group == 1 ? size : 0);
            passed = batch.Any(e => e.Kind == "flush" && e.Group == 1);
            var kinds = batch.Where(e => e.Kind is "writeback" or "flush").Select(e => (e.Kind, e.Group, e.Wait)).ToList();
            Assert.Equal(
                passed
                    ? [("writeback", 1, false), ("writeback", 2, false), ("writeback", 2, true), ("flush", 1, false)]
                    : [("writeback", 1, false), ("writeback", 2, false), ("writeback", 1, true), ("writeback", 2, true), ("flush", 2, false)],
                kinds);
            Assert.Equal(passed, batch.Any(e => e.Kind == "write" && e.Group == 1 && e.Length >= FileLogStorage.ZeroAheadBytes));
        }
    }

    [Fact]
    public void Large_records_go_without_zeros_and_their_groups_fsync_at_the_same_time()
    {
        Assert.True(DataSync.SupportsWriteBack, "The storage flushes groups' files together on 64-bit Linux, where these tests run.");
        var faulty = new FaultyFileOperations();
        var files = new RecordingFileOperations(faulty);
        var storage = Open(files, groupCount: 4);
        WriteOneBatch(storage, files, instance: 0, groups: [1, 2, 3]);

        // Records of SparseSyncBytes or more past the zeros: no zeros ahead of them (they would double what the disk
        // writes); each group fsyncs its own file, the three at once (each fsync here waits until all three have
        // started, so one after the other would never get there).
        const int size = FileLogStorage.ZeroAheadBytes + 8192;
        files.FlushTogether = 3;
        var batch = WriteOneBatch(storage, files, instance: 1, groups: [1, 2, 3], valueSize: _ => size);
        files.FlushTogether = 0;
        Assert.Equal(3, files.MostFlushesAtOnce);
        Assert.Equal([1, 2, 3], batch.Where(e => e.Kind == "flush").Select(e => e.Group).Order());
        Assert.DoesNotContain(batch, e => e.Kind == "writeback" && e.Wait);
        foreach (var group in new[] { 1, 2, 3 })
        {
            Assert.Single(batch, e => e.Kind == "write" && e.Group == group);
        }

        // A small record after them: the blocks past the large records are new, so zeros ahead again.
        var next = WriteOneBatch(storage, files, instance: 2, groups: [1, 2, 3]);
        Assert.Equal([1, 2, 3], next.Where(e => e.Kind == "flush").Select(e => e.Group).Order());
        Assert.Equal(3, next.Count(e => e.Kind == "write" && e.Length >= FileLogStorage.ZeroAheadBytes));

        // Acknowledged is durable: a power loss now takes nothing.
        storage.Dispose();
        Assert.Equal(0, faulty.SimulatePowerLoss());
        var reopened = Open(LogFileOperations.Os, groupCount: 4);
        for (var group = 1; group <= 3; group++)
        {
            Assert.Equal(StorageTestData.Sized(1, size, group), reopened.Get(group, 1));
            Assert.Equal(StorageTestData.Promise(2), reopened.Get(group, 2));
        }
    }

    [Fact]
    public void Turned_off_every_group_fsyncs_its_own_file()
    {
        var files = new RecordingFileOperations();
        var storage = Open(files, groupCount: 4, flushTogether: false);
        WriteOneBatch(storage, files, instance: 0, groups: [1, 2, 3]);
        var second = WriteOneBatch(storage, files, instance: 1, groups: [1, 2, 3]);
        Assert.DoesNotContain(second, e => e.Kind == "writeback");
        Assert.Equal([1, 2, 3], second.Where(e => e.Kind == "flush").Select(e => e.Group).Order());
    }

    [Fact]
    public void Records_acknowledged_after_a_shared_flush_survive_a_power_loss_and_the_files_stay_phxpaxos()
    {
        Assert.True(DataSync.SupportsWriteBack, "The storage flushes groups' files together on 64-bit Linux, where these tests run.");
        var faulty = new FaultyFileOperations();
        var files = new RecordingFileOperations(faulty);
        var storage = Open(files, groupCount: 4);
        for (ulong instance = 0; instance < 4; instance++)
        {
            WriteOneBatch(storage, files, instance, groups: [1, 2, 3]);
        }

        Assert.Contains(files.Events, e => e.Kind == "writeback");

        // Every acknowledged record was flushed after its write-back (the double counts a write-back without a flush
        // as lost): a power loss now takes nothing.
        storage.Dispose();
        Assert.Equal(0, faulty.SimulatePowerLoss());

        var reopened = Open(LogFileOperations.Os, groupCount: 4);
        for (var group = 1; group <= 3; group++)
        {
            Assert.Equal(3ul, reopened.GetMaxInstanceId(group));
            for (ulong instance = 0; instance < 4; instance++)
            {
                Assert.Equal(StorageTestData.Promise(instance), reopened.Get(group, instance));
            }
        }

        // Zeros written ahead are what the sparse file read as: the file holds the records, then zeros.
        var bytes = File.ReadAllBytes(Path.Combine(_root.Path, "g1", "vfile", "0.f"));
        var recordsEnd = 4 * (12 + StorageTestData.Promise(0).Length);
        Assert.True(bytes.AsSpan(recordsEnd).IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public void A_write_back_that_no_flush_followed_is_lost_with_the_power()
    {
        Assert.True(DataSync.SupportsWriteBack, "The storage flushes groups' files together on 64-bit Linux, where these tests run.");
        var faulty = new FaultyFileOperations();
        var path = Path.Combine(_root.Path, "loose.f");
        using (var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite))
        {
            faulty.Preallocate(handle, path, 8192);
            faulty.Write(handle, path, [1, 2, 3], 0);
            faulty.WriteBack(handle, path, 0, 3, wait: false);
            faulty.WriteBack(handle, path, 0, 3, wait: true);
        }

        Assert.Equal(3, faulty.SimulatePowerLoss());
        Assert.Equal(new byte[3], File.ReadAllBytes(path).AsSpan(0, 3).ToArray());
    }

    [Fact]
    public void A_write_back_past_what_its_own_flushes_made_durable_is_not_made_durable_by_another_files_flush()
    {
        // The double's model of the disk: a flush of another file makes a write-back durable only where it
        // overwrote blocks the file's own flushes made durable (so a storage that skipped the zeros would lose it).
        var faulty = new FaultyFileOperations();
        var inPlace = Path.Combine(_root.Path, "in-place.f");
        var other = Path.Combine(_root.Path, "other.f");
        using (var a = File.OpenHandle(inPlace, FileMode.CreateNew, FileAccess.ReadWrite))
        using (var b = File.OpenHandle(other, FileMode.CreateNew, FileAccess.ReadWrite))
        {
            faulty.Preallocate(a, inPlace, 8192);
            faulty.Preallocate(b, other, 8192);
            faulty.WriteZeros(a, inPlace, new byte[100], 0);
            faulty.Flush(a, inPlace, dataOnly: true);

            faulty.Write(a, inPlace, [1, 2, 3], 10);
            faulty.Write(a, inPlace, [4, 5, 6], 200);
            faulty.WriteBack(a, inPlace, 0, 300, wait: true);
            faulty.Write(b, other, [7], 0);
            faulty.Flush(b, other, dataOnly: true);
        }

        Assert.Equal(3, faulty.SimulatePowerLoss());
        var bytes = File.ReadAllBytes(inPlace);
        Assert.Equal(new byte[] { 1, 2, 3 }, bytes[10..13]);
        Assert.Equal(new byte[3], bytes[200..203]);
    }

    [Fact]
    public void The_stat_of_a_file_system_that_is_not_ext4_or_xfs_flushes_its_files_one_by_one()
    {
        Assert.True(Directory.Exists("/dev/shm"), "a tmpfs at /dev/shm");
        var path = Path.Combine("/dev/shm", "paxos-flush-together-" + Guid.NewGuid().ToString("N") + ".f");
        try
        {
            using var onTmpfs = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite);
            Assert.Null(DataSync.InPlaceFlushDevice(onTmpfs));
        }
        finally
        {
            File.Delete(path);
        }

        using var onDisk = File.OpenHandle(Path.Combine(_root.Path, "on-disk.f"), FileMode.CreateNew, FileAccess.ReadWrite);
        Assert.NotNull(DataSync.InPlaceFlushDevice(onDisk));
    }

    [Fact]
    public async Task Records_that_reached_the_disk_after_a_gap_are_cut_at_open()
    {
        // Pages written after the last fsync reach the disk in any order: a power loss can keep a later page and
        // lose an earlier one. What lies past the gap was never acknowledged; it is zeroed at open, or later
        // records could end just before it and a later open would read it as theirs.
        var storage = Open(LogFileOperations.Os, groupCount: 1);
        for (ulong instance = 0; instance < 3; instance++)
        {
            await storage.PutAsync(0, instance, StorageTestData.Promise(instance), sync: true);
        }

        storage.Dispose();
        var path = Path.Combine(_root.Path, "g0", "vfile", "0.f");
        var recordLength = 12 + StorageTestData.Promise(0).Length;
        var stale = File.ReadAllBytes(path)[..recordLength];
        BitConverter.TryWriteBytes(stale.AsSpan(4), 5ul);
        using (var file = new FileStream(path, FileMode.Open, FileAccess.Write))
        {
            file.Position = (3 * recordLength) + 4096;
            file.Write(stale);
        }

        var reopened = Open(LogFileOperations.Os, groupCount: 1);
        Assert.Equal(2ul, reopened.GetMaxInstanceId(0));
        Assert.Null(reopened.Get(0, 5));
        Assert.True(reopened.WasTailCutAtOpen(0));
        Assert.True(File.ReadAllBytes(path).AsSpan(3 * recordLength).IndexOfAnyExcept((byte)0) < 0);
    }

    /// <summary>Puts one record to each of <paramref name="groups"/> and returns the file operations of the batch that wrote them together.</summary>
    private static List<FileEvent> WriteOneBatch(FileLogStorage storage, RecordingFileOperations files, ulong instance, int[] groups, Func<int, int>? valueSize = null)
    {
        // Group 0's record makes the writer thread busy (its flush waits for the gate) while the others queue behind
        // it, so that they are written as one batch.
        using var gate = new ManualResetEventSlim();
        files.Gate = gate;
        var blocker = new Completion();
        storage.Put(0, instance, StorageTestData.Promise(instance), sync: true, blocker);
        Assert.True(SpinWait.SpinUntil(() => files.Waiting, TimeSpan.FromSeconds(30)));
        var completions = groups.Select(_ => new Completion()).ToArray();
        for (var i = 0; i < groups.Length; i++)
        {
            var size = valueSize?.Invoke(groups[i]) ?? 0;
            storage.Put(groups[i], instance, size == 0 ? StorageTestData.Promise(instance) : StorageTestData.Sized(instance, size, groups[i]), sync: true, completions[i]);
        }

        var start = files.Events.Count;
        files.Gate = null;
        gate.Set();
        Assert.True(blocker.Done.Wait(TimeSpan.FromSeconds(30)));
        foreach (var completion in completions)
        {
            Assert.True(completion.Done.Wait(TimeSpan.FromSeconds(30)));
            Assert.Null(completion.Error);
        }

        // The blocker's own flush ends its batch; the next batch is the groups' one.
        return [.. files.Events.Skip(start).SkipWhile(e => !(e.Kind == "flush" && e.Group == 0)).Skip(1).Where(e => e.Group != 0)];
    }

    private FileLogStorage Open(LogFileOperations files, int groupCount, bool flushTogether = true)
    {
        var storage = new FileLogStorage(new LogStorageOptions
        {
            RootPath = _root.Path,
            GroupCount = groupCount,
            FlushFilesTogether = flushTogether,
            WriterThreads = 1,
            FileOperations = files,
        });
        _opened.Add(storage);
        return storage;
    }

    private sealed record FileEvent(string Kind, int Group, long Offset, long Length, bool Wait);

    private sealed class Completion : IPutCallback
    {
        public ManualResetEventSlim Done { get; } = new();

        public Exception? Error { get; private set; }

        public bool AllowsCallerWrite => false;

        public void OnPutCompleted(Exception? error)
        {
            Error = error;
            Done.Set();
        }
    }

    /// <summary>Records the data-file operations (group, kind, range) and can hold a flush of group 0 at a gate.</summary>
    private sealed class RecordingFileOperations(LogFileOperations? inner = null) : LogFileOperations
    {
        private readonly LogFileOperations _inner = inner ?? Os;
        private readonly Lock _gate = new();
        private readonly List<FileEvent> _events = [];
        private volatile bool _waiting;
        private int _atOnce;
        private int _mostAtOnce;
        private int _started;

        public ManualResetEventSlim? Gate { get; set; }

        public bool Waiting => _waiting;

        public List<FileEvent> Events
        {
            get
            {
                lock (_gate)
                {
                    return [.. _events];
                }
            }
        }

        public override void Write(SafeFileHandle handle, string path, ReadOnlySpan<byte> data, long offset)
        {
            _inner.Write(handle, path, data, offset);
            Record("write", path, offset, data.Length, wait: false);
        }

        /// <summary>When above 1, a flush of a group's file other than group 0's waits until this many have started.</summary>
        public int FlushTogether { get; set; }

        /// <summary>The most flushes of groups' files that were in progress at once.</summary>
        public int MostFlushesAtOnce => _mostAtOnce;

        public override void Flush(SafeFileHandle handle, string path, bool dataOnly)
        {
            if (Gate is { } gate && GroupOf(path) == 0)
            {
                _waiting = true;
                gate.Wait();
                _waiting = false;
            }

            if (FlushTogether > 1 && GroupOf(path) > 0)
            {
                var atOnce = Interlocked.Increment(ref _atOnce);
                InterlockedMax(ref _mostAtOnce, atOnce);
                Interlocked.Increment(ref _started);
                SpinWait.SpinUntil(() => Volatile.Read(ref _started) >= FlushTogether, TimeSpan.FromSeconds(10));
                _inner.Flush(handle, path, dataOnly);
                Interlocked.Decrement(ref _atOnce);
                Record("flush", path, 0, 0, wait: false);
                return;
            }

            _inner.Flush(handle, path, dataOnly);
            Record("flush", path, 0, 0, wait: false);
        }

        public override void WriteBack(SafeFileHandle handle, string path, long offset, long length, bool wait)
        {
            _inner.WriteBack(handle, path, offset, length, wait);
            Record("writeback", path, offset, length, wait);
        }

        public override void Preallocate(SafeFileHandle handle, string path, long size) => _inner.Preallocate(handle, path, size);

        private static void InterlockedMax(ref int target, int value)
        {
            int seen;
            while (value > (seen = Volatile.Read(ref target)) && Interlocked.CompareExchange(ref target, value, seen) != seen)
            {
            }
        }

        private static int GroupOf(string path)
        {
            var dir = Path.GetFileName(Path.GetDirectoryName(Path.GetDirectoryName(path)));
            return dir is { Length: > 1 } && dir[0] == 'g' && int.TryParse(dir.AsSpan(1), out var group) ? group : -1;
        }

        private void Record(string kind, string path, long offset, long length, bool wait)
        {
            if (!path.EndsWith(".f", StringComparison.Ordinal))
            {
                return;
            }

            lock (_gate)
            {
                _events.Add(new FileEvent(kind, GroupOf(path), offset, length, wait));
            }
        }
    }
}
