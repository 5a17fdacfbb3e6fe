using System.Buffers;
using System.Buffers.Binary;
using Google.Protobuf;
using Microsoft.Win32.SafeHandles;
using Orleans.Paxos.Engine.Hashing;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>Recovery on open: the data files are the truth, the index is repaired from them.</summary>
public sealed partial class FileLogStorage
{
    private const int IndexChunk = 4096;

    /// <summary>
    /// Brings a group's index in line with its data files and opens the current file for appending.
    /// Scans from the last indexed record (from the first data file when there is no index, e.g. a
    /// PhxPaxos <c>vfile</c> folder) to the end, re-indexing every record found, which repairs rows a
    /// crash lost because index writes are not fsynced. A torn tail of the last file is cut off.
    /// </summary>
    private static void Recover(GroupLog group, SyncMark? sharedLogMark)
    {
        lock (group.WriteLock)
        {
            if (group.Index.IsClearPending())
            {
                // A ClearAllLog was interrupted between deleting files and clearing the index: finish it.
                ClearFiles(group);
            }

            if (!File.Exists(group.MetaPath))
            {
                // PhxPaxos creates meta empty and fills it on the first rollover.
                File.WriteAllBytes(group.MetaPath, []);
            }

            if (sharedLogMark is { } mark)
            {
                // Past the shared log's checkpoint nothing is trusted: the shared log holds what was written there.
                CutToSharedLogMark(group, mark);
            }

            var metaFileId = group.ReadMeta();
            var files = group.ListDataFiles();
            if (files.Count > 0 && files[^1] > metaFileId)
            {
                var path = group.DataFilePath(files[^1]);
                throw new LogStorageException(
                    $"Group {group.GroupIndex}: data file {path} is beyond the current file id {metaFileId} recorded in {group.MetaPath}; meta or the folder is damaged.",
                    group.GroupIndex,
                    path,
                    0);
            }

            group.LowestFileId = files.Count > 0 ? files[0] : metaFileId;
            var floor = group.Index.GetFloor();
            var synced = group.Index.GetSynced();
            group.Unsynced.Load();

            // Checking the listed files indexes their records; the scan below still starts where the index ended before
            // (rows of earlier files may have been lost with it), unless a cut removed that row.
            var lastBefore = group.Index.GetLast();
            metaFileId = CheckUnsyncedFiles(group, metaFileId, floor, synced);
            var last = group.Index.GetLast();
            if (lastBefore is not { } before || last is not { } after)
            {
                last = null;
            }
            else if (before.FileId < after.FileId || (before.FileId == after.FileId && before.Offset < after.Offset))
            {
                last = before;
            }

            if (last is { } entry && entry.FileId > metaFileId)
            {
                throw new LogStorageException(
                    $"Group {group.GroupIndex}: the index places instance {entry.InstanceId} in data file {entry.FileId}, beyond the current file id {metaFileId} recorded in {group.MetaPath}.",
                    group.GroupIndex,
                    group.MetaPath,
                    0);
            }

            var (startFile, startOffset) = last is { } l ? (l.FileId, l.Offset) : (group.LowestFileId, 0);
            if (startFile == metaFileId)
            {
                // Pages written after the last fsync reach the disk in any order, and index rows are not fsynced: the
                // records between the end of the fsynced data and the last indexed one may be gone. Scan from there.
                var durableEnd = synced is { } s && s.FileId == metaFileId ? (int)Math.Min(s.Offset, int.MaxValue) : 0;
                startOffset = Math.Min(startOffset, durableEnd);
            }

            var writeOffset = Scan(group, startFile, startOffset, metaFileId, floor, synced, last, out var startRecordCut, out var lastScanned);
            if (startRecordCut && startOffset > 0)
            {
                // The last indexed record itself was torn; earlier records of its instance (a promise
                // before the accept) may sit before it in the same file, so index that file from the start.
                writeOffset = Scan(group, startFile, 0, metaFileId, floor, synced, null, out _, out lastScanned);

                // Rows of records that never reached the disk (non-sync puts indexed before a power loss)
                // may point anywhere past the end of the data; drop them all.
                group.Index.DeleteFrom(metaFileId, checked((int)writeOffset));
            }

            OpenCurrentFile(group, metaFileId, writeOffset);
            var maxIndexed = group.Index.GetMaxInstanceId();
            group.LastInstanceId = maxIndexed > lastScanned || lastScanned is null ? maxIndexed : lastScanned;

            // Whatever a crash left unsynced before the current file is fsynced now, so the list starts empty.
            SyncListedCore(group, null);
        }
    }

