using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>The shared log (<see cref="LogStorageOptions.SharedLog"/>): writing it, checkpoints, and recovery from it.</summary>
/// <remarks>
/// <para>The rule that keeps every acknowledged record: a record is written to its group's data file and then to the
/// shared log; the put completes when the shared log is fsynced. A checkpoint fsyncs every data file written since the
/// previous one and only then records, in the shared log's header, how far each group is durable; records written
/// before it are no longer needed.</para>
/// <para>After a crash a data file may hold anything past its checkpoint mark: the kernel writes unflushed pages back
/// in any order, so a lost record can sit before a surviving one. Recovery therefore trusts nothing past the mark: it
/// cuts each group back to it and writes the shared log's records (every record written since the checkpoint, in
/// order) into the data files again, fsyncs them and takes a checkpoint.</para>
/// </remarks>
public sealed partial class FileLogStorage
{
    /// <summary>New bytes of a group's data file after which the shared log starts their write-back (<see cref="StartWriteBackIfDue"/>).</summary>
    internal const int SharedLogWriteBackBytes = 1 << 20;

    /// <summary>Appends the batch to the shared log and fsyncs it when a put asks for durability. Writer only.</summary>
    private void WriteSharedLog(WriterLane lane, List<PendingPut> batch, List<GroupLog> batchGroups)
    {
        var log = _sharedLog!;
        var records = lane.SharedRecords;
        records.Clear();
        var sync = false;
        foreach (var put in batch)
        {
            records.Add(new SharedLogRecord(put.GroupIndex, put.InstanceId, put.Value));
            sync |= put.Sync;
        }

        try
        {
            // Non-sync records go to the shared log too: a process crash keeps them in the page cache, and
            // recovery, which cuts the data files back to the checkpoint, finds them there.
            log.Append(CollectionsMarshal.AsSpan(records));
        }
        catch (Exception e) when (IsFileError(e))
        {
            throw SharedLogFailed(log, $"Writing {records.Count} records to", e, LogFileOperation.Write);
        }
        finally
        {
            records.Clear();
        }

        if (sync)
        {
            SendHeldBeforeFsync();
            var started = Stopwatch.GetTimestamp();
            try
            {
                log.Flush();
            }
            catch (Exception e) when (IsFileError(e))
            {
                throw SharedLogFailed(log, "fsync of", e, LogFileOperation.Fsync);
            }

            Interlocked.Increment(ref _fsyncCount);
            FsyncDuration.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        }

        foreach (var group in batchGroups)
        {
            group.SharedLogDirty = true;
            StartWriteBackIfDue(group);
        }
    }

    /// <summary>
    /// Starts writing the group's new data-file pages to the disk once <see cref="SharedLogWriteBackBytes"/> of them
    /// have collected (<c>sync_file_range</c> without waiting). Nothing waits for it and nothing counts on it: the
    /// records are durable through the shared log, and a checkpoint still fsyncs the file. It spreads the data files'
    /// write-back over the time between checkpoints, so that a checkpoint's fsyncs do not find up to
    /// <see cref="LogStorageOptions.SharedLogCheckpointBytes"/> of dirty pages to write while every put waits.
    /// </summary>
    private static void StartWriteBackIfDue(GroupLog group)
    {
        if (!DataSync.SupportsWriteBack || group.WriteHandle is null)
        {
            return;
        }

        var from = group.WriteBackStarted is { } started && started.FileId == group.CurrentFileId ? started.Offset : 0;
        if (group.WriteOffset - from < SharedLogWriteBackBytes)
        {
            return;
        }

        WriteBack(group, from, wait: false);

        // Whole pages only: the last partial page is written back again with the next range.
        group.WriteBackStarted = new SyncMark(group.CurrentFileId, group.WriteOffset / PageSize * PageSize);
    }

    /// <summary>
    /// Fsyncs every group written since the last checkpoint, then records in the shared log where each group is durable.
    /// The caller is the lane's writer. Returns the failure (the storage is then stopped), or null.
    /// </summary>
    private LogStorageException? CheckpointSharedLog()
    {
        var log = _sharedLog!;
        try
        {
            foreach (var group in _groups)
            {
                lock (group.WriteLock)
                {
                    if (group.SharedLogDirty && group.WriteHandle is not null)
                    {
                        FsyncCurrentFile(group);
                    }

                    group.SharedLogDirty = false;
                }
            }

            var marks = CurrentMarks();
            try
            {
                log.Checkpoint(marks);
            }
            catch (Exception e) when (IsFileError(e))
            {
                throw SharedLogFailed(log, "Writing a checkpoint to", e, LogFileOperation.Fsync);
            }

            KeepMarkFiles(marks);

            _lanes[0].SharedLogCheckpointDue = false;
            return null;
        }
        catch (LogStorageException e)
        {
            return Fail(e);
        }
    }

    /// <summary>Tells the log cleaner which data file each group's checkpoint mark lies in (recovery may cut back to it).</summary>
    private void KeepMarkFiles(SyncMark[] marks)
    {
        for (var i = 0; i < _groups.Length; i++)
        {
            _groups[i].SharedLogMarkFileId = marks[i].FileId;
        }
    }

    private static bool IsFileError(Exception e) => e is IOException or UnauthorizedAccessException or ObjectDisposedException;

