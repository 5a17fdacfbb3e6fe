using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Hashing;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>
/// PhxPaxos-compatible log storage on local disk. Per group <c>&lt;root&gt;/g&lt;N&gt;/</c> holds
/// <c>vfile/&lt;n&gt;.f</c> data files (records <c>[int32 len][uint64 instance id][AcceptorStateData]</c>,
/// preallocated), <c>vfile/meta</c>, <c>vfile/LOG</c>, and an SQLite <c>index.db</c> with the
/// instance index and the group's variables. The data files are the truth: on open the index is
/// repaired (or rebuilt, e.g. for a PhxPaxos <c>vfile</c> folder) from them and a torn tail is cut.
/// </summary>
/// <remarks>
/// <para>Thread-safety: every member may be called from any thread. All appends of all groups are
/// written by one dedicated writer thread that commits in groups: it takes everything queued, writes
/// each group's records with one write call, fsyncs each file that received a synchronous record once,
/// indexes the batch in one SQLite transaction per group, and only then completes the tasks (on the
/// thread pool). Reads run concurrently on the caller's thread.</para>
/// <para>With <see cref="LogStorageOptions.SharedLog"/> one writer serves every group and a batch is made durable by
/// one write and one fsync of the node-wide <c>sharedlog</c> file instead of an fsync per group file; the data files
/// are fsynced at checkpoints, and on open each group is cut back to its last checkpoint and the shared log replayed
/// into it.</para>
/// <para>Failure: when a write or fsync fails the storage stops (fail-stop): the affected tasks fail
/// with <see cref="LogStorageException"/> and every later put fails at once, because after a failed
/// fsync the kernel may have dropped the dirty pages and nothing written since can be trusted.</para>
/// </remarks>
public sealed partial class FileLogStorage : ILogStorage
{
    private readonly LogStorageOptions _options;
    private readonly bool _flushFilesTogether;
    private readonly GroupLog[] _groups;
    private int _disposed;
    private readonly SharedLog? _sharedLog;

    /// <summary><see cref="FsyncCurrentFile"/> as a delegate, made once: a batch hands it to its lane's parallel fsyncs.</summary>
    private readonly Action<GroupLog> _fsyncCurrentFile;

    /// <summary>Opens (creating when missing) the storage of every group and recovers it from its data files.</summary>
    /// <param name="options">Root folder, group count and data file size.</param>
    /// <exception cref="LogStorageException">A data file or <c>meta</c> is damaged beyond a torn tail (names file and offset).</exception>
    public FileLogStorage(LogStorageOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(options.RootPath);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.GroupCount, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.DataFileSize, 4096);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(options.IndexFlushInterval, TimeSpan.Zero);
        _options = options;
        _fsyncCurrentFile = FsyncCurrentFile;
        _flushFilesTogether = options.FlushFilesTogether && !options.SharedLog && DataSync.SupportsWriteBack;
        _indexFlushTicks = (long)Math.Min(options.IndexFlushInterval.TotalSeconds * Stopwatch.Frequency, long.MaxValue / 4);
        _logger = options.Logger ?? throw new ArgumentNullException(nameof(options), "LogStorageOptions.Logger must not be null.");
        Directory.CreateDirectory(options.RootPath);

