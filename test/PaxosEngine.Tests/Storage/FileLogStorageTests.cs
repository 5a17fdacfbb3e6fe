using System.Buffers.Binary;
using System.Text.RegularExpressions;
using Microsoft.Data.Sqlite;
using Orleans.Paxos.Engine.Hashing;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Storage;

/// <summary>Runs the conformance suite against <see cref="FileLogStorage"/> on a real disk.</summary>
public sealed class FileLogStorageConformanceTests : LogStorageConformanceTests
{
    private readonly TempDirectory _root = new();

    public override void Dispose()
    {
        base.Dispose();
        _root.Dispose();
    }

    protected override ILogStorage CreateStorage(int groupCount) =>
        new FileLogStorage(new LogStorageOptions { RootPath = _root.Path, GroupCount = groupCount, DataFileSize = 64 * 1024 });
}

/// <summary>On-disk format, recovery and damage handling of <see cref="FileLogStorage"/>.</summary>
public sealed class FileLogStorageTests : IDisposable
{
    /// <summary><c>xxd -l 160 vfile/0.f</c> of phxecho node 11111 (phxpaxos-observed.md).</summary>
    private const string ObservedDataFile = """
        00000000: 1e00 0000 0000 0000 0000 0000 0800 1001  ................
        00000010: 18e7 d680 80f0 8f80 8001 2000 2800 3200  .......... .(.2.
        00000020: 3800 3900 0000 0000 0000 0000 0000 0800  8.9.............
        00000030: 1001 18e7 d680 80f0 8f80 8001 2001 28e7  ............ .(.
        00000040: d680 80f0 8f80 8001 320f 0100 0000 6865  ........2.....he
        00000050: 6c6c 6f2d 7068 782d 3138 f7be bdae 0839  llo-phx-18.....9
        00000060: 0000 0001 0000 0000 0000 0008 0110 0118  ................
        00000070: e7d6 8080 f08f 8080 0120 0128 e7d6 8080  ......... .(....
        00000080: f08f 8080 0132 0f01 0000 0068 656c 6c6f  .....2.....hello
        00000090: 2d70 6878 2d32 38ec f395 f301 3900 0000  -phx-28.....9...
        """;

    private static readonly Regex LogLine = new(@"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}:\d{3} (?<message>.*)$", RegexOptions.Compiled);

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
    public void IndexCrcMatchesPhxPaxosVector()
    {
        // Record at offset 0 of the observed 0.f: instance 0, PhxPaxos indexed it with crc 0x2161be15.
        var record = Convert.FromHexString("0000000000000000" + "0800100118e7d68080f08f808001200028003200" + "3800");
        Assert.Equal(0x2161be15u, SkipCrc32.Compute(0, record, SkipCrc32.ValueSkip));
    }

    [Fact]
    public async Task Readers_racing_rented_puts_and_index_flushes_read_exactly_the_bytes_that_were_put()
    {
        // Rented records go back to the pool once their index rows are written. With an index flush after every
        // put, written on the putting thread, the next put rents the very array the last flush gave back: a reader
        // still copying a record from it would see the next record's bytes.
        var storage = new FileLogStorage(new LogStorageOptions
        {
            RootPath = _root.Path,
            GroupCount = 1,
            IndexFlushInterval = TimeSpan.FromTicks(1),
        });
        _opened.Add(storage);
        const int Instances = 1500;
        var random = new Random(4242);
        var promises = new byte[Instances][];
        var accepts = new byte[Instances][];
        for (var i = 0; i < Instances; i++)
        {
            // One pool bucket (4 KiB) for every record.
            promises[i] = StorageTestData.Sized((ulong)i, random.Next(2200, 4000), random.Next());
            accepts[i] = StorageTestData.Sized((ulong)i, random.Next(2200, 4000), random.Next());
        }

        var writing = -1; // the instance being put; those below it are complete
        var finished = false;
        var reads = 0;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var readers = Enumerable.Range(0, 2).Select(r => new Thread(() =>
        {
            var pick = new Random(r);
            while ((!Volatile.Read(ref finished) || Volatile.Read(ref reads) < 4000) && failures.IsEmpty)
            {
                var current = Volatile.Read(ref writing);
                if (current < 0)
                {
                    continue;
                }

                // Half the reads go to the instance being written, whose records are not indexed yet.
                var instance = pick.Next(2) == 0 || current == 0 ? current : pick.Next(current);
                var read = storage.Get(0, (ulong)instance);
                var valid = instance < current
                    ? read is not null && read.AsSpan().SequenceEqual(accepts[instance])
                    : read is null || read.AsSpan().SequenceEqual(promises[instance]) || read.AsSpan().SequenceEqual(accepts[instance]);
                if (!valid)
                {
                    failures.Enqueue($"instance {instance} (writing {current}): read {read?.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "nothing"} bytes that are neither of its records");
                    return;
                }

                Interlocked.Increment(ref reads);
            }
        })).ToArray();
        foreach (var reader in readers)
        {
            reader.Start();
        }

        for (var i = 0; i < Instances && failures.IsEmpty; i++)
        {
            Volatile.Write(ref writing, i);
            foreach (var record in new[] { promises[i], accepts[i] })
            {
                var rented = RecordPool.Rent(record.Length);
                record.CopyTo(rented, 0);
                var done = new CompletedPut();
                storage.PutRented(0, (ulong)i, rented, record.Length, sync: false, done);
                await done.Done;
            }
        }

        Volatile.Write(ref writing, Instances);
        Volatile.Write(ref finished, true);
        foreach (var reader in readers)
        {
            reader.Join();
        }

        Assert.Empty(failures);
        storage.Dispose();
        var reopened = Open(groupCount: 1);
        for (var i = 0; i < Instances; i += 97)
        {
            Assert.Equal(accepts[i], reopened.Get(0, (ulong)i));
        }
    }