    private static LogStorageException SharedLogFailed(SharedLog log, string what, Exception e, LogFileOperation operation) =>
        new($"{what} the shared log {log.Path} failed: {e.Message} The storage is stopped and accepts no more writes.", -1, log.Path, -1, e)
        {
            Operation = operation,
        };

    /// <summary>Every group's write position: file id and offset.</summary>
    private SyncMark[] CurrentMarks()
    {
        var marks = new SyncMark[_groups.Length];
        for (var i = 0; i < marks.Length; i++)
        {
            lock (_groups[i].WriteLock)
            {
                marks[i] = new SyncMark(_groups[i].CurrentFileId, _groups[i].WriteOffset);
            }
        }

        return marks;
    }

    /// <summary>Makes the calling thread the lane's writer, waiting for a batch being written to finish.</summary>
    private static void AcquireWriter(WriterLane lane)
    {
        lock (lane.QueueLock)
        {
            while (lane.WriterActive)
            {
                // The writer releases the lane without a pulse; look again every millisecond.
                Monitor.Wait(lane.QueueLock, 1);
            }

            lane.WriterActive = true;
        }
    }

    private static void ReleaseWriter(WriterLane lane)
    {
        lock (lane.QueueLock)
        {
            lane.WriterActive = false;
            if (lane.Incoming.Count > 0 || lane.Stopping)
            {
                Monitor.PulseAll(lane.QueueLock);
            }
        }
    }

    /// <summary>
    /// Writes the shared log's records into the groups' data files again (each group's records from where its
    /// recovered log ends), fsyncs them and writes their index rows. Runs on open, before the writer starts.
    /// </summary>
    private void ReplaySharedLog(SharedLogContents contents)
    {
        var touched = new List<GroupLog>();
        var floors = new ulong?[_groups.Length];
        var replayed = 0;
        foreach (var record in contents.Records)
        {
            var group = _groups[record.GroupIndex];
            if (group.LastInstanceId is { } last && record.InstanceId < last)
            {
                // Cut back to the checkpoint, a group's log ends before every record written after it; an earlier
                // instance can only be a record its log already holds.
                continue;
            }

            // The log cleaner may have deleted instances written after the checkpoint: they stay deleted.
            floors[record.GroupIndex] ??= group.Index.GetFloor().Bound;
            if (record.InstanceId < floors[record.GroupIndex])
            {
                continue;
            }

            lock (group.WriteLock)
            {
                Append(group, new PendingPut(record.GroupIndex, record.InstanceId, record.Value, Sync: true, Completion: null, Callback: null));
            }

            group.LastInstanceId = record.InstanceId;
            if (!touched.Contains(group))
            {
                touched.Add(group);
            }

            replayed++;
        }

        foreach (var group in touched)
        {
            lock (group.WriteLock)
            {
                WriteBuffer(group);
                FsyncCurrentFile(group);
                group.NeedsSync = false;
                IndexPending(group);
            }
        }

        if (replayed > 0)
        {
            LogSharedLogReplayed(_logger, replayed, touched.Count, contents.Generation);
        }
    }

    /// <summary>
    /// Cuts a group back to its mark in the shared log's checkpoint: later data files are deleted, the mark's file is
    /// zeroed from the mark on, index rows past it are dropped. Everything past the mark that was acknowledged is in
    /// the shared log, which is replayed afterwards. The caller holds the group's write lock.
    /// </summary>
    private static void CutToSharedLogMark(GroupLog group, SyncMark mark)
    {
        var metaFileId = group.ReadMeta();
        if (mark.FileId > metaFileId)
        {
            // The group was cleared after the checkpoint (a clear takes one before and one after): nothing to cut.
            return;
        }

        var files = group.ListDataFiles();
        var lowest = files.Count > 0 ? files[0] : metaFileId;
        if (mark.FileId < lowest)
        {
            var path = group.DataFilePath(mark.FileId);
            throw new LogStorageException(
                $"Group {group.GroupIndex}: the shared log's checkpoint places the group's durable end in data file {path}, which no longer exists; the folder is damaged. Restore it, or move the node's folder aside and let it rebuild from its peers (README, \"Replacing a disk\").",
                group.GroupIndex,
                path,
                mark.Offset);
        }

        foreach (var fileId in files)
        {
            if (fileId > mark.FileId)
            {
                File.Delete(group.DataFilePath(fileId));
                group.EventLog.Write($"sharedlog delete fileid {fileId}");
            }
        }

        if (metaFileId != mark.FileId)
        {
            group.WriteMeta(mark.FileId);
        }

        var markPath = group.DataFilePath(mark.FileId);
        if (File.Exists(markPath))
        {
            using var handle = File.OpenHandle(markPath, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
            if (ZeroFrom(handle, mark.Offset, RandomAccess.GetLength(handle)))
            {
                group.EventLog.Write($"sharedlog truncate fileid {mark.FileId} offset {mark.Offset}");
            }
        }

        group.Index.DeleteFrom(mark.FileId, checked((int)mark.Offset));
        group.Index.LowerSynced(mark);
    }

    [LoggerMessage(EventId = 1210, Level = LogLevel.Information, Message = "Replayed {Records} records of the shared log into the data files of {Groups} groups (checkpoint generation {Generation}).")]
    private static partial void LogSharedLogReplayed(ILogger logger, int records, int groups, uint generation);
}
