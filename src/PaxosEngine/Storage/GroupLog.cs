using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Globalization;
using Microsoft.Win32.SafeHandles;
using Orleans.Paxos.Engine.Hashing;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>
/// The files of one group: <c>g&lt;N&gt;/index.db</c> and <c>g&lt;N&gt;/vfile/{meta,LOG,&lt;n&gt;.f}</c>.
/// </summary>
/// <remarks>
/// Locking: the append state (<see cref="CurrentFileId"/>, <see cref="WriteOffset"/>, the write handle
/// and the batch scratch) belongs to the storage's writer thread while it holds <see cref="WriteLock"/>;
/// <c>ClearAllLog</c> and recovery take the same lock to replace it. <see cref="FilesLock"/> is held
/// shared by readers and exclusively by whoever deletes or closes data files, so a read never races
/// with the deletion of its file. <see cref="MaintenanceLock"/> serializes DeleteBefore and ClearAllLog.
/// </remarks>
internal sealed class GroupLog : IDisposable
{
    /// <summary>A batch buffer above this size is written out before more records are appended.</summary>
    internal const int MaxBufferedBytes = 1 << 20;

    private readonly ConcurrentDictionary<int, SafeFileHandle> _readHandles = new();
    private readonly object _readHandlesLock = new();

    public GroupLog(int groupIndex, string directory, int dataFileSize, LogFileOperations files)
    {
        Files = files;
        GroupIndex = groupIndex;
        Directory = directory;
        DataDirectory = System.IO.Path.Combine(directory, "vfile");
        MetaPath = System.IO.Path.Combine(DataDirectory, "meta");
        DataFileSize = dataFileSize;
        System.IO.Directory.CreateDirectory(DataDirectory);
        EventLog = new DataFileEventLog(System.IO.Path.Combine(DataDirectory, "LOG"));
        Unsynced = new UnsyncedFiles(System.IO.Path.Combine(DataDirectory, UnsyncedFiles.FileName), files);
        var indexPath = System.IO.Path.Combine(directory, IndexDatabase.FileName);
        IndexIsNew = !File.Exists(indexPath);
        Index = new IndexDatabase(indexPath, files);
    }

    /// <summary>The data files left by a roll-over that may hold writes no fsync covered yet (<c>vfile/unsynced</c>).</summary>
    public UnsyncedFiles Unsynced { get; }

    /// <summary>The index database did not exist when the group was opened (a new group, a lost index, or a PhxPaxos folder).</summary>
    public bool IndexIsNew { get; }

    /// <summary>The index was built anew from data files that held records: what it alone kept (system variables) is gone.</summary>
    public bool IndexRebuilt { get; set; }

    /// <summary>Whether recovery at open cut a torn tail from the last data file.</summary>
    public bool TailCutAtOpen { get; set; }

    /// <summary>The file operations that can fail on a full or failing disk.</summary>
    public LogFileOperations Files { get; }

    public int GroupIndex { get; }

    public string Directory { get; }

    public string DataDirectory { get; }

    public string MetaPath { get; }

    public int DataFileSize { get; }

    public IndexDatabase Index { get; }

    public DataFileEventLog EventLog { get; }

    public object WriteLock { get; } = new();

    public object MaintenanceLock { get; } = new();

    public ReaderWriterLockSlim FilesLock { get; } = new(LockRecursionPolicy.NoRecursion);

    /// <summary>The file appended to (the id in <c>meta</c>).</summary>
    public int CurrentFileId { get; set; }

    /// <summary>Where the next record of the current file goes.</summary>
    public long WriteOffset { get; set; }

    /// <summary>Preallocated size of the current file.</summary>
    public long CurrentFileSize { get; set; }

    public SafeFileHandle? WriteHandle { get; set; }

    /// <summary>The lowest data file id that may still exist (files below it were deleted).</summary>
    public int LowestFileId { get; set; }

    /// <summary>The highest instance id put so far (recovered from the log on open); guarded by the storage's queue lock.</summary>
    public ulong? LastInstanceId { get; set; }

    // ---- batch scratch, owned by the writer thread while it holds WriteLock ----

    public byte[] Buffer { get; set; } = new byte[64 * 1024];

    public int BufferLength { get; set; }

    public long BufferFileOffset { get; set; }

    public bool NeedsSync { get; set; }

    private volatile DataFilePathEntry? _lastPath;