    [Fact]
    public async Task A_rented_put_of_an_array_the_pool_never_handed_out_is_kept_and_the_writer_goes_on()
    {
        var storage = new FileLogStorage(new LogStorageOptions { RootPath = _root.Path, GroupCount = 1, IndexFlushInterval = TimeSpan.FromTicks(1) });
        _opened.Add(storage);
        var odd = StorageTestData.Sized(0, 87, 1); // not one of the pool's sizes: giving it back is refused
        var done = new CompletedPut();
        storage.PutRented(0, 0, odd, odd.Length, sync: true, done);
        await done.Done;
        for (ulong i = 1; i < 5; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, 300, (int)i), sync: true);
        }

        await Polling.WaitUntilAsync(() => ReadIndexRowsWhileOpen(0).Count == 5, TimeSpan.FromSeconds(30), "every index row to be written");
        Assert.Equal(StorageTestData.Sized(0, 87, 1), storage.Get(0, 0));
        Assert.Equal(StorageTestData.Sized(4, 300, 4), storage.Get(0, 4));
    }

    [Fact]
    public async Task DataFileIsByteIdenticalToPhxPaxos()
    {
        var storage = Open();
        await storage.PutAsync(0, 0, StorageTestData.Promise(0), sync: true);
        await storage.PutAsync(0, 0, StorageTestData.EchoAccept(0, "hello-phx-1", 2244960119), sync: true);
        await storage.PutAsync(0, 1, StorageTestData.EchoAccept(1, "hello-phx-2", 509966828), sync: true);
        await storage.PutAsync(0, 2, StorageTestData.EchoAccept(2, "hello-phx-3", 1591555178), sync: true);
        storage.Dispose();

        var dataFile = Path.Combine(_root.Path, "g0", "vfile", "0.f");
        Assert.Equal(LogStorageOptions.DefaultDataFileSize, new FileInfo(dataFile).Length);
        var expected = StorageTestData.FromXxd(ObservedDataFile);
        var actual = File.ReadAllBytes(dataFile);
        Assert.Equal(Convert.ToHexString(expected), Convert.ToHexString(actual, 0, expected.Length));
        Assert.Equal(0, actual[217]); // after the fourth record (156 + 61): zeros, the end of data.

        // meta stays empty until the first rollover, as in PhxPaxos.
        Assert.Equal(0, new FileInfo(Path.Combine(_root.Path, "g0", "vfile", "meta")).Length);

        // The index rows and their crcs are PhxPaxos's (LevelDB WAL of phxecho).
        Assert.Equal(
            [(0L, 0L, 34L, 0xfb6cb67cL), (1L, 0L, 95L, 0x4e1a0e46L), (2L, 0L, 156L, 0xc7f8cdbcL)],
            ReadIndexRows(0));

        var log = ReadLog(0);
        Assert.Equal($"init write fileid 0 now_w_offset 0 filesize {LogStorageOptions.DefaultDataFileSize}", Assert.Single(log));
    }

    [Fact]
    public async Task RolloverWritesMetaAndReadsAcrossFiles()
    {
        var storage = Open(dataFileSize: 4096);
        for (ulong i = 0; i < 24; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, 900, (int)i), sync: i % 2 == 0);
        }

        // About 940-byte records, four to a 4096-byte file: instance 23 lands in file 5.
        var meta = File.ReadAllBytes(Path.Combine(_root.Path, "g0", "vfile", "meta"));
        Assert.Equal("050000002E2F9A16", Convert.ToHexString(meta));
        Assert.Equal([0, 1, 2, 3, 4, 5], DataFileIds(0));
        Assert.All(DataFileIds(0), id => Assert.Equal(4096, new FileInfo(DataFile(0, id)).Length));
        Assert.Contains("new file expand ok, fileid 5 filesize 4096", ReadLog(0));

        storage.Dispose();
        storage = Open(dataFileSize: 4096);
        var recordLength = 12 + StorageTestData.Sized(0, 900, 0).Length;
        Assert.Equal($"init write fileid 5 now_w_offset {4 * recordLength} filesize 4096", ReadLog(0)[^1]);
        for (ulong i = 0; i < 24; i++)
        {
            Assert.Equal(StorageTestData.Sized(i, 900, (int)i), storage.Get(0, i));
        }

        await storage.PutAsync(0, 24, StorageTestData.Sized(24, 900, 24), sync: true);
        Assert.Equal(StorageTestData.Sized(24, 900, 24), storage.Get(0, 24));
        Assert.Equal([0, 1, 2, 3, 4, 5, 6], DataFileIds(0));
    }

    [Fact]
    public async Task DeleteBeforeFreesWholeFilesButNeverTheCurrentOne()
    {
        var storage = Open(dataFileSize: 4096);
        for (ulong i = 0; i < 24; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, 900, (int)i), sync: false);
        }

        storage.DeleteBefore(0, 9); // instance 9 is the second record of file 2
        Assert.Equal([2, 3, 4, 5], DataFileIds(0));
        Assert.Contains("delete fileid 0", ReadLog(0));
        Assert.Contains("delete fileid 1", ReadLog(0));
        Assert.Null(storage.Get(0, 8));
        Assert.NotNull(storage.Get(0, 9));

        storage.DeleteBefore(0, 1000);
        Assert.Equal([5], DataFileIds(0));
        Assert.Null(storage.GetMaxInstanceId(0));

        await storage.PutAsync(0, 1000, StorageTestData.Promise(1000), sync: true);
        storage.Dispose();
        storage = Open(dataFileSize: 4096);
        Assert.Null(storage.Get(0, 23));
        Assert.Equal(1000UL, storage.GetMaxInstanceId(0));
        Assert.Equal(StorageTestData.Promise(1000), storage.Get(0, 1000));
    }

    [Fact]
    public async Task ReopenWithoutIndexRebuildsItFromDataFiles()
    {
        var storage = Open(dataFileSize: 4096);
        await storage.PutAsync(0, 0, StorageTestData.Promise(0), sync: true);
        for (ulong i = 0; i < 12; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, 700, (int)i), sync: true);
        }

        storage.Dispose();
        DeleteIndex(0);

        storage = Open(dataFileSize: 4096);
        for (ulong i = 0; i < 12; i++)
        {
            Assert.Equal(StorageTestData.Sized(i, 700, (int)i), storage.Get(0, i));
        }

        Assert.Equal(11UL, storage.GetMaxInstanceId(0));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public async Task Slack_shorter_than_a_length_field_at_the_end_of_a_file_is_not_damage(int slack)
    {
        // Four records that leave exactly `slack` unused bytes in the first 4096-byte file; the fifth does not fit.
        var storage = Open(dataFileSize: 4096);
        var bodies = new List<byte[]>();
        for (ulong i = 0; i < 3; i++)
        {
            bodies.Add(StorageTestData.Sized(i, 1000, (int)i));
        }

        var room = 4096 - slack - bodies.Sum(b => 12 + b.Length) - 12;
        var size = room;
        while (StorageTestData.Sized(3, size, 3).Length > room)
        {
            size--;
        }

        bodies.Add(StorageTestData.Sized(3, size, 3));
        Assert.Equal(room, bodies[3].Length);
        bodies.Add(StorageTestData.Sized(4, 1000, 4));
        for (var i = 0; i < bodies.Count; i++)
        {
            await storage.PutAsync(0, (ulong)i, bodies[i], sync: true);
        }

        Assert.Equal([0, 1], DataFileIds(0));
        storage.Dispose();

        // Rebuilt from the data files, and recovered normally: both read the unused bytes as the end of file 0.
        foreach (var deleteIndex in new[] { true, false })
        {
            if (deleteIndex)
            {
                DeleteIndex(0);
            }

            storage = Open(dataFileSize: 4096);
            for (var i = 0; i < bodies.Count; i++)
            {
                Assert.Equal(bodies[i], storage.Get(0, (ulong)i));
            }

            storage.Dispose();
        }
    }

    [Fact]
    public async Task Bytes_after_zeros_in_a_file_that_is_not_the_last_are_reported_as_damage()
    {
        var storage = Open(dataFileSize: 4096);
        for (ulong i = 0; i < 6; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, 900, (int)i), sync: true);
        }

        storage.Dispose();
        DeleteIndex(0);

        // Zero the length field of file 0's second record: the records after it cannot be located.
        var recordLength = 12 + StorageTestData.Sized(0, 900, 0).Length;
        using (var file = File.OpenHandle(DataFile(0, 0), FileMode.Open, FileAccess.ReadWrite))
        {
            RandomAccess.Write(file, new byte[4], recordLength);
        }

        var error = Assert.Throws<LogStorageException>(() => Open(dataFileSize: 4096));
        Assert.Equal(DataFile(0, 0), error.File);
        Assert.Equal(recordLength, error.Offset);
        Assert.Contains("not the last data file", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void OpensAPhxPaxosFolderWithoutIndex()
    {
        // Build g0/vfile exactly as phxecho left it: a preallocated 0.f with the observed records, empty meta.
        var vfile = Path.Combine(_root.Path, "g0", "vfile");
        Directory.CreateDirectory(vfile);
        var records = StorageTestData.FromXxd(ObservedDataFile);
        var fourth = StorageTestData.EchoAccept(2, "hello-phx-3", 1591555178);
        using (var file = File.Create(Path.Combine(vfile, "0.f")))
        {
            file.Write(records, 0, 156);
            Span<byte> header = stackalloc byte[12];
            BinaryPrimitives.WriteInt32LittleEndian(header, 8 + fourth.Length);
            BinaryPrimitives.WriteUInt64LittleEndian(header[4..], 2);
            file.Write(header);
            file.Write(fourth);
            file.SetLength(LogStorageOptions.DefaultDataFileSize);
        }

        File.WriteAllBytes(Path.Combine(vfile, "meta"), []);

        var storage = Open();
        Assert.Equal(StorageTestData.EchoAccept(0, "hello-phx-1", 2244960119), storage.Get(0, 0));
        Assert.Equal(StorageTestData.EchoAccept(1, "hello-phx-2", 509966828), storage.Get(0, 1));
        Assert.Equal(fourth, storage.Get(0, 2));
        Assert.Equal(2UL, storage.GetMaxInstanceId(0));
        Assert.Equal((0L, 0L, 34L, 0xfb6cb67cL), ReadIndexRowsWhileOpen(0)[0]);
    }

    [Fact]
    public async Task ReopenRestoresIndexRowsLostInACrash()
    {
        var storage = Open(dataFileSize: 4096);
        for (ulong i = 0; i < 10; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, 600, (int)i), sync: false);
        }

        storage.Dispose();
        ExecuteOnIndex(0, "DELETE FROM log_index WHERE instance_id >= 5");

        storage = Open(dataFileSize: 4096);
        for (ulong i = 0; i < 10; i++)
        {
            Assert.Equal(StorageTestData.Sized(i, 600, (int)i), storage.Get(0, i));
        }
    }

    [Fact]
    public async Task ReopenDropsIndexRowsOfDataThatNeverReachedTheDisk()
    {
        // Non-sync puts: the index rows survived a power loss but the data pages did not.
        var storage = Open(dataFileSize: 8192, crash: true);
        long lostFrom = 0;
        for (ulong i = 0; i < 10; i++)
        {
            var body = StorageTestData.Sized(i, 100, (int)i);
            await storage.PutAsync(0, i, body, sync: false);
            if (i < 6)
            {
                lostFrom += 12 + body.Length;
            }
        }

        storage.Dispose();
        using (var file = new FileStream(DataFile(0, 0), FileMode.Open, FileAccess.Write))
        {
            file.Position = lostFrom;
            file.Write(new byte[8192 - lostFrom]);
        }

        storage = Open(dataFileSize: 8192);
        for (ulong i = 0; i < 10; i++)
        {
            Assert.Equal(i < 6 ? StorageTestData.Sized(i, 100, (int)i) : null, storage.Get(0, i));
        }

        Assert.Equal(5UL, storage.GetMaxInstanceId(0));
        await storage.PutAsync(0, 6, StorageTestData.Promise(6), sync: true);
        Assert.Equal(StorageTestData.Promise(6), storage.Get(0, 6));
    }

    public static TheoryData<bool, bool> TornWriteCases => new()
    {
        { false, false },
        { false, true },
        { true, false },
        { true, true },
    };

    [Theory]
    [MemberData(nameof(TornWriteCases))]
    public async Task TornLastRecordIsCutAtEveryByteOffset(bool truncateFile, bool deleteIndex)
    {
        // Instance 3 has a promise then an accept; the accept is torn at every byte offset in turn.
        var records = new List<(ulong Id, byte[] Body)>
        {
            (0, StorageTestData.EchoAccept(0, "hello-phx-1", 2244960119)),
            (1, StorageTestData.EchoAccept(1, "hello-phx-2", 509966828)),
            (2, StorageTestData.Sized(2, 30, 2)),
            (3, StorageTestData.Promise(3, promiseId: 5)),
            (3, StorageTestData.EchoAccept(3, "torn-value", 0xDEADBEEF)),
        };
        var tornOffset = records.Take(4).Sum(r => 12L + r.Body.Length);
        var tornLength = 12 + records[^1].Body.Length;

        for (var cut = 0; cut < tornLength; cut++)
        {
            using var root = new TempDirectory();
            // Closed as a crash would leave it: the last record is not fsynced at close.
            var options = new LogStorageOptions { RootPath = root.Path, GroupCount = 1, DataFileSize = 8192, SyncUnsyncedFilesOnClose = false };
            using (var storage = new FileLogStorage(options))
            {
                // The torn record's fsync never completed (a tear inside fsynced data is damage, tested below).
                for (var i = 0; i < records.Count; i++)
                {
                    await storage.PutAsync(0, records[i].Id, records[i].Body, sync: i < records.Count - 1);
                }
            }

            var dataFile = Path.Combine(root.Path, "g0", "vfile", "0.f");
            using (var file = new FileStream(dataFile, FileMode.Open, FileAccess.ReadWrite))
            {
                if (truncateFile)
                {
                    file.SetLength(tornOffset + cut);
                }
                else
                {
                    file.Position = tornOffset + cut;
                    file.Write(new byte[tornLength - cut]);
                }
            }

            if (deleteIndex)
            {
                File.Delete(Path.Combine(root.Path, "g0", IndexDatabase.FileName));
            }

            using (var storage = new FileLogStorage(options))
            {
                Assert.Equal(records[0].Body, storage.Get(0, 0));
                Assert.Equal(records[1].Body, storage.Get(0, 1));
                Assert.Equal(records[2].Body, storage.Get(0, 2));
                Assert.Equal(records[3].Body, storage.Get(0, 3)); // the promise: the torn accept is gone
                Assert.Equal(8192, new FileInfo(dataFile).Length);
                Assert.Contains(
                    File.ReadAllLines(Path.Combine(root.Path, "g0", "vfile", "LOG")),
                    line => line.EndsWith($"truncate fileid 0 offset {tornOffset} filesize {(truncateFile ? tornOffset + cut : 8192)}", StringComparison.Ordinal)
                        || (cut == 0 && line.EndsWith($"init write fileid 0 now_w_offset {tornOffset} filesize 8192", StringComparison.Ordinal)));

                var again = StorageTestData.EchoAccept(3, "rewritten", 7);
                await storage.PutAsync(0, 3, again, sync: true);
                await storage.PutAsync(0, 4, StorageTestData.Promise(4), sync: true);
                Assert.Equal(again, storage.Get(0, 3));
            }

            using (var storage = new FileLogStorage(options))
            {
                Assert.Equal(StorageTestData.EchoAccept(3, "rewritten", 7), storage.Get(0, 3));
                Assert.Equal(StorageTestData.Promise(4), storage.Get(0, 4));
                Assert.Equal(4UL, storage.GetMaxInstanceId(0));
            }
        }
    }

    [Fact]
    public async Task FlippedByteInMiddleRecordIsReportedWithFileAndOffset()
    {
        var storage = Open();
        long offset = 0;
        for (ulong i = 0; i < 5; i++)
        {
            var body = StorageTestData.Sized(i, 50, (int)i);
            await storage.PutAsync(0, i, body, sync: true);
            if (i < 2)
            {
                offset += 12 + body.Length;
            }
        }

        // Offset 12 is the body's first byte (the InstanceID tag): covered by the every-8th-byte crc and
        // fatal to the protobuf parse.
        storage.Dispose();
        FlipByte(DataFile(0, 0), offset + 12);

        storage = Open();
        var error = Assert.Throws<LogStorageException>(() => storage.Get(0, 2));
        Assert.Equal(DataFile(0, 0), error.File);
        Assert.Equal(offset, error.Offset);
        Assert.Equal(0, error.GroupIndex);
        Assert.Contains(DataFile(0, 0), error.Message, StringComparison.Ordinal);
        Assert.Contains($"offset {offset}", error.Message, StringComparison.Ordinal);
        Assert.NotNull(storage.Get(0, 3));

        // Without an index the scan meets the damage; a valid record follows, so it is not cut.
        storage.Dispose();
        DeleteIndex(0);
        var openError = Assert.Throws<LogStorageException>(() => Open());
        Assert.Equal(DataFile(0, 0), openError.File);
        Assert.Equal(offset, openError.Offset);
        Assert.Contains("valid record follows", openError.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task DamageToTheLastFsyncedRecordIsReportedNotCut(bool zeroed)
    {
        var storage = Open();
        long offset = 0;
        for (ulong i = 0; i < 3; i++)
        {
            var body = StorageTestData.Sized(i, 50, (int)i);
            await storage.PutAsync(0, i, body, sync: true);
            if (i < 2)
            {
                offset += 12 + body.Length;
            }
        }

        storage.Dispose();
        if (zeroed)
        {
            using var file = new FileStream(DataFile(0, 0), FileMode.Open, FileAccess.ReadWrite);
            file.Position = offset;
            file.Write(new byte[12 + 50]);
        }
        else
        {
            FlipByte(DataFile(0, 0), offset + 12);
        }

        var error = Assert.Throws<LogStorageException>(() => Open());
        Assert.Equal(DataFile(0, 0), error.File);
        Assert.Equal(offset, error.Offset);
        Assert.Contains("not a torn write", error.Message, StringComparison.Ordinal);
        Assert.Contains("Remedy", error.Message, StringComparison.Ordinal);

        // Nothing was cut: the record's bytes are still there for an operator to inspect.
        Assert.DoesNotContain(File.ReadAllLines(Path.Combine(_root.Path, "g0", "vfile", "LOG")), line => line.Contains("truncate", StringComparison.Ordinal));
    }

    [Fact]
    public async Task OutOfRangeLengthInMiddleIsReportedOnOpen()
    {
        var storage = Open(dataFileSize: 8192);
        for (ulong i = 0; i < 4; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, 20, (int)i), sync: true);
        }

        storage.Dispose();
        var secondRecord = 12L + StorageTestData.Sized(0, 20, 0).Length;
        FlipByte(DataFile(0, 0), secondRecord + 3); // high byte of the length
        DeleteIndex(0);

        var error = Assert.Throws<LogStorageException>(() => Open(dataFileSize: 8192));
        Assert.Equal(DataFile(0, 0), error.File);
        Assert.Equal(secondRecord, error.Offset);
        Assert.Contains("out of range", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DecreasingInstanceInLogIsReportedOnOpen()
    {
        var storage = Open(dataFileSize: 8192);
        await storage.PutAsync(0, 5, StorageTestData.Promise(5), sync: true);
        await storage.PutAsync(0, 6, StorageTestData.Promise(6), sync: true);
        storage.Dispose();

        // Append a valid record of instance 1 after instance 6 by hand.
        var body = StorageTestData.Promise(1);
        var record = new byte[12 + body.Length];
        BinaryPrimitives.WriteInt32LittleEndian(record, 8 + body.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(record.AsSpan(4), 1);
        body.CopyTo(record, 12);
        var end = 2 * (12L + body.Length);
        using (var file = new FileStream(DataFile(0, 0), FileMode.Open, FileAccess.Write))
        {
            file.Position = end;
            file.Write(record);
        }

        var error = Assert.Throws<LogStorageException>(() => Open(dataFileSize: 8192));
        Assert.Equal(end, error.Offset);
        Assert.Contains("follows instance 6", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DamagedMetaIsReported()
    {
        var storage = Open(dataFileSize: 4096);
        for (ulong i = 0; i < 6; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, 900, (int)i), sync: true);
        }

        storage.Dispose();
        var meta = Path.Combine(_root.Path, "g0", "vfile", "meta");
        FlipByte(meta, 6);

        var error = Assert.Throws<LogStorageException>(() => Open(dataFileSize: 4096));
        Assert.Contains("meta damaged", error.Message, StringComparison.Ordinal);
        Assert.Equal(meta, error.File);
    }

    [Fact]
    public async Task PutsDecreasingInstanceAreRejected()
    {
        var storage = Open();
        await storage.PutAsync(0, 10, StorageTestData.Promise(10), sync: false);
        await storage.PutAsync(0, 10, StorageTestData.Promise(10, promiseId: 2), sync: false);
        Assert.Throws<ArgumentException>(() => { _ = storage.PutAsync(0, 9, StorageTestData.Promise(9), sync: false); });
        Assert.Throws<ArgumentOutOfRangeException>(() => { _ = storage.PutAsync(0, 11, new byte[LogStorageOptions.DefaultDataFileSize], sync: false); });
    }

    [Fact]
    public async Task WriteFailureStopsTheStorage()
    {
        var storage = Open();
        await storage.PutAsync(0, 1, StorageTestData.Promise(1), sync: true);

        // Close the write handle under the writer to make the next write fail.
        var group = GetGroupLog(storage, 0);
        lock (group.WriteLock)
        {
            group.WriteHandle!.Dispose();
        }

        var error = await Assert.ThrowsAsync<LogStorageException>(() => storage.PutAsync(0, 2, StorageTestData.Promise(2), sync: true));
        Assert.Equal(DataFile(0, 0), error.File);
        Assert.NotNull(storage.Failure);

        var later = await Assert.ThrowsAsync<LogStorageException>(() => storage.PutAsync(1, 0, StorageTestData.Promise(0), sync: false));
        Assert.Contains("stopped", later.Message, StringComparison.Ordinal);
        Assert.Null(storage.Get(0, 2));
        Assert.NotNull(storage.Get(0, 1));
    }

    [Fact]
    public async Task SyncPutsShareFsyncs()
    {
        var storage = Open();
        var before = storage.FsyncCount;
        var puts = new Task[200];
        for (var i = 0; i < puts.Length; i++)
        {
            puts[i] = storage.PutAsync(0, (ulong)i, StorageTestData.Promise((ulong)i), sync: true);
        }

        await Task.WhenAll(puts);
        var fsyncs = storage.FsyncCount - before;
        Assert.InRange(fsyncs, 1, puts.Length - 1);

        before = storage.FsyncCount;
        await storage.PutAsync(0, 1000, StorageTestData.Promise(1000), sync: false);
        Assert.Equal(before, storage.FsyncCount);
    }

    private static GroupLog GetGroupLog(FileLogStorage storage, int group)
    {
        var field = typeof(FileLogStorage).GetField("_groups", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!;
        return ((GroupLog[])field.GetValue(storage)!)[group];
    }

    private static void FlipByte(string path, long offset)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        file.Position = offset;
        var value = file.ReadByte();
        file.Position = offset;
        file.WriteByte((byte)(value ^ 0x5A));
    }

    // crash: closing the storage leaves what a crash would (nothing is fsynced at close).
    private FileLogStorage Open(int dataFileSize = LogStorageOptions.DefaultDataFileSize, int groupCount = 2, bool crash = false)
    {
        var storage = new FileLogStorage(new LogStorageOptions { RootPath = _root.Path, GroupCount = groupCount, DataFileSize = dataFileSize, SyncUnsyncedFilesOnClose = !crash });
        _opened.Add(storage);
        return storage;
    }

    private string DataFile(int group, int fileId) => Path.Combine(_root.Path, $"g{group}", "vfile", $"{fileId}.f");

    private int[] DataFileIds(int group) =>
        [.. Directory.GetFiles(Path.Combine(_root.Path, $"g{group}", "vfile"), "*.f")
            .Select(p => int.Parse(Path.GetFileNameWithoutExtension(p), System.Globalization.CultureInfo.InvariantCulture))
            .Order()];

    private void DeleteIndex(int group)
    {
        foreach (var file in Directory.GetFiles(Path.Combine(_root.Path, $"g{group}"), IndexDatabase.FileName + "*"))
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task A_put_is_readable_as_soon_as_it_completes_while_its_index_row_is_held_back()
    {
        var storage = OpenHoldingIndex();
        for (ulong i = 0; i < 20; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, 300, (int)i), sync: true);
            Assert.Equal(StorageTestData.Sized(i, 300, (int)i), storage.Get(0, i));
        }

        Assert.Equal(19ul, storage.GetMaxInstanceId(0));
        Assert.Empty(ReadIndexRowsWhileOpen(0));
    }

    [Fact]
    public async Task Index_rows_are_written_once_the_records_waiting_for_them_reach_the_byte_bound()
    {
        var storage = OpenHoldingIndex();
        const int Size = 100 * 1024;
        var needed = (int)(FileLogStorage.IndexFlushBytes / Size) + 1;
        for (ulong i = 0; i < (ulong)needed - 1; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, Size, (int)i), sync: true);
        }

        Assert.Empty(ReadIndexRowsWhileOpen(0));
        await storage.PutAsync(0, (ulong)needed - 1, StorageTestData.Sized((ulong)needed - 1, Size, needed - 1), sync: true);

        // The writer flushes right after the batch's completions run.
        await Polling.WaitUntilAsync(() => ReadIndexRowsWhileOpen(0).Count == needed, TimeSpan.FromSeconds(30), "the held-back rows to be written");
        Assert.Equal(Enumerable.Range(0, needed).Select(i => (long)i), ReadIndexRowsWhileOpen(0).Select(r => r.Instance));
        Assert.Equal(StorageTestData.Sized(3, Size, 3), storage.Get(0, 3));
    }

    [Fact]
    public async Task Records_whose_index_rows_were_held_back_at_a_crash_are_indexed_again_by_recovery()
    {
        var storage = OpenHoldingIndex();
        for (ulong i = 0; i < 30; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, 500, (int)i), sync: true);
        }

        // What a crash leaves: durable records, no index rows for them. Copy the folder as it is on disk.
        Assert.Empty(ReadIndexRowsWhileOpen(0));
        using var crashed = new TempDirectory();
        CopyDirectory(_root.Path, crashed.Path);

        using (var recovered = new FileLogStorage(new LogStorageOptions { RootPath = crashed.Path, GroupCount = 2 }))
        {
            for (ulong i = 0; i < 30; i++)
            {
                Assert.Equal(StorageTestData.Sized(i, 500, (int)i), recovered.Get(0, i));
            }

            Assert.Equal(29ul, recovered.GetMaxInstanceId(0));
        }

        // A clean stop writes the held-back rows.
        storage.Dispose();
        Assert.Equal(30, ReadIndexRows(0).Count);
    }

    [Fact]
    public async Task DeleteBefore_writes_held_back_index_rows_before_deleting()
    {
        var storage = OpenHoldingIndex(dataFileSize: 4096);
        for (ulong i = 0; i < 40; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Sized(i, 900, (int)i), sync: true);
        }

        storage.DeleteBefore(0, 20);
        for (ulong i = 20; i < 40; i++)
        {
            Assert.Equal(StorageTestData.Sized(i, 900, (int)i), storage.Get(0, i));
        }

        Assert.Null(storage.Get(0, 0));
        Assert.False(File.Exists(DataFile(0, 0)));
        var rows = ReadIndexRowsWhileOpen(0);
        Assert.Equal(Enumerable.Range(20, 20).Select(i => (long)i), rows.Select(r => r.Instance));
    }

    [Fact]
    public void A_put_that_finds_its_lane_idle_is_written_by_the_caller_when_the_callback_allows_it()
    {
        var storage = Open(groupCount: 1);
        var inline = new ThreadRecordingCallback(allowsCallerWrite: true);
        storage.Put(0, 0, StorageTestData.Promise(0), sync: true, inline);

        // Written, fsynced and reported before Put returned, on this thread.
        Assert.True(inline.Completed.IsSet);
        Assert.Null(inline.Error);
        Assert.Equal(Environment.CurrentManagedThreadId, inline.ThreadId);
        Assert.Equal(StorageTestData.Promise(0), storage.Get(0, 0));

        var handedOff = new ThreadRecordingCallback(allowsCallerWrite: false);
        storage.Put(0, 1, StorageTestData.Promise(1), sync: true, handedOff);
        Assert.True(handedOff.Completed.Wait(TimeSpan.FromSeconds(10)));
        Assert.Null(handedOff.Error);
        Assert.NotEqual(Environment.CurrentManagedThreadId, handedOff.ThreadId);
        Assert.Equal(StorageTestData.Promise(1), storage.Get(0, 1));
    }

    [Fact]
    public void A_writer_thread_holds_what_its_completions_send_until_the_batch_is_completed()
    {
        var storage = Open(groupCount: 1);
        var batching = new RecordingBatching();
        storage.CompletionBatching = batching;

        // A caller that writes its own record (a loop thread, here with nothing held) is left to hold or not as its
        // loop decides: the storage only sends what it holds before an fsync on its thread.
        var inline = new ThreadRecordingCallback(allowsCallerWrite: true, batching);
        storage.Put(0, 0, StorageTestData.Promise(0), sync: true, inline);
        Assert.True(inline.Completed.IsSet);
        Assert.False(inline.HeldWhenCompleted);
        Assert.Equal(0, batching.Sent);
        Assert.Equal(1, batching.Flushed);

        // On the writer thread: the callback runs while sends are held, and they are sent right after.
        var handedOff = new ThreadRecordingCallback(allowsCallerWrite: false, batching);
        storage.Put(0, 1, StorageTestData.Promise(1), sync: true, handedOff);
        Assert.True(handedOff.Completed.Wait(TimeSpan.FromSeconds(10)));
        Assert.True(handedOff.HeldWhenCompleted);
        Assert.True(SpinWait.SpinUntil(() => batching.Sent == 1, TimeSpan.FromSeconds(10)));
    }

    private sealed class RecordingBatching : Engine.Transport.ISendBatching
    {
        [ThreadStatic]
        private static bool t_holding;

        private int _sent;
        private int _flushed;

        public bool Holding => t_holding;

        public int Sent => Volatile.Read(ref _sent);

        public void HoldSends() => t_holding = true;

        public int Flushed => Volatile.Read(ref _flushed);

        public void SendHeld()
        {
            t_holding = false;
            Interlocked.Increment(ref _sent);
        }

        public void FlushHeld() => Interlocked.Increment(ref _flushed);
    }

    private sealed class ThreadRecordingCallback(bool allowsCallerWrite, RecordingBatching? batching = null) : IPutCallback
    {
        public bool HeldWhenCompleted { get; private set; }

        public ManualResetEventSlim Completed { get; } = new();

        public int ThreadId { get; private set; }

        public Exception? Error { get; private set; }

        public bool AllowsCallerWrite => allowsCallerWrite;

        public void OnPutCompleted(Exception? error)
        {
            Error = error;
            ThreadId = Environment.CurrentManagedThreadId;
            HeldWhenCompleted = batching?.Holding == true;
            Completed.Set();
        }
    }

    private FileLogStorage OpenHoldingIndex(int dataFileSize = LogStorageOptions.DefaultDataFileSize)
    {
        var storage = new FileLogStorage(new LogStorageOptions
        {
            RootPath = _root.Path,
            GroupCount = 2,
            DataFileSize = dataFileSize,
            IndexFlushInterval = TimeSpan.FromHours(1),
        });
        _opened.Add(storage);
        return storage;
    }

    private static void CopyDirectory(string from, string to)
    {
        foreach (var dir in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
        {
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        }

        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            File.Copy(file, Path.Combine(to, Path.GetRelativePath(from, file)));
        }
    }

    private void ExecuteOnIndex(int group, string sql)
    {
        var path = Path.Combine(_root.Path, $"g{group}", IndexDatabase.FileName);
        using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    private List<string> ReadLog(int group) =>
        [.. File.ReadAllLines(Path.Combine(_root.Path, $"g{group}", "vfile", "LOG")).Select(line =>
        {
            var match = LogLine.Match(line);
            Assert.True(match.Success, $"LOG line has not PhxPaxos's format: {line}");
            return match.Groups["message"].Value;
        })];

    private List<(long Instance, long File, long Offset, long Crc)> ReadIndexRows(int group) => ReadIndexRowsWhileOpen(group);

    private List<(long Instance, long File, long Offset, long Crc)> ReadIndexRowsWhileOpen(int group)
    {
        var path = Path.Combine(_root.Path, $"g{group}", IndexDatabase.FileName);
        using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Mode = SqliteOpenMode.ReadOnly, Pooling = false }.ToString());
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT instance_id, file_id, offset, crc FROM log_index ORDER BY instance_id";
        using var reader = command.ExecuteReader();
        var rows = new List<(long, long, long, long)>();
        while (reader.Read())
        {
            rows.Add((reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3)));
        }

        return rows;
    }
}
