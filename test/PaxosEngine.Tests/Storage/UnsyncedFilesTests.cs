using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using Orleans.Paxos.Engine.Hashing;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Storage;

/// <summary>
/// Data files left by a roll-over without an fsync (<see cref="UnsyncedFiles"/>): the writer does not stall on them,
/// and whatever a power loss keeps of them, recovery leaves a log without holes in which every acknowledged
/// synchronous record is still there.
/// </summary>
public sealed class UnsyncedFilesTests : IDisposable
{
    private const int FileSize = 16384;
    private const int BodySize = 900;

    /// <summary>About 940-byte records.</summary>
    private static readonly int RecordLength = 12 + Body(0).Length;

    /// <summary>Records that fill one data file (17).</summary>
    private static readonly int PerFile = FileSize / RecordLength;

    private readonly TempDirectory _root = new();

    public void Dispose() => _root.Dispose();

    [Fact]
    public async Task A_roll_over_of_records_written_without_fsync_lists_the_file_it_leaves_instead_of_fsyncing_it()
    {
        var flushed = new ConcurrentQueue<string>();
        var files = new FaultyFileOperations { BeforeFlush = flushed.Enqueue };
        using var storage = Open(files);
        var records = (ulong)((2 * PerFile) + 2);
        await PutAll(storage, records, sync: false);

        Assert.Equal(2, ReadMeta());
        Assert.DoesNotContain(flushed, path => path == DataFile(0) || path == DataFile(1));
        Assert.Equal([(0, (long)PerFile * RecordLength), (1, (long)PerFile * RecordLength)], ReadList());

        // A synchronous record is acknowledged only once the files before it are durable too.
        await storage.PutAsync(0, records, Body(records), sync: true);
        Assert.Contains(DataFile(0), flushed);
        Assert.Contains(DataFile(1), flushed);
        Assert.Empty(ReadList());
        Assert.True(files.IsDurable(DataFile(0), Body(3)), "file 0 was not made durable before the synchronous record was acknowledged");
    }

    [Fact]
    public async Task A_roll_over_after_synchronous_records_fsyncs_as_before_and_lists_nothing()
    {
        using var storage = Open(LogFileOperations.Os);
        await PutAll(storage, (ulong)((2 * PerFile) + 2), sync: true);

        Assert.Equal(2, ReadMeta());
        Assert.Empty(ReadList());
    }

    [Fact]
    public async Task A_clean_close_fsyncs_the_listed_files_and_empties_the_list()
    {
        var files = new FaultyFileOperations();
        var storage = Open(files);
        await PutAll(storage, (ulong)((2 * PerFile) + 2), sync: false);

        Assert.Equal(2, ReadList().Count);
        storage.Dispose();

        Assert.Empty(ReadList());
        Assert.True(files.IsDurable(DataFile(0), Body(3)));
        Assert.True(files.IsDurable(DataFile(1), Body((ulong)PerFile + 3)));

        // The current file too, with the end of its fsynced data in the index: the next open scans nothing before it.
        Assert.True(files.IsDurable(DataFile(2), Body((ulong)(2 * PerFile) + 1)));
        using var index = new IndexDatabase(Path.Combine(_root.Path, "g0", IndexDatabase.FileName), LogFileOperations.Os);
        Assert.Equal(new SyncMark(2, 2L * RecordLength), index.GetSynced());
    }