        _groups = new GroupLog[options.GroupCount];
        if (options.SharedLog && options.GroupCount > SharedLog.MaxGroups)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.GroupCount, $"The shared log holds at most {SharedLog.MaxGroups} groups.");
        }

        var sharedLogPath = Path.Combine(options.RootPath, SharedLog.FileName);

        // Read first: its checkpoint says how far each group's data files are durable, and recovery cuts them there.
        var shared = SharedLog.Read(sharedLogPath, options.GroupCount);
        try
        {
            for (var i = 0; i < _groups.Length; i++)
            {
                var directory = Path.Combine(options.RootPath, "g" + i.ToString(CultureInfo.InvariantCulture));
                var mark = shared?.Marks[i];
                try
                {
                    _groups[i] = OpenGroup(i, directory, mark);
                }
                catch (Microsoft.Data.Sqlite.SqliteException e)
                {
                    // The data files are the truth: keep the damaged index for inspection and build a new one from them.
                    _groups[i]?.Dispose();
                    _groups[i] = null!;
                    var moved = MoveDamagedIndexAside(directory);
                    LogIndexDamaged(_logger, i, Path.Combine(directory, IndexDatabase.FileName), e.Message, moved);
                    try
                    {
                        _groups[i] = OpenGroup(i, directory, mark);
                    }
                    catch (Microsoft.Data.Sqlite.SqliteException again)
                    {
                        throw IndexDamaged(i, Path.Combine(directory, IndexDatabase.FileName), again);
                    }
                }

                if (_groups[i].IndexRebuilt)
                {
                    LogIndexRebuilt(_logger, i, _groups[i].Index.Path, _groups[i].LastInstanceId ?? 0);
                }
            }

            if (shared is not null)
            {
                ReplaySharedLog(shared);
            }

            if (options.SharedLog)
            {
                // The first checkpoint declares every group durable up to its end: make it so (a folder written
                // without the shared log, or with non-sync records, may hold unflushed data). An empty current file
                // holds nothing to flush (earlier files were fsynced when the group rolled over).
                foreach (var group in _groups)
                {
                    if (group.WriteOffset > 0)
                    {
                        FsyncCurrentFile(group);
                    }
                }

                var marks = CurrentMarks();
                _sharedLog = SharedLog.Open(options.FileOperations, sharedLogPath, (shared?.Generation ?? 0) + 1, marks);
                KeepMarkFiles(marks);
            }
            else if (File.Exists(sharedLogPath))
            {
                // Replayed into the groups' own (now fsynced) files: no longer needed.
                File.Delete(sharedLogPath);
                DataSync.FlushDirectory(options.RootPath);
            }
        }
        catch
        {
            _sharedLog?.Dispose();
            foreach (var group in _groups)
            {
                group?.Dispose();
            }

            throw;
        }

        var writers = options.SharedLog ? 1 : options.WriterThreads > 0 ? options.WriterThreads : _flushFilesTogether ? 1 : 8;
        _lanes = new WriterLane[Math.Clamp(writers, 1, _groups.Length)];
        for (var i = 0; i < _lanes.Length; i++)
        {
            var lane = new WriterLane();
            lane.Thread = new Thread(() => WriterLoop(lane)) { IsBackground = true, Name = $"Paxos log writer {i}" };
            _lanes[i] = lane;
            lane.Thread.Start();
        }

        StartUnsyncedTimer();
    }

    /// <inheritdoc/>
    public int GroupCount => _groups.Length;

    /// <summary>
    /// A transport that holds what a writer thread sends while it completes one batch's puts (an acceptor's replies,
    /// often several to the same peer) and sends it together after; null sends each at once. Set before the first put.
    /// </summary>
    internal Transport.ISendBatching? CompletionBatching { get; set; }

    /// <summary>Number of fsyncs done so far (group commits of data files or of the shared log, roll-overs, checkpoints); for benchmarks and metrics.</summary>
    public long FsyncCount => Interlocked.Read(ref _fsyncCount);

    /// <summary>The error that stopped the storage, or null while it accepts writes.</summary>
    public LogStorageException? Failure => Volatile.Read(ref _failure);

    /// <inheritdoc/>
    public string GetGroupDirectory(int groupIndex) => GetGroup(groupIndex).Directory;

    /// <inheritdoc/>
    public byte[]? Get(int groupIndex, ulong instanceId)
    {
        var group = GetGroup(groupIndex);
        if (instanceId > long.MaxValue)
        {
            return null;
        }

        lock (group.SnapshotLock)
        {
            if (group.Unindexed.TryGetValue(instanceId, out var pending))
            {
                return pending.Span.ToArray();
            }
        }

        group.FilesLock.EnterReadLock();
        try
        {
            IndexEntry entry;
            try
            {
                if (!group.Index.TryGet(instanceId, out entry))
                {
                    return null;
                }
            }
            catch (Microsoft.Data.Sqlite.SqliteException e)
            {
                throw IndexDamaged(group.GroupIndex, group.Index.Path, e);
            }

            return ReadRecord(group, entry);
        }
        finally
        {
            group.FilesLock.ExitReadLock();
        }
    }

    /// <inheritdoc/>
    public ulong? GetMaxInstanceId(int groupIndex)
    {
        var group = GetGroup(groupIndex);
        var indexed = group.Index.GetMaxInstanceId();
        ulong? pending = null;
        foreach (var key in group.Unindexed.Keys)
        {
            pending = pending is { } p && p >= key ? p : key;
        }

        return pending is { } q && (indexed is null || q > indexed) ? q : indexed;
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Index rows below the bound go at once (with a durable floor, so that recovery does not
    /// re-index them). Data files are deleted when every record in them is below the bound, i.e. when
    /// they precede the file of the lowest kept instance; the current file is never deleted.
    /// </remarks>
    public void DeleteBefore(int groupIndex, ulong instanceId)
    {
        var group = GetGroup(groupIndex);
        lock (group.MaintenanceLock)
        {
            int currentFileId;
            lock (group.WriteLock)
            {
                // After a failed write the held-back rows may name records that never became durable: index
                // nothing and delete nothing; the storage is stopped.
                if (Volatile.Read(ref _failure) is { } failure)
                {
                    throw Stopped(failure);
                }

                // Under the write lock, once the held-back rows are written, every record written so far is
                // indexed and lies before the current position, so the floor's position separates deleted
                // records from later ones.
                IndexPending(group);
                currentFileId = group.CurrentFileId;
                group.Index.DeleteBelow(instanceId, currentFileId, group.WriteOffset);
            }

            // Instance ids grow along the log, so the lowest kept instance lies in the earliest file still needed.
            var limit = Math.Min(group.Index.GetFirstFileAtOrAbove(instanceId) ?? currentFileId, currentFileId);

            // With the shared log, recovery cuts the group back to the file of its last checkpoint: keep that file.
            limit = Math.Min(limit, group.SharedLogMarkFileId);
            if (limit <= group.LowestFileId)
            {
                return;
            }

            group.FilesLock.EnterWriteLock();
            try
            {
                for (var fileId = group.LowestFileId; fileId < limit; fileId++)
                {
                    group.CloseReadHandle(fileId);
                    var path = group.DataFilePath(fileId);
                    if (File.Exists(path))
                    {
                        File.Delete(path);
                        group.EventLog.Write($"delete fileid {fileId}");
                    }

                    group.LowestFileId = fileId + 1;
                }
            }
            finally
            {
                group.FilesLock.ExitWriteLock();
            }
        }
    }

    /// <inheritdoc/>
    public ulong GetMinChosenInstanceId(int groupIndex) => GetGroup(groupIndex).Index.GetMinChosen();

    /// <inheritdoc/>
    public void SetMinChosenInstanceId(int groupIndex, ulong instanceId) => GetGroup(groupIndex).Index.SetMinChosen(instanceId);

    /// <inheritdoc/>
    public byte[]? GetSystemVariables(int groupIndex) => GetGroup(groupIndex).Index.GetVariable("system");

    /// <inheritdoc/>
    public void SetSystemVariables(int groupIndex, ReadOnlySpan<byte> value) => GetGroup(groupIndex).Index.SetVariable("system", value);

    /// <inheritdoc/>
    public byte[]? GetMasterVariables(int groupIndex) => GetGroup(groupIndex).Index.GetVariable("master");

    /// <inheritdoc/>
    public void SetMasterVariables(int groupIndex, ReadOnlySpan<byte> value) => GetGroup(groupIndex).Index.SetVariable("master", value);

    /// <inheritdoc/>
    /// <remarks>
    /// Deletes every data file and starts again at an empty <c>0.f</c> with an empty <c>meta</c>.
    /// Puts of the group queued before the call may land after it; callers (checkpoint install) stop
    /// proposing first. Crash-safe: a durable mark makes the next open finish an interrupted clear.
    /// </remarks>
    public void ClearAllLog(int groupIndex)
    {
        var group = GetGroup(groupIndex);
        if (_sharedLog is null)
        {
            ClearGroup(group);
            return;
        }

        // The shared log must not hold the old records when the group starts again: a checkpoint before the
        // clear empties it, one after it records the emptied files. Both as the lane's writer, so no batch
        // comes in between.
        var lane = _lanes[0];
        AcquireWriter(lane);
        try
        {
            if (Volatile.Read(ref _failure) is { } failure)
            {
                throw Stopped(failure);
            }

            ThrowIfFailed(CheckpointSharedLog());
            ClearGroup(group);
            ThrowIfFailed(CheckpointSharedLog());
        }
        finally
        {
            ReleaseWriter(lane);
        }
    }

    private static void ThrowIfFailed(LogStorageException? failure)
    {
        if (failure is not null)
        {
            throw failure;
        }
    }

    private void ClearGroup(GroupLog group)
    {
        lock (group.MaintenanceLock)
        {
            lock (group.WriteLock)
            {
                group.PendingIndex.Clear();
                group.PendingSnapshots.Clear();
                ClearFiles(group);
                group.Synced = null;
                OpenCurrentFile(group, 0, 0);
            }

            lock (LaneOf(group).QueueLock)
            {
                group.LastInstanceId = null;
                group.Unindexed.Clear();
            }
        }
    }

    /// <summary>Stops the writer thread after it has written everything queued, then closes every file and database.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        foreach (var lane in _lanes)
        {
            lock (lane.QueueLock)
            {
                lane.Stopping = true;
                Monitor.Pulse(lane.QueueLock);
            }
        }

        foreach (var lane in _lanes)
        {
            lane.Thread!.Join();
            lane.Fsyncs.Dispose();
        }

        StopUnsyncedTimer();
        if (_options.SyncUnsyncedFilesOnClose && Volatile.Read(ref _failure) is null)
        {
            // A clean close leaves every data file fsynced, as PhxPaxos's folder would be after its own roll-overs, and
            // records where the fsynced data ends, so that the next open does not scan the current file from its start.
            foreach (var group in _groups)
            {
                try
                {
                    SyncListed(group, null);
                    if (_sharedLog is null)
                    {
                        // With the shared log, its checkpoint at close (when asked for) does this.
                        SyncCurrentFileOnClose(group);
                    }
                }
                catch (LogStorageException e)
                {
                    Fail(e);
                    break;
                }
            }
        }

        if (_sharedLog is { } log)
        {
            // A clean close leaves nothing to replay: the next open starts at once.
            if (_options.SharedLogCheckpointOnClose && Volatile.Read(ref _failure) is null)
            {
                _ = CheckpointSharedLog();
            }

            log.Dispose();
        }

        foreach (var group in _groups)
        {
            group.Dispose();
        }
    }

    /// <summary>Fsyncs the current file if records were written to it since its last fsync, and stores the mark in the index.</summary>
    private void SyncCurrentFileOnClose(GroupLog group)
    {
        lock (group.WriteLock)
        {
            if (group.WriteHandle is null || group.WriteOffset == 0 || group.Synced == new SyncMark(group.CurrentFileId, group.WriteOffset))
            {
                return;
            }

            FsyncCurrentFile(group);

            // No rows are held back by now (the writers flushed them when they stopped): this stores the mark alone.
            IndexBatch(group);
        }
    }

    /// <summary>Deletes the data files, empties meta and the index. The caller holds the group's write lock.</summary>
    private static void ClearFiles(GroupLog group)
    {
        group.Index.MarkClearPending();
        group.FilesLock.EnterWriteLock();
        try
        {
            group.CloseReadHandles();
            group.WriteHandle?.Dispose();
            group.WriteHandle = null;
            foreach (var fileId in group.ListDataFiles())
            {
                File.Delete(group.DataFilePath(fileId));
                group.EventLog.Write($"delete fileid {fileId}");
            }

            lock (group.Unsynced.Gate)
            {
                // The files it listed are gone; new files with the same ids must not be taken for them.
                if (group.Unsynced.Entries.Count > 0 || File.Exists(group.Unsynced.Path))
                {
                    group.Unsynced.Clear();
                    WriteList(group);
                }
            }

            group.ResetMeta();
            group.Index.ClearLog();
            group.LowestFileId = 0;
        }
        finally
        {
            group.FilesLock.ExitWriteLock();
        }
    }

    /// <summary>Opens a data file for appending at an offset and logs it. The caller holds the group's write lock.</summary>
    private static void OpenCurrentFile(GroupLog group, int fileId, long offset)
    {
        group.WriteHandle?.Dispose();
        group.WriteHandle = group.OpenForAppend(fileId, out var fileSize);
        group.CurrentFileId = fileId;
        group.WriteOffset = offset;
        group.CurrentFileSize = fileSize;
        group.EventLog.Write($"init write fileid {fileId} now_w_offset {offset} filesize {fileSize}");
    }

    /// <summary>Reads and verifies the record an index row points to. The caller holds FilesLock shared.</summary>
    private static byte[] ReadRecord(GroupLog group, IndexEntry entry)
    {
        var path = group.DataFilePath(entry.FileId);
        Microsoft.Win32.SafeHandles.SafeFileHandle handle;
        try
        {
            handle = group.GetReadHandle(entry.FileId);
        }
        catch (FileNotFoundException e)
        {
            throw new LogStorageException(
                $"Group {group.GroupIndex}: instance {entry.InstanceId} is indexed in data file {path}, which does not exist.",
                group.GroupIndex,
                path,
                entry.Offset,
                e);
        }

        Span<byte> header = stackalloc byte[12];
        var read = RandomAccess.Read(handle, header, entry.Offset);
        var length = read == 12 ? BinaryPrimitives.ReadInt32LittleEndian(header) : 0;
        var fileLength = RandomAccess.GetLength(handle);
        if (read != 12 || length < 8 || entry.Offset + 4L + length > fileLength)
        {
            throw Damaged(group, entry, path, $"record length {length} is out of range (file length {fileLength})");
        }

        var storedId = BinaryPrimitives.ReadUInt64LittleEndian(header[4..]);
        if (storedId != entry.InstanceId)
        {
            throw Damaged(group, entry, path, $"the record holds instance {storedId}");
        }

        var body = new byte[length - 8];
        if (RandomAccess.Read(handle, body, entry.Offset + 12L) != body.Length)
        {
            throw Damaged(group, entry, path, "the record is cut short");
        }

        // PhxPaxos's record crc hashes every 8th byte only, so it catches many but not all damage.
        var crc = SkipCrc32.Compute(SkipCrc32.Compute(0, header[4..], SkipCrc32.ValueSkip), body, SkipCrc32.ValueSkip);
        if (crc != entry.Crc)
        {
            throw Damaged(group, entry, path, $"crc 0x{crc:x8} differs from the indexed 0x{entry.Crc:x8}");
        }

        if (entry.FullCrc >= 0)
        {
            // PhxPaxos's crc misses 7 bytes in 8; the full one makes any flipped byte fail the read.
            var full = new System.IO.Hashing.Crc32();
            full.Append(header[4..]);
            full.Append(body);
            var fullCrc = full.GetCurrentHashAsUInt32();
            if (fullCrc != entry.FullCrc)
            {
                throw Damaged(group, entry, path, $"the CRC-32 of its bytes 0x{fullCrc:x8} differs from the indexed 0x{entry.FullCrc:x8}");
            }
        }

        return body;
    }

    /// <summary>The index database cannot be read; it also holds the variables, which the data files cannot restore.</summary>
    /// <inheritdoc/>
    public bool WasIndexRebuilt(int groupIndex) => GetGroup(groupIndex).IndexRebuilt;

    /// <inheritdoc />
    public bool WasTailCutAtOpen(int groupIndex) => GetGroup(groupIndex).TailCutAtOpen;

    /// <inheritdoc/>
    public bool IsRebuilding(int groupIndex)
    {
        var group = GetGroup(groupIndex);
        return (group.Index.GetVariable(RebuildingVariable) is { Length: > 0 } value && value[0] == 1)
            || File.Exists(RebuildingMarkerPath(group));
    }

    /// <inheritdoc/>
    public void SetRebuilding(int groupIndex, bool rebuilding)
    {
        // Kept twice, in the index and as a file beside it, so that losing the index while rebuilding does not
        // make the node vote with the promises it lost.
        var group = GetGroup(groupIndex);
        var marker = RebuildingMarkerPath(group);
        try
        {
            if (rebuilding)
            {
                using var file = new FileStream(marker, FileMode.Create, FileAccess.Write, FileShare.None);
                file.Flush(flushToDisk: true);
            }

            group.Index.SetVariable(RebuildingVariable, [rebuilding ? (byte)1 : (byte)0]);
            if (!rebuilding && File.Exists(marker))
            {
                File.Delete(marker);
            }
        }
        catch (Microsoft.Data.Sqlite.SqliteException e)
        {
            throw IndexDamaged(groupIndex, group.Index.Path, e);
        }
        catch (IOException e)
        {
            throw new LogStorageException($"Group {groupIndex}: could not write the rebuilding marker {marker}: {e.Message}", groupIndex, marker, 0, e);
        }
    }

    private const string RebuildingVariable = "rebuilding";

    private static string RebuildingMarkerPath(GroupLog group) => Path.Combine(group.Directory, "rebuilding");

    private GroupLog OpenGroup(int groupIndex, string directory, SyncMark? sharedLogMark)
    {
        var group = new GroupLog(groupIndex, directory, _options.DataFileSize, _options.FileOperations);
        try
        {
            Recover(group, sharedLogMark);
            if (group.IndexIsNew && group.LastInstanceId is not null)
            {
                group.IndexRebuilt = true;

                // The log may have been cleaned: it starts at its first record, not at 0.
                if (group.Index.GetMinInstanceId() is { } first && first > 0)
                {
                    group.Index.SetMinChosen(first);
                }
            }

            return group;
        }
        catch
        {
            group.Dispose();
            throw;
        }
    }

    private static string MoveDamagedIndexAside(string directory)
    {
        var path = Path.Combine(directory, IndexDatabase.FileName);
        var aside = path + ".damaged-" + DateTime.UtcNow.ToString("yyyyMMddHHmmssfff", CultureInfo.InvariantCulture);
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        foreach (var suffix in new[] { string.Empty, "-wal", "-shm" })
        {
            if (File.Exists(path + suffix))
            {
                File.Move(path + suffix, aside + suffix);
            }
        }

        return aside;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: the index database {Path} is damaged ({Error}); it was moved to {MovedTo} and a new one is built from the data files.")]
    private static partial void LogIndexDamaged(ILogger logger, int group, string path, string error, string movedTo);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: the index {Path} was rebuilt from the data files (last instance {LastInstance}). The system variables it held are recovered from the log or from the peers; the group learns before it votes again.")]
    private static partial void LogIndexRebuilt(ILogger logger, int group, string path, ulong lastInstance);

    private static LogStorageException IndexDamaged(int groupIndex, string path, Microsoft.Data.Sqlite.SqliteException e) =>
        new($"Group {groupIndex}: the index database {path} is damaged or unreadable ({e.Message}). Besides the index it holds the group's system and master variables, min chosen instance and delete floor, which the data files cannot restore: restore the file from a backup, or retire this node and add a fresh one through a membership change (a node that restarts with an empty folder forgets its promises).",
            groupIndex,
            path,
            -1,
            e);

    private static LogStorageException Damaged(GroupLog group, IndexEntry entry, string path, string reason) =>
        new($"Group {group.GroupIndex}: the record of instance {entry.InstanceId} in data file {path} at offset {entry.Offset} does not match its index row in {group.Index.Path}: {reason}. The data file or the index is damaged.",
            group.GroupIndex,
            path,
            entry.Offset);

    private GroupLog GetGroup(int groupIndex)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if ((uint)groupIndex >= (uint)_groups.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(groupIndex), groupIndex, $"The storage holds groups 0 to {_groups.Length - 1}.");
        }

        return _groups[groupIndex];
    }

}