    /// <summary>
    /// The handle of the current file for which <see cref="InPlaceEnd"/> holds (a new handle, as after a roll-over or
    /// a clear, starts with nothing known).
    /// </summary>
    public SafeFileHandle? InPlaceHandle { get; set; }

    /// <summary>
    /// Everything of the current file below this offset was written (records, or zeros ahead of them) and made
    /// durable by an <c>fdatasync</c>, so its blocks are allocated: records written below it are overwrites in place,
    /// which a write-back and a flush of the device make durable without the file's metadata.
    /// </summary>
    public long InPlaceEnd { get; set; }

    /// <summary>Where the zeros written ahead of the records in this batch end; becomes <see cref="InPlaceEnd"/> once fsynced.</summary>
    public long ZeroedAheadTo { get; set; }

    /// <summary>
    /// The device of the group's data files (<c>st_dev</c>) when in-place overwrites there are made durable by any
    /// flush of that device (<see cref="DataSync.InPlaceFlushDevice"/>), once looked up; null otherwise.
    /// </summary>
    public ulong? Device { get; set; }

    /// <summary>Whether <see cref="Device"/> was looked up.</summary>
    public bool DeviceKnown { get; set; }

    /// <summary>
    /// The end of the data the last completed fsync covered: (file id, offset), or null before the first.
    /// Stored with each index flush, so that recovery can tell a torn write (past it) from damage (before it).
    /// </summary>
    public SyncMark? Synced { get; set; }

    /// <summary>
    /// With the shared log: the data file of the group's last checkpoint, which recovery may cut back to, so the
    /// log cleaner keeps it. <see cref="int.MaxValue"/> without the shared log.
    /// </summary>
    public int SharedLogMarkFileId { get; set; } = int.MaxValue;

    /// <summary>With the shared log: records were written to the group's data file since the last checkpoint. Under <see cref="WriteLock"/>.</summary>
    public bool SharedLogDirty { get; set; }

    /// <summary>
    /// With the shared log: how far the write-back of the group's data file was started, (file id, offset), or null
    /// before the first. Under <see cref="WriteLock"/>.
    /// </summary>
    public SyncMark? WriteBackStarted { get; set; }

    public bool InBatch { get; set; }

    /// <summary>Rows of records already durable in the data files but not yet written to the index (writer thread, under <see cref="WriteLock"/>).</summary>
    public List<IndexEntry> PendingIndex { get; } = [];

    /// <summary>
    /// The <see cref="Unindexed"/> entries that the next index flush retires, in put order; the flush gives their
    /// rented arrays back to the pool once they are out of the map.
    /// </summary>
    public List<KeyValuePair<ulong, RecordBytes>> PendingSnapshots { get; } = [];

    /// <summary>
    /// Held while a reader copies an <see cref="Unindexed"/> record and while the index flush retires records, so that
    /// a rented array goes back to its pool only once no reader can still be copying it.
    /// </summary>
    public object SnapshotLock { get; } = new();

    /// <summary>
    /// Records put but not yet in the index, newest per instance: <see cref="FileLogStorage.Get"/>
    /// reads them so that a reader sees every put that returned, even before its batch is indexed
    /// (a group serves catch-up right after it executes an instance whose accept is still being written).
    /// </summary>
    public System.Collections.Concurrent.ConcurrentDictionary<ulong, RecordBytes> Unindexed { get; } = new();

    /// <summary>The path of data file <paramref name="fileId"/> (the last one asked for is kept: the writer asks for the current file with every batch).</summary>
    public string DataFilePath(int fileId)
    {
        var last = _lastPath;
        if (last?.FileId == fileId)
        {
            return last.Path;
        }

        var path = System.IO.Path.Combine(DataDirectory, fileId.ToString(CultureInfo.InvariantCulture) + ".f");
        _lastPath = new DataFilePathEntry(fileId, path);
        return path;
    }

    /// <summary>The ids of the data files present, ascending.</summary>
    public List<int> ListDataFiles()
    {
        var ids = new List<int>();
        foreach (var path in System.IO.Directory.EnumerateFiles(DataDirectory, "*.f"))
        {
            var name = System.IO.Path.GetFileNameWithoutExtension(path);
            if (int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out var id))
            {
                ids.Add(id);
            }
        }