    [Fact]
    public async Task A_listed_file_that_reached_the_disk_whole_keeps_every_record_after_a_crash()
    {
        var storage = Open(LogFileOperations.Os, syncOnClose: false);
        var records = (ulong)((2 * PerFile) + 2);
        await PutAll(storage, records, sync: false);

        storage.Dispose();
        Assert.Equal(2, ReadList().Count);

        using var reopened = Open(LogFileOperations.Os);
        for (ulong i = 0; i < records; i++)
        {
            Assert.Equal(Body(i), reopened.Get(0, i));
        }

        Assert.Equal(2, ReadMeta());
        Assert.Empty(ReadList());
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    public async Task A_listed_file_torn_by_a_power_loss_is_cut_there_and_every_later_file_is_dropped(int lostPage)
    {
        // Three full files. Page `lostPage` of file 1 never reached the disk while file 2 did: keeping file 2 would
        // leave a hole in the log.
        var storage = Open(LogFileOperations.Os, syncOnClose: false);
        var records = (ulong)(3 * PerFile);
        await PutAll(storage, records, sync: false);

        storage.Dispose();
        using (var file = new FileStream(DataFile(1), FileMode.Open, FileAccess.Write))
        {
            file.Position = lostPage * 4096;
            file.Write(new byte[4096]);
        }

        using var reopened = Open(LogFileOperations.Os);
        var kept = (ulong)(PerFile + (lostPage * 4096 / RecordLength));
        for (ulong i = 0; i < records; i++)
        {
            Assert.Equal(i < kept ? Body(i) : null, reopened.Get(0, i));
        }

        Assert.Equal(kept - 1, reopened.GetMaxInstanceId(0));
        Assert.Equal(1, ReadMeta());
        Assert.False(File.Exists(DataFile(2)), "the file after the torn one was kept");
        Assert.Empty(ReadList());

        // The log goes on from the cut, in the torn file.
        await reopened.PutAsync(0, kept, Body(kept), sync: true);
        Assert.Equal(Body(kept), reopened.Get(0, kept));
    }

    [Fact]
    public async Task A_crash_between_listing_a_file_and_rewriting_meta_keeps_every_record()
    {
        // Files 0 and 1 full; the roll-over to file 2 lists file 1, then the rewrite of meta fails (the storage stops).
        var files = new FaultyFileOperations();
        var storage = Open(files, syncOnClose: false);
        var records = (ulong)(2 * PerFile);
        await PutAll(storage, records, sync: false);

        files.Fail(LogFileOperation.Meta, DiskError.Io);
        await Assert.ThrowsAsync<LogStorageException>(() => storage.PutAsync(0, records, Body(records), sync: false));
        storage.Dispose();
        Assert.Equal([0, 1], ReadList().Select(e => e.FileId));
        Assert.Equal(1, ReadMeta());

        // File 1 is listed but still the current one: an entry at or past meta is not taken for a file left behind.
        using var reopened = Open(LogFileOperations.Os);
        for (ulong i = 0; i < records; i++)
        {
            Assert.Equal(Body(i), reopened.Get(0, i));
        }

        Assert.Null(reopened.Get(0, records));
        await reopened.PutAsync(0, records, Body(records), sync: true);
        Assert.Equal(Body(records), reopened.Get(0, records));
        Assert.Empty(ReadList());
    }

    [Fact]
    public async Task Damage_in_a_file_that_is_not_listed_is_reported_not_cut()
    {
        // The same loss as above in a file left after an fsync: media damage, not a torn write. Nothing is cut; reading
        // a damaged record names the file.
        var storage = Open(LogFileOperations.Os, syncOnClose: false);
        var records = (ulong)(3 * PerFile);
        await PutAll(storage, records, sync: true);

        storage.Dispose();
        using (var file = new FileStream(DataFile(1), FileMode.Open, FileAccess.Write))
        {
            file.Position = 4096;
            file.Write(new byte[4096]);
        }

        using var reopened = Open(LogFileOperations.Os);
        Assert.Equal(records - 1, reopened.GetMaxInstanceId(0));
        var damaged = (ulong)PerFile + (ulong)(4096 / RecordLength) + 1;
        var error = Assert.Throws<LogStorageException>(() => reopened.Get(0, damaged));
        Assert.Equal(DataFile(1), error.File);
        Assert.Equal(Body(records - 1), reopened.Get(0, records - 1));
        Assert.True(File.Exists(DataFile(2)));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    public async Task Power_losses_keep_every_acknowledged_synchronous_record_and_leave_no_hole(int seed)
    {
        var random = new Random(seed);
        var put = new Dictionary<ulong, byte[]>();
        ulong next = 0;
        ulong? lastSynced = null;
        for (var round = 0; round < 4; round++)
        {
            var files = new FaultyFileOperations();
            var storage = Open(files, syncOnClose: false);
            AssertPrefix(storage, put, lastSynced, $"seed {seed}, after power loss {round}");
            next = storage.GetMaxInstanceId(0) is { } max ? max + 1 : 0;
            for (var step = 0; step < 40; step++)
            {
                var sync = random.Next(8) == 0;
                var body = StorageTestData.Sized(next, random.Next(BodySize / 2, BodySize * 2), random.Next());
                await storage.PutAsync(0, next, body, sync);
                put[next] = body;
                if (sync)
                {
                    lastSynced = next;
                }

                next++;
            }

            storage.Dispose();
            files.SimulatePowerLoss(random);
        }

        using var last = Open(LogFileOperations.Os);
        AssertPrefix(last, put, lastSynced, $"seed {seed}, at the end");
    }

    [Fact]
    public async Task Listed_files_are_fsynced_once_they_are_old_enough()
    {
        var files = new FaultyFileOperations();
        using var storage = Open(files, syncAge: TimeSpan.FromHours(1));
        await PutAll(storage, (ulong)((2 * PerFile) + 2), sync: false);

        storage.SyncAgedFiles(Stopwatch.GetTimestamp());
        Assert.Equal(2, ReadList().Count);
        Assert.False(files.IsDurable(DataFile(0), Body(0)));

        storage.SyncAgedFiles(Stopwatch.GetTimestamp() + (2 * 3600 * Stopwatch.Frequency));
        Assert.Empty(ReadList());
        Assert.True(files.IsDurable(DataFile(0), Body(0)));
        Assert.True(files.IsDurable(DataFile(1), Body((ulong)PerFile)));
    }

    [Fact]
    public async Task A_full_list_fsyncs_its_oldest_file_before_it_lists_another()
    {
        var files = new FaultyFileOperations();
        using var storage = Open(files);
        var records = PerFile * (UnsyncedFiles.MaxEntries + 2);
        await PutAll(storage, (ulong)records, sync: false);

        var list = ReadList();
        Assert.Equal(UnsyncedFiles.MaxEntries, list.Count);
        Assert.Equal(UnsyncedFiles.MaxEntries, list[^1].FileId);
        Assert.True(files.IsDurable(DataFile(0), Body(0)), "the oldest file was not fsynced when the list was full");
        Assert.DoesNotContain(list, e => e.FileId == 0);
    }

    [Fact]
    public async Task Clearing_the_log_empties_the_list_so_that_new_files_are_not_taken_for_old_ones()
    {
        var storage = Open(LogFileOperations.Os, syncOnClose: false);
        await PutAll(storage, (ulong)(3 * PerFile), sync: false);

        storage.ClearAllLog(0);
        Assert.Empty(ReadList());

        // Smaller records than before: the new files 0 and 1 end elsewhere than the old ones did.
        var bodies = Enumerable.Range(0, (3 * PerFile) + 5).Select(i => StorageTestData.Sized(100 + (ulong)i, 600, i)).ToList();
        for (var i = 0; i < bodies.Count; i++)
        {
            await storage.PutAsync(0, 100 + (ulong)i, bodies[i], sync: false);
        }

        storage.Dispose();

        using var reopened = Open(LogFileOperations.Os);
        for (var i = 0; i < bodies.Count; i++)
        {
            Assert.Equal(bodies[i], reopened.Get(0, 100 + (ulong)i));
        }

        Assert.Null(reopened.Get(0, 3));
    }

    [Fact]
    public void The_list_is_read_from_its_newer_valid_slot_and_a_list_with_no_valid_slot_as_empty()
    {
        var path = Path.Combine(_root.Path, UnsyncedFiles.FileName);
        var list = new UnsyncedFiles(path, LogFileOperations.Os);
        lock (list.Gate)
        {
            list.Add(3, 100);
            list.Write();
            list.Add(4, 200);
            list.Write();
        }

        var read = new UnsyncedFiles(path, LogFileOperations.Os);
        read.Load();
        Assert.Equal([(3, 100L), (4, 200L)], read.Entries.Select(e => (e.FileId, e.End)));

        // A torn write of the newer slot (slot 0, sequence 2): the older one holds.
        using (var file = new FileStream(path, FileMode.Open, FileAccess.Write))
        {
            file.Position = 20;
            file.Write([0xFF, 0xFF]);
        }

        read.Load();
        Assert.Equal([(3, 100L)], read.Entries.Select(e => (e.FileId, e.End)));

        // Both slots bad (only a torn first write of the file, before meta moved, or damage): every file then counts as
        // fsynced, whose damage is reported rather than cut.
        using (var file = new FileStream(path, FileMode.Open, FileAccess.Write))
        {
            file.Position = 4096 + 20;
            file.Write([0xFF, 0xFF]);
        }

        read.Load();
        Assert.Empty(read.Entries);
    }

    [Fact]
    public async Task Records_of_fsynced_files_before_a_listed_one_are_indexed_again_when_their_rows_were_lost()
    {
        // File 0 synchronous, then records without fsync in files 1 and 2; the index lost its last commits (rows from
        // instance 5 on), as an index that is not fsynced may.
        var storage = Open(LogFileOperations.Os, syncOnClose: false);
        var records = (ulong)((2 * PerFile) + 3);
        for (ulong i = 0; i < records; i++)
        {
            await storage.PutAsync(0, i, Body(i), sync: i < (ulong)PerFile);
        }

        storage.Dispose();
        Assert.Single(ReadList());
        using (var index = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(_root.Path, "g0", IndexDatabase.FileName)};Pooling=False"))
        {
            index.Open();
            using var command = index.CreateCommand();
            command.CommandText = "DELETE FROM log_index WHERE instance_id >= 5";
            Assert.True(command.ExecuteNonQuery() > 0);
        }

        using var reopened = Open(LogFileOperations.Os);
        for (ulong i = 0; i < records; i++)
        {
            Assert.Equal(Body(i), reopened.Get(0, i));
        }
    }

    [Fact]
    public async Task A_listed_file_whose_directory_entry_was_lost_is_torn_at_its_start()
    {
        var storage = Open(LogFileOperations.Os, syncOnClose: false);
        var records = (ulong)(3 * PerFile);
        await PutAll(storage, records, sync: false);

        storage.Dispose();
        File.Delete(DataFile(1));

        using var reopened = Open(LogFileOperations.Os);
        Assert.Equal((ulong)PerFile - 1, reopened.GetMaxInstanceId(0));
        Assert.Null(reopened.Get(0, (ulong)(2 * PerFile)));
        Assert.Equal(1, ReadMeta());
        Assert.False(File.Exists(DataFile(2)), "the file after the lost one was kept");
        await reopened.PutAsync(0, (ulong)PerFile, Body((ulong)PerFile), sync: true);
        Assert.Equal(Body((ulong)PerFile), reopened.Get(0, (ulong)PerFile));
    }

    /// <summary>Puts instances 0 to <paramref name="count"/> - 1 of group 0, each with its <see cref="Body"/>.</summary>
    private static async Task PutAll(FileLogStorage storage, ulong count, bool sync)
    {
        for (ulong i = 0; i < count; i++)
        {
            await storage.PutAsync(0, i, Body(i), sync);
        }
    }

    private static byte[] Body(ulong instance) => StorageTestData.Sized(instance, BodySize, (int)instance);

    /// <summary>
    /// The log is 0..max with no hole and the bytes that were put, and it reaches at least the last acknowledged
    /// synchronous record.
    /// </summary>
    private static void AssertPrefix(FileLogStorage storage, Dictionary<ulong, byte[]> put, ulong? lastSynced, string when)
    {
        var max = storage.GetMaxInstanceId(0);
        if (lastSynced is { } synced)
        {
            Assert.True(max >= synced, $"{when}: the log ends at {max?.ToString() ?? "nothing"}, before acknowledged synchronous instance {synced}");
        }

        if (max is not { } end)
        {
            return;
        }

        for (ulong i = 0; i <= end; i++)
        {
            var read = storage.Get(0, i);
            Assert.True(read is not null, $"{when}: instance {i} is missing below the log's end {end}");
            Assert.True(read.AsSpan().SequenceEqual(put[i]), $"{when}: instance {i} holds other bytes");
        }
    }

    private FileLogStorage Open(LogFileOperations files, bool syncOnClose = true, TimeSpan? syncAge = null) =>
        new(new LogStorageOptions
        {
            RootPath = _root.Path,
            GroupCount = 1,
            DataFileSize = FileSize,
            FileOperations = files,
            SyncUnsyncedFilesOnClose = syncOnClose,
            UnsyncedFileSyncAge = syncAge ?? TimeSpan.FromHours(1),
        });

    private string DataFile(int fileId) => Path.Combine(_root.Path, "g0", "vfile", $"{fileId}.f");

    private int ReadMeta()
    {
        var bytes = File.ReadAllBytes(Path.Combine(_root.Path, "g0", "vfile", "meta"));
        var fileId = BinaryPrimitives.ReadInt32LittleEndian(bytes);
        Assert.Equal(SkipCrc32.Compute(0, bytes.AsSpan(0, 4), SkipCrc32.MetaSkip), BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(4)));
        return fileId;
    }

    private List<(int FileId, long End)> ReadList()
    {
        var list = new UnsyncedFiles(Path.Combine(_root.Path, "g0", "vfile", UnsyncedFiles.FileName), LogFileOperations.Os);
        list.Load();
        return [.. list.Entries.Select(e => (e.FileId, e.End))];
    }
}