    /// <summary>
    /// Checks every data file before <paramref name="metaFileId"/> that <c>vfile/unsynced</c> lists (left by a
    /// roll-over without an fsync) against the end recorded for it. A file whose records end early was torn by a power
    /// loss: it is cut there and every later file is dropped, since records after a gap must not be kept. Returns the
    /// current file id, lowered to the torn file's when it cut one.
    /// </summary>
    private static int CheckUnsyncedFiles(GroupLog group, int metaFileId, DeleteFloor floor, SyncMark? synced)
    {
        List<UnsyncedFiles.Entry> listed;
        lock (group.Unsynced.Gate)
        {
            listed = [.. group.Unsynced.Entries.Where(e => e.FileId >= group.LowestFileId && e.FileId < metaFileId).OrderBy(e => e.FileId)];
        }

        foreach (var entry in listed)
        {
            // A listed file at or above the lowest one cannot have been cleaned: missing, its directory entry was lost
            // (it was never fsynced), so it is torn at 0. Otherwise it is checked as a last file would be: a torn tail
            // is cut, anything else is reported.
            var path = group.DataFilePath(entry.FileId);
            var end = File.Exists(path) ? Scan(group, entry.FileId, 0, entry.FileId, floor, synced, null, out _, out _) : 0;
            if (end == entry.End)
            {
                continue;
            }

            if (end > entry.End)
            {
                throw new LogStorageException(
                    $"Group {group.GroupIndex}: data file {path} holds records up to offset {end}, past offset {entry.End} where {group.Unsynced.Path} says the writer left it; the folder is damaged.",
                    group.GroupIndex,
                    path,
                    entry.End);
            }

            // Torn at `end`: nothing after it was fsynced (a synchronous record would have synced this file first).
            // Later files go before meta is lowered, so that an interrupted cut is found and finished the same way.
            group.Index.DeleteFrom(entry.FileId, checked((int)end));
            for (var fileId = metaFileId; fileId > entry.FileId; fileId--)
            {
                if (File.Exists(group.DataFilePath(fileId)))
                {
                    File.Delete(group.DataFilePath(fileId));
                    group.EventLog.Write($"delete fileid {fileId}");
                }
            }

            DataSync.FlushDirectory(group.DataDirectory);
            group.WriteMeta(entry.FileId);
            lock (group.Unsynced.Gate)
            {
                foreach (var later in group.Unsynced.Entries.Where(e => e.FileId >= entry.FileId).ToList())
                {
                    group.Unsynced.Remove(later);
                }

                WriteList(group);
            }

            group.TailCutAtOpen = true;
            group.EventLog.Write($"truncate fileid {entry.FileId} offset {end}: it was left unsynced and ends before offset {entry.End}; data files after it dropped");
            return entry.FileId;
        }

        return metaFileId;
    }