        ids.Sort();
        return ids;
    }

    /// <summary>Reads <c>meta</c>: empty or absent means file 0, as in PhxPaxos.</summary>
    public int ReadMeta()
    {
        if (!File.Exists(MetaPath))
        {
            return 0;
        }

        var bytes = File.ReadAllBytes(MetaPath);
        if (bytes.Length == 0)
        {
            return 0;
        }

        if (bytes.Length != 8)
        {
            throw new LogStorageException(
                $"Group {GroupIndex}: meta damaged: {MetaPath} holds {bytes.Length} bytes, expected 0 or 8.", GroupIndex, MetaPath, 0);
        }

        var fileId = BinaryPrimitives.ReadInt32LittleEndian(bytes);
        var stored = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(4));
        var computed = SkipCrc32.Compute(0, bytes.AsSpan(0, 4), SkipCrc32.MetaSkip);
        if (stored != computed || fileId < 0)
        {
            throw new LogStorageException(
                $"Group {GroupIndex}: meta damaged: {MetaPath} says file id {fileId} with crc 0x{stored:x8}, but the crc of those bytes is 0x{computed:x8}.",
                GroupIndex,
                MetaPath,
                0);
        }

        return fileId;
    }

    /// <summary>Rewrites <c>meta</c> in place with a file id and its crc, then fsyncs it.</summary>
    public void WriteMeta(int fileId)
    {
        Span<byte> bytes = stackalloc byte[8];
        BinaryPrimitives.WriteInt32LittleEndian(bytes, fileId);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes[4..], SkipCrc32.Compute(0, bytes[..4], SkipCrc32.MetaSkip));
        using var handle = File.OpenHandle(MetaPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
        Files.Write(handle, MetaPath, bytes, 0);
        Files.Flush(handle, MetaPath, dataOnly: false);
    }

    /// <summary>Empties <c>meta</c> (file 0) durably.</summary>
    public void ResetMeta()
    {
        using var handle = File.OpenHandle(MetaPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
        RandomAccess.SetLength(handle, 0);
        RandomAccess.FlushToDisk(handle);
    }

    /// <summary>
    /// Opens a data file for appending, preallocating it (sparse) to at least <see cref="DataFileSize"/>
    /// the way PhxPaxos does: one zero byte written at size − 1, so unused space reads as zeros.
    /// </summary>
    public SafeFileHandle OpenForAppend(int fileId, out long fileSize)
    {
        var path = DataFilePath(fileId);
        var handle = File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
        try
        {
            fileSize = RandomAccess.GetLength(handle);
            if (fileSize < DataFileSize)
            {
                Files.Preallocate(handle, path, DataFileSize);
                fileSize = DataFileSize;
            }

            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>A cached read-only handle of a data file. The caller holds <see cref="FilesLock"/> shared.</summary>
    public SafeFileHandle GetReadHandle(int fileId)
    {
        if (_readHandles.TryGetValue(fileId, out var handle))
        {
            return handle;
        }

        lock (_readHandlesLock)
        {
            if (!_readHandles.TryGetValue(fileId, out handle))
            {
                handle = File.OpenHandle(DataFilePath(fileId), FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                _readHandles[fileId] = handle;
            }

            return handle;
        }
    }

    /// <summary>Closes the cached read handle of a file. The caller holds <see cref="FilesLock"/> exclusively.</summary>
    public void CloseReadHandle(int fileId)
    {
        if (_readHandles.TryRemove(fileId, out var handle))
        {
            handle.Dispose();
        }
    }

    /// <summary>Closes every cached read handle. The caller holds <see cref="FilesLock"/> exclusively.</summary>
    public void CloseReadHandles()
    {
        foreach (var fileId in _readHandles.Keys)
        {
            CloseReadHandle(fileId);
        }
    }

    /// <summary>Makes sure the batch buffer can take <paramref name="additional"/> more bytes.</summary>
    public void EnsureBufferCapacity(int additional)
    {
        var needed = BufferLength + additional;
        if (needed > Buffer.Length)
        {
            var grown = new byte[Math.Max(needed, Buffer.Length * 2)];
            Buffer.AsSpan(0, BufferLength).CopyTo(grown);
            Buffer = grown;
        }
    }

    public void Dispose()
    {
        CloseReadHandles();
        WriteHandle?.Dispose();
        WriteHandle = null;
        Index.Dispose();
        FilesLock.Dispose();
    }

    private sealed record DataFilePathEntry(int FileId, string Path);
}