    /// <summary>Scans data files <paramref name="fromFile"/>..<paramref name="metaFileId"/>, indexing records; returns the write offset in the last one.</summary>
    private static long Scan(
        GroupLog group, int fromFile, int fromOffset, int metaFileId, DeleteFloor floor, SyncMark? synced, IndexEntry? startRecord, out bool startRecordCut, out ulong? lastInstanceId)
    {
        startRecordCut = false;
        lastInstanceId = null;
        var pending = new List<IndexEntry>(IndexChunk);
        ulong? previousId = null;
        var buffer = ArrayPool<byte>.Shared.Rent(64 * 1024);
        Span<byte> header = stackalloc byte[4];
        try
        {
            for (var fileId = fromFile; fileId <= metaFileId; fileId++)
            {
                var path = group.DataFilePath(fileId);
                if (!File.Exists(path))
                {
                    if (fileId == metaFileId)
                    {
                        // Crash between rewriting meta and creating its file: it is created empty on open.
                        startRecordCut |= DropStaleStartRow(group, startRecord, fileId, 0);
                        break;
                    }

                    throw new LogStorageException(
                        $"Group {group.GroupIndex}: data file {path} is missing although {group.MetaPath} names file {metaFileId}.", group.GroupIndex, path, 0);
                }

                var isLastFile = fileId == metaFileId;
                using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
                var fileLength = RandomAccess.GetLength(handle);
                long offset = fileId == fromFile ? fromOffset : 0;
                while (true)
                {
                    var read = RandomAccess.Read(handle, header, offset);
                    if (!isLastFile && (read == 0 || IsZero(header[..read])) && IsZeroFrom(handle, offset, fileLength))
                    {
                        // The writer moved to the next file because the next record did not fit here: the rest
                        // of this file is unused (zeros), not lost data.
                        startRecordCut |= DropStaleStartRow(group, startRecord, fileId, offset);
                        break;
                    }

                    if (read == 0)
                    {
                        ThrowIfDurable(group, synced, fileId, path, offset, "the file ends here");
                        startRecordCut |= DropStaleStartRow(group, startRecord, fileId, offset);
                        break;
                    }

                    if (read < 4)
                    {
                        ThrowUnlessTail(group, isLastFile, path, offset, "the length field is cut short");
                        ThrowIfDurable(group, synced, fileId, path, offset, "the length field is cut short");
                        CutTail(group, handle, fileId, offset, fileLength, pending);
                        startRecordCut |= startRecord is { } s0 && s0.FileId == fileId && s0.Offset == offset;
                        break;
                    }

                    var length = BinaryPrimitives.ReadInt32LittleEndian(header);
                    if (length == 0)
                    {
                        ThrowUnlessTail(group, isLastFile, path, offset, "zeros where a record should start, with data after them");
                        ThrowIfDurable(group, synced, fileId, path, offset, "the data ends here (zeros)");
                        if (IsZeroFrom(handle, offset, fileLength))
                        {
                            startRecordCut |= DropStaleStartRow(group, startRecord, fileId, offset);
                        }
                        else
                        {
                            // Pages written after the last fsync reach the disk in any order, so a power loss can leave
                            // a later page without an earlier one. Nothing past the gap was acknowledged: zero it, or the
                            // next records could end just before a stale one that a later open would read as theirs.
                            CutTail(group, handle, fileId, offset, fileLength, pending);
                            startRecordCut |= startRecord is { } s3 && s3.FileId == fileId && s3.Offset == offset;
                        }

                        break;
                    }

                    var room = Math.Max(fileLength, group.DataFileSize) - offset - 4;
                    if (length < 8 || length > room)
                    {
                        throw new LogStorageException(
                            $"Group {group.GroupIndex}: data file {path} is damaged at offset {offset}: record length {length} is out of range (1..{room} allowed). Records after it cannot be located; restore the file or cut it there with a tool.",
                            group.GroupIndex,
                            path,
                            offset);
                    }

                    if (buffer.Length < length)
                    {
                        ArrayPool<byte>.Shared.Return(buffer);
                        buffer = ArrayPool<byte>.Shared.Rent(length);
                    }

                    var record = buffer.AsSpan(0, length);
                    var got = RandomAccess.Read(handle, record, offset + 4);
                    var reason = got < length ? "the record is cut short" : Validate(record);
                    var instanceId = BinaryPrimitives.ReadUInt64LittleEndian(record);
                    var crc = SkipCrc32.Compute(0, record, SkipCrc32.ValueSkip);
                    var fullCrc = reason is null ? System.IO.Hashing.Crc32.HashToUInt32(record) : 0;
                    if (reason is null && startRecord is { } s1 && s1.FileId == fileId && s1.Offset == offset
                        && (s1.InstanceId != instanceId || s1.Crc != crc || (s1.FullCrc >= 0 && s1.FullCrc != fullCrc)))
                    {
                        reason = $"it differs from its index row (instance {s1.InstanceId}, crc 0x{s1.Crc:x8})";
                    }

                    if (reason is not null)
                    {
                        ThrowUnlessTail(group, isLastFile, path, offset, reason);
                        ThrowIfDurable(group, synced, fileId, path, offset, reason);
                        if (got == length && !LooksTorn(record, offset + 4) && StartsValidRecord(handle, offset + 4 + length, fileLength))
                        {
                            // A torn write leaves nothing valid behind it; a bad record followed by a good one is damage.
                            throw new LogStorageException(
                                $"Group {group.GroupIndex}: data file {path} is damaged at offset {offset}: {reason}, yet a valid record follows it, so it is not a torn write. Restore the file.",
                                group.GroupIndex,
                                path,
                                offset);
                        }

                        CutTail(group, handle, fileId, offset, fileLength, pending);
                        startRecordCut |= startRecord is { } s2 && s2.FileId == fileId && s2.Offset == offset;
                        break;
                    }

                    if (instanceId < previousId)
                    {
                        throw new LogStorageException(
                            $"Group {group.GroupIndex}: data file {path} is damaged at offset {offset}: instance {instanceId} follows instance {previousId}, but instance ids never decrease along the log.",
                            group.GroupIndex,
                            path,
                            offset);
                    }

                    previousId = instanceId;
                    lastInstanceId = instanceId;
                    if (!floor.Covers(instanceId, fileId, offset))
                    {
                        pending.Add(new IndexEntry(instanceId, fileId, checked((int)offset), crc, fullCrc));
                        if (pending.Count == IndexChunk)
                        {
                            group.Index.Upsert(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(pending));
                            pending.Clear();
                        }
                    }

                    offset += 4L + length;
                }

                group.Index.Upsert(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(pending));
                pending.Clear();
                if (isLastFile)
                {
                    return offset;
                }
            }

            return 0;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// Checks that a record (instance id + body) is a complete <see cref="AcceptorStateData"/> of its
    /// instance; returns why not, or null. The size check catches a body whose trailing bytes were
    /// zeroed inside a varint: protobuf writers emit minimal varints, so the re-encoded size then differs.
    /// </summary>
    private static string? Validate(ReadOnlySpan<byte> record)
    {
        var instanceId = BinaryPrimitives.ReadUInt64LittleEndian(record);
        var body = record[8..];
        AcceptorStateData state;
        try
        {
            state = AcceptorStateData.Parser.ParseFrom(body);
        }
        catch (InvalidProtocolBufferException e)
        {
            return "the body is not a valid AcceptorStateData (" + e.Message + ")";
        }

        if (!state.IsInitialized())
        {
            return "the body lacks required AcceptorStateData fields";
        }

        if (state.InstanceID != instanceId)
        {
            return $"the body is for instance {state.InstanceID}, the header for {instanceId}";
        }

        return state.CalculateSize() != body.Length ? "the body has trailing or non-minimal bytes" : null;
    }

    /// <summary>
    /// At the end of the data: when the last indexed record lay here (a tear zeroed it from its first
    /// byte), its row is stale; drop it and report that the start record is gone.
    /// </summary>
    private static bool DropStaleStartRow(GroupLog group, IndexEntry? startRecord, int fileId, long offset)
    {
        if (startRecord is not { } start || start.FileId != fileId || start.Offset < offset)
        {
            return false;
        }

        group.Index.DeleteFrom(fileId, checked((int)offset));
        return true;
    }

    /// <summary>
    /// Whether the record (<paramref name="record"/>, read from <paramref name="fileOffset"/>) lies across a page
    /// boundary with all of its part in one of the two pages reading as zeros: a page the kernel had not written back
    /// when the power went (pages reach the disk in any order). Such a record may be followed by valid ones and still
    /// be a torn write; damage of the medium does not zero a page.
    /// </summary>
    private static bool LooksTorn(ReadOnlySpan<byte> record, long fileOffset)
    {
        const int Page = 4096;
        for (var boundary = ((fileOffset / Page) + 1) * Page; boundary < fileOffset + record.Length; boundary += Page)
        {
            // The record's whole part in the page before the boundary, or in the page after it, reads as zeros.
            var at = (int)(boundary - fileOffset);
            if (IsZero(record[Math.Max(0, at - Page)..at]) || IsZero(record[at..Math.Min(record.Length, at + Page)]))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Whether a complete, valid record starts at <paramref name="offset"/>.</summary>
    private static bool StartsValidRecord(SafeFileHandle handle, long offset, long fileLength)
    {
        Span<byte> header = stackalloc byte[4];
        if (RandomAccess.Read(handle, header, offset) < 4)
        {
            return false;
        }

        var length = BinaryPrimitives.ReadInt32LittleEndian(header);
        if (length < 8 || offset + 4 + length > fileLength)
        {
            return false;
        }

        var record = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            return RandomAccess.Read(handle, record.AsSpan(0, length), offset + 4) == length && Validate(record.AsSpan(0, length)) is null;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(record);
        }
    }

    /// <summary>
    /// Damage before the end of the fsynced data (the mark stored with the index) cannot be a torn write:
    /// those bytes were durable, and some of them may have been acknowledged. Reported, never cut.
    /// </summary>
    private static void ThrowIfDurable(GroupLog group, SyncMark? synced, int fileId, string path, long offset, string reason)
    {
        if (synced is { } mark && mark.Covers(fileId, offset))
        {
            throw new LogStorageException(
                $"Group {group.GroupIndex}: data file {path} is damaged at offset {offset}: {reason}, but the data up to offset {mark.Offset} of file {mark.FileId}.f " +
                "was fsynced (recorded in the index), so this is corruption of durable records, not a torn write, and it is not cut. " +
                $"Remedy: restore the file from a backup, or stop the node, move the folder {group.Directory} aside and restart it: the group is then " +
                "rebuilt from its peers and votes only once that is safe (README, \"Replacing a disk\").",
                group.GroupIndex,
                path,
                offset);
        }
    }

    private static bool IsZero(ReadOnlySpan<byte> bytes) => !bytes.ContainsAnyExcept((byte)0);

    /// <summary>Whether every byte of the file from <paramref name="offset"/> to its end is zero (holes are not read).</summary>
    private static bool IsZeroFrom(SafeFileHandle handle, long offset, long fileLength)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(64 * 1024);
        try
        {
            foreach (var (start, end) in DataSync.DataRanges(handle, offset, fileLength))
            {
                for (var position = Math.Max(start, offset); position < end;)
                {
                    var read = RandomAccess.Read(handle, buffer.AsSpan(0, (int)Math.Min(buffer.Length, end - position)), position);
                    if (read == 0)
                    {
                        return true;
                    }

                    if (!IsZero(buffer.AsSpan(0, read)))
                    {
                        return false;
                    }

                    position += read;
                }
            }

            return true;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Damage may be a torn write only at the end of the last file; anywhere else it is reported.</summary>
    private static void ThrowUnlessTail(GroupLog group, bool isLastFile, string path, long offset, string reason)
    {
        if (!isLastFile)
        {
            throw new LogStorageException(
                $"Group {group.GroupIndex}: data file {path} is damaged at offset {offset}: {reason}. It is not the last data file, so this is not a torn write; restore the file.",
                group.GroupIndex,
                path,
                offset);
        }
    }

    /// <summary>
    /// Cuts a torn tail: zeroes the file from <paramref name="offset"/> (keeping the invariant that unused
    /// space reads as zeros, so len == 0 ends the data), drops index rows at or after it, and logs it.
    /// Records after a torn one were never covered by a completed fsync, so none of them was acknowledged
    /// as durable.
    /// </summary>
    private static void CutTail(GroupLog group, SafeFileHandle handle, int fileId, long offset, long fileLength, List<IndexEntry> pending)
    {
        group.Index.Upsert(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(pending));
        pending.Clear();

        ZeroFrom(handle, offset, fileLength);

        group.Index.DeleteFrom(fileId, checked((int)offset));
        group.TailCutAtOpen = true;
        group.EventLog.Write($"truncate fileid {fileId} offset {offset} filesize {fileLength}");
    }

    /// <summary>Zeroes a file from <paramref name="offset"/> (only the chunks holding data, so a sparse file stays sparse) and flushes it; returns whether anything was zeroed.</summary>
    private static bool ZeroFrom(SafeFileHandle handle, long offset, long fileLength)
    {
        const int Chunk = 64 * 1024;
        var chunk = ArrayPool<byte>.Shared.Rent(Chunk);
        var zeros = new byte[Chunk];
        var any = false;
        try
        {
            // Only the allocated parts: a preallocated data file is sparse, mostly holes that read as zeros.
            foreach (var (start, end) in DataSync.DataRanges(handle, offset, fileLength))
            {
                for (var position = Math.Max(start, offset); position < end; position += Chunk)
                {
                    var count = (int)Math.Min(Chunk, end - position);
                    var read = RandomAccess.Read(handle, chunk.AsSpan(0, count), position);
                    if (chunk.AsSpan(0, read).ContainsAnyExcept((byte)0))
                    {
                        RandomAccess.Write(handle, zeros.AsSpan(0, count), position);
                        any = true;
                    }
                }
            }

            if (any)
            {
                RandomAccess.FlushToDisk(handle);
            }

            return any;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(chunk);
        }
    }
}
