using System.Buffers.Binary;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Orleans.Paxos.Engine.Hashing;
using Orleans.Paxos.Engine.Telemetry;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>The writer thread and its group commit.</summary>
/// <remarks>
/// A put completes once its record is written and fsynced. Its index row follows later, in one SQLite
/// transaction with every other row of the lane's groups (after <see cref="IndexFlushRecords"/> rows,
/// <see cref="IndexFlushBytes"/> bytes of records or <see cref="LogStorageOptions.IndexFlushInterval"/>, whichever
/// comes first): one index transaction per group commit was about a tenth of the CPU a chosen instance costs. Until
/// then readers find the record in <see cref="GroupLog.Unindexed"/>; after a crash recovery indexes it again from the
/// data file, as it always did for records written after the last index commit.
/// </remarks>
public sealed partial class FileLogStorage
{
    /// <summary>Index rows of a lane held back at most; reaching it flushes them at once.</summary>
    internal const int IndexFlushRecords = 1024;

    /// <summary>
    /// Bytes of records held back for their index rows at most: their arrays wait until then for readers, so large
    /// records flush sooner. It bounds that memory, and a flush that gives back a few dozen arrays leaves them in the
    /// pool for the next puts instead of overflowing it.
    /// </summary>
    internal const long IndexFlushBytes = 4L * 1024 * 1024;

    private static readonly Histogram<double> FsyncDuration = PaxosMetrics.Meter.CreateHistogram<double>(
        "paxos.storage.fsync.duration", "ms", "Duration of one fsync of a data file, or of the shared log when it is on.", tags: null, advice: EngineInstruments.LatencyAdvice);

    private static readonly Histogram<int> CommitBatchSize = PaxosMetrics.Meter.CreateHistogram<int>(
        "paxos.storage.commit.batch_size", "{record}", "Records written by one group commit of the log writer.");

    private readonly WriterLane[] _lanes;
    private readonly long _indexFlushTicks;
    private LogStorageException? _failure;
    private long _fsyncCount;

    /// <inheritdoc/>
    /// <remarks>
    /// The value is copied before the call returns, so the caller may reuse its buffer at once. The task
    /// completes on the thread pool, never inline on the writer thread. Within a group instance ids
    /// must not decrease from one put to the next (a group's Paxos loop writes them in order); recovery
    /// relies on that to tell damage from data, as PhxPaxos's does, so a decreasing id is rejected here.
    /// </remarks>
    /// <exception cref="ArgumentException">The instance id is below one already put to the group.</exception>
    public Task PutAsync(int groupIndex, ulong instanceId, ReadOnlyMemory<byte> acceptorStateData, bool sync)
    {
        var completion = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        CheckPut(groupIndex, instanceId, acceptorStateData.Length);
        var failure = Enqueue(groupIndex, instanceId, RecordBytes.RentedCopyOf(acceptorStateData.Span), sync, completion, null);
        return failure is null ? completion.Task : Task.FromException(failure);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// The callback runs once the batch holding the record is written and fsynced: on a writer thread, or,
    /// when the group's writer lane was idle and <see cref="IPutCallback.AllowsCallerWrite"/> is true, on the
    /// calling thread before this method returns (the caller writes the batch itself instead of waking the
    /// writer thread, which saves two thread switches per put).
    /// </remarks>
    public void Put(int groupIndex, ulong instanceId, ReadOnlyMemory<byte> acceptorStateData, bool sync, IPutCallback callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        CheckPut(groupIndex, instanceId, acceptorStateData.Length);
        if (Enqueue(groupIndex, instanceId, RecordBytes.RentedCopyOf(acceptorStateData.Span), sync, null, callback) is { } failure)
        {
            callback.OnPutCompleted(failure);
        }
    }

    /// <inheritdoc/>
    public void PutOwned(int groupIndex, ulong instanceId, byte[] acceptorStateData, bool sync, IPutCallback callback)
    {
        ArgumentNullException.ThrowIfNull(acceptorStateData);
        ArgumentNullException.ThrowIfNull(callback);
        CheckPut(groupIndex, instanceId, acceptorStateData.Length);
        if (Enqueue(groupIndex, instanceId, RecordBytes.Owned(acceptorStateData), sync, null, callback) is { } failure)
        {
            callback.OnPutCompleted(failure);
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// The writer copies the record into its file buffer and readers copy it out under a lock; the array goes back
    /// to the pool when the record's index row is written, or to the garbage collector if the storage stops first or
    /// <see cref="ClearAllLog"/> drops the record.
    /// </remarks>
    public void PutRented(int groupIndex, ulong instanceId, byte[] rented, int length, bool sync, IPutCallback callback)
    {
        ArgumentNullException.ThrowIfNull(rented);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, rented.Length);
        ArgumentNullException.ThrowIfNull(callback);
        CheckPut(groupIndex, instanceId, length, nameof(length));
        if (Enqueue(groupIndex, instanceId, new RecordBytes(rented, length, Rented: true), sync, null, callback) is { } failure)
        {
            callback.OnPutCompleted(failure);
        }
    }

    private void CheckPut(int groupIndex, ulong instanceId, int length, string parameter = "acceptorStateData")
    {
        GetGroup(groupIndex);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(instanceId, (ulong)long.MaxValue);
        if (length > _options.DataFileSize - 12)
        {
            throw new ArgumentOutOfRangeException(
                parameter,
                length,
                $"A record of {length + 12} bytes does not fit in a data file of {_options.DataFileSize} bytes.");
        }
    }

    /// <summary>Queues a checked put whose bytes the storage now holds (<see cref="CheckPut"/> came first).</summary>
    private LogStorageException? Enqueue(int groupIndex, ulong instanceId, RecordBytes snapshot, bool sync, TaskCompletionSource? completion, IPutCallback? callback)
    {
        var failure = Volatile.Read(ref _failure);
        if (failure is not null)
        {
            return Stopped(failure);
        }

        var group = _groups[groupIndex];
        var lane = LaneOf(group);

        // One copy serves the writer and the readers that come before the index row.
        lock (lane.QueueLock)
        {
            if (lane.Stopping || instanceId < group.LastInstanceId)
            {
                ObjectDisposedException.ThrowIf(lane.Stopping, this);
                throw new ArgumentException(
                    $"Group {groupIndex}: instance {instanceId} is below instance {group.LastInstanceId}, which was already put; instance ids of a group must not decrease.",
                    nameof(instanceId));
            }

            group.LastInstanceId = instanceId;
            group.Unindexed[instanceId] = snapshot;
            lane.Incoming.Add(new PendingPut(groupIndex, instanceId, snapshot, sync, completion, callback));
            if (lane.WriterActive)
            {
                // Whoever writes now takes this put with its next batch (group commit).
                return null;
            }

            if (callback is null || !callback.AllowsCallerWrite)
            {
                // PutAsync never blocks its caller: the writer thread takes it.
                Monitor.Pulse(lane.QueueLock);
                return null;
            }

            lane.WriterActive = true;
        }

        WriteOneBatch(lane);
        return null;
    }

    /// <summary>
    /// Writes the lane's queue as one batch on the calling thread, which found the lane idle and made
    /// itself its writer: no hand-off to the writer thread when nothing else is being written. Puts that
    /// arrive meanwhile are left to the writer thread, so a caller writes one batch at most.
    /// </summary>
    private void WriteOneBatch(WriterLane lane)
    {
        List<PendingPut> batch;
        lock (lane.QueueLock)
        {
            batch = lane.TakeIncoming();
        }

        CommitBatch(lane, batch);
        batch.Clear();
        FlushIndexIfDue(lane);
        lock (lane.QueueLock)
        {
            lane.WriterActive = false;
            if (lane.Incoming.Count > 0 || lane.Stopping || IsCheckpointDue(lane))
            {
                Monitor.Pulse(lane.QueueLock);
            }
        }
    }

    private void FlushIndexIfDue(WriterLane lane)
    {
        if (lane.IndexPendingRows >= IndexFlushRecords || lane.IndexPendingBytes >= IndexFlushBytes || (lane.IndexDue != 0 && Stopwatch.GetTimestamp() >= lane.IndexDue))
        {
            FlushIndex(lane);
        }
    }

    private static LogStorageException Stopped(LogStorageException failure) =>
        new($"The log storage is stopped after an earlier write failure and accepts no more writes: {failure.Message}", failure);

    private WriterLane LaneOf(GroupLog group) => _lanes[group.GroupIndex % _lanes.Length];

    private void WriterLoop(WriterLane lane)
    {
        var flushTimeoutMs = (int)Math.Clamp(_indexFlushTicks * 1000 / Stopwatch.Frequency, 1, int.MaxValue);
        while (true)
        {
            List<PendingPut>? batch = null;
            var stopping = false;
            lock (lane.QueueLock)
            {
                while (true)
                {
                    if (!lane.WriterActive)
                    {
                        if (lane.Incoming.Count > 0)
                        {
                            batch = lane.TakeIncoming();
                            break;
                        }

                        if (lane.Stopping || (lane.IndexDue != 0 && Stopwatch.GetTimestamp() >= lane.IndexDue) || IsCheckpointDue(lane))
                        {
                            stopping = lane.Stopping;
                            break;
                        }
                    }

                    // While a caller writes, or rows are held back, wake up in time to write their index rows.
                    var waitMs = lane.WriterActive
                        ? flushTimeoutMs
                        : lane.IndexDue == 0
                            ? Timeout.Infinite
                            : (int)Math.Clamp(Math.Ceiling(Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), lane.IndexDue).TotalMilliseconds), 1, int.MaxValue);
                    Monitor.Wait(lane.QueueLock, waitMs);
                }

                lane.WriterActive = true;
            }

            if (batch is null)
            {
                // Idle with rows held back (their time is up), a shared-log checkpoint due, or stopping.
                if (IsCheckpointDue(lane))
                {
                    _ = CheckpointSharedLog();
                }

                FlushIndex(lane);
                if (stopping)
                {
                    return;
                }
            }
            else
            {
                CommitBatch(lane, batch);
                batch.Clear();
                FlushIndexIfDue(lane);
            }

            lock (lane.QueueLock)
            {
                lane.WriterActive = false;
            }
        }
    }

    /// <summary>Writes the held-back index rows of every group of the lane. Never throws; a failure stops the storage.</summary>
    private void FlushIndex(WriterLane lane)
    {
        foreach (var group in lane.IndexGroups)
        {
            lock (group.WriteLock)
            {
                try
                {
                    if (Volatile.Read(ref _failure) is null)
                    {
                        IndexPending(group);
                    }
                }
                catch (LogStorageException e)
                {
                    Fail(e);
                }
            }
        }

        lane.IndexGroups.Clear();
        lane.IndexPendingRows = 0;
        lane.IndexPendingBytes = 0;
        lane.IndexDue = 0;
    }

    /// <summary>Writes a group's held-back index rows and retires their unindexed copies. The caller holds the group's write lock.</summary>
    private static void IndexPending(GroupLog group)
    {
        if (group.PendingIndex.Count > 0)
        {
            IndexBatch(group);
            group.PendingIndex.Clear();
        }

        // Indexed now: readers go through the index again. A newer put of the same instance keeps its
        // own entry, since only this exact snapshot is removed. Once out of the map under the readers' lock, no
        // reader can reach a snapshot, and its array can go back to the pool.
        lock (group.SnapshotLock)
        {
            foreach (var snapshot in group.PendingSnapshots)
            {
                group.Unindexed.TryRemove(snapshot);
            }
        }

        foreach (var snapshot in group.PendingSnapshots)
        {
            snapshot.Value.Release();
        }

        group.PendingSnapshots.Clear();
    }

    /// <summary>Writes and fsyncs one batch, holds back its index rows, then completes its tasks. Never throws.</summary>
    private void CommitBatch(WriterLane lane, List<PendingPut> batch)
    {
        var batchGroups = lane.BatchGroups;
        var failure = Volatile.Read(ref _failure);
        if (failure is null)
        {
            CommitBatchSize.Record(batch.Count);
            try
            {
                foreach (var put in batch)
                {
                    var group = _groups[put.GroupIndex];
                    if (!group.InBatch)
                    {
                        // Held until the batch is indexed so that ClearAllLog never sees half a batch.
                        if (!Monitor.TryEnter(group.WriteLock))
                        {
                            // Another thread (a flush of the index, the cleaner) has the group: what this thread
                            // holds to send leaves before it waits.
                            Transport.NetworkTransport.SendHeldBeforeBlocking();
                            Monitor.Enter(group.WriteLock);
                        }

                        group.InBatch = true;
                        batchGroups.Add(group);
                    }

                    Append(group, put);
                }

                foreach (var group in batchGroups)
                {
                    WriteBuffer(group);
                }

                if (_sharedLog is not null)
                {
                    // One write and one fdatasync of the shared log make the whole batch durable.
                    WriteSharedLog(lane, batch, batchGroups);
                }
                else
                {
                    SyncGroups(lane, batchGroups);
                }

                foreach (var group in batchGroups)
                {
                    if (lane.IndexGroups.Add(group) && lane.IndexDue == 0)
                    {
                        lane.IndexDue = Stopwatch.GetTimestamp() + _indexFlushTicks;
                    }
                }

                lane.IndexPendingRows += batch.Count;
                foreach (var put in batch)
                {
                    lane.IndexPendingBytes += put.Value.Length;
                }
            }
            catch (Exception e)
            {
                failure = Fail(e as LogStorageException
                    ?? new LogStorageException("The log writer failed unexpectedly; the storage is stopped.", e));
            }
            finally
            {
                foreach (var group in batchGroups)
                {
                    group.InBatch = false;
                    group.NeedsSync = false;
                    group.BufferLength = 0;
                    Monitor.Exit(group.WriteLock);
                }

                batchGroups.Clear();
            }
        }
        else
        {
            failure = Stopped(failure);
        }

        // On a writer thread, the replies the completions send (one per record, often to the same peer) go together.
        var batching = lane.Thread == Thread.CurrentThread ? CompletionBatching : null;
        batching?.HoldSends();
        try
        {
            foreach (var put in batch)
            {
                if (failure is not null)
                {
                    // Not durable: readers must not see it.
                    _groups[put.GroupIndex].Unindexed.TryRemove(KeyValuePair.Create(put.InstanceId, put.Value));
                }

                if (put.Callback is { } callback)
                {
                    callback.OnPutCompleted(failure);
                }
                else if (failure is null)
                {
                    put.Completion!.TrySetResult();
                }
                else
                {
                    put.Completion!.TrySetException(failure);
                }
            }
        }
        finally
        {
            batching?.SendHeld();
        }

        if (failure is null && lane.Thread == Thread.CurrentThread && IsCheckpointDue(lane))
        {
            // Only the writer thread takes a checkpoint (an fsync of every group written since the last one); a
            // caller that wrote its own batch leaves it to that thread, which it wakes on release.
            _ = CheckpointSharedLog();
        }
    }

    /// <summary>
    /// Whether the shared log needs a checkpoint: a data file rolled over, or its records reached the threshold. Never
    /// once the storage has failed (it writes nothing more).
    /// </summary>
    private bool IsCheckpointDue(WriterLane lane) =>
        _sharedLog is { } log && (lane.SharedLogCheckpointDue || log.RecordBytes >= _options.SharedLogCheckpointBytes) && Volatile.Read(ref _failure) is null;

    /// <summary>Appends one record to the group's batch buffer, rolling over to a new file when it does not fit.</summary>
    private void Append(GroupLog group, PendingPut put)
    {
        var recordLength = 12 + put.Value.Length;
        if (group.WriteOffset + recordLength > group.CurrentFileSize)
        {
            WriteBuffer(group);
            Rollover(group, put.Sync);
        }
        else if (group.BufferLength + recordLength > GroupLog.MaxBufferedBytes)
        {
            WriteBuffer(group);
        }

        if (group.BufferLength == 0)
        {
            group.BufferFileOffset = group.WriteOffset;
        }

        group.EnsureBufferCapacity(recordLength);
        var record = group.Buffer.AsSpan(group.BufferLength, recordLength);
        BinaryPrimitives.WriteInt32LittleEndian(record, 8 + put.Value.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(record[4..], put.InstanceId);
        put.Value.Span.CopyTo(record[12..]);

        // PhxPaxos's index crc: instance id (8 bytes) then the body, every 8th byte.
        var crc = SkipCrc32.Compute(0, record[4..], SkipCrc32.ValueSkip);
        group.PendingIndex.Add(new IndexEntry(put.InstanceId, group.CurrentFileId, checked((int)group.WriteOffset), crc, System.IO.Hashing.Crc32.HashToUInt32(record[4..])));
        group.PendingSnapshots.Add(KeyValuePair.Create(put.InstanceId, put.Value));
        group.BufferLength += recordLength;
        group.WriteOffset += recordLength;
        group.NeedsSync |= put.Sync;
    }

    /// <summary>Writes the buffered records of a group to its current file with one call.</summary>
    private static void WriteBuffer(GroupLog group)
    {
        if (group.BufferLength == 0)
        {
            return;
        }

        var path = group.DataFilePath(group.CurrentFileId);
        try
        {
            group.Files.Write(group.WriteHandle!, path, group.Buffer.AsSpan(0, group.BufferLength), group.BufferFileOffset);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ObjectDisposedException)
        {
            throw new LogStorageException(
                $"Group {group.GroupIndex}: writing {group.BufferLength} bytes to data file {path} at offset {group.BufferFileOffset} failed: {e.Message} The storage is stopped and accepts no more writes.",
                group.GroupIndex,
                path,
                group.BufferFileOffset,
                e)
            { Operation = LogFileOperation.Write };
        }

        group.BufferLength = 0;
    }

    private void Fsync(GroupLog group, Microsoft.Win32.SafeHandles.SafeFileHandle handle, int fileId)
    {
        SendHeldBeforeFsync();
        var started = Stopwatch.GetTimestamp();
        var path = group.DataFilePath(fileId);
        try
        {
            group.Files.Flush(handle, path, dataOnly: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ObjectDisposedException)
        {
            throw new LogStorageException(
                $"Group {group.GroupIndex}: fsync of data file {path} failed (written up to offset {group.WriteOffset}): {e.Message} The storage is stopped and accepts no more writes.",
                group.GroupIndex,
                path,
                group.WriteOffset,
                e)
            { Operation = LogFileOperation.Fsync };
        }

        Interlocked.Increment(ref _fsyncCount);
        FsyncDuration.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
    }

    /// <summary>
    /// Before any fsync: a thread that writes its own batch (a loop thread) may hold frames it sent, which must not
    /// wait for the disk. Nothing to do on a writer thread, which holds only while it completes a batch.
    /// </summary>
    private void SendHeldBeforeFsync() => CompletionBatching?.FlushHeld();

    /// <summary>Fsyncs the group's current data file and moves its synced mark to the write position. The caller holds the group's write lock.</summary>
    private void FsyncCurrentFile(GroupLog group)
    {
        Fsync(group, group.WriteHandle!, group.CurrentFileId);
        group.Synced = new SyncMark(group.CurrentFileId, group.WriteOffset);
    }

    /// <summary>
    /// Starts the next data file: make the old one durable or list it as unsynced, rewrite and fsync <c>meta</c>,
    /// then create and preallocate the new file.
    /// </summary>
    /// <remarks>
    /// When nothing waiting needs an fsync (<paramref name="syncPut"/> and the batch's earlier records are all
    /// non-sync), the old file is not fsynced, as in PhxPaxos: it is listed in <c>vfile/unsynced</c> with its end
    /// before <c>meta</c> moves on, so that recovery can cut it if a power loss tears it (<see cref="UnsyncedFiles"/>).
    /// Otherwise it is fsynced (after every listed file, since what is acknowledged next must not follow a gap), so
    /// that damage in any file but the last and the listed ones can only be media damage, which recovery reports.
    /// </remarks>
    private void Rollover(GroupLog group, bool syncPut)
    {
        var oldFileId = group.CurrentFileId;
        var oldEnd = group.WriteOffset;
        var unsynced = group.Synced is not { } synced || synced.FileId != oldFileId || synced.Offset < oldEnd;
        if (unsynced && _sharedLog is null && !syncPut && !group.NeedsSync)
        {
            LeaveUnsynced(group, oldFileId, oldEnd);
        }
        else if (unsynced)
        {
            SyncListed(group, null);
            FsyncCurrentFile(group);
        }

        if (_sharedLog is not null)
        {
            // The next checkpoint moves the group's mark into the new file, so the old one can be cleaned.
            _lanes[0].SharedLogCheckpointDue = true;
        }

        var newFileId = oldFileId + 1;
        var path = group.DataFilePath(newFileId);
        try
        {
            if (File.Exists(path) && new FileInfo(path).Length != 0)
            {
                throw new LogStorageException(
                    $"Group {group.GroupIndex}: cannot roll over to data file {path}: it already exists and is not empty.", group.GroupIndex, path, 0);
            }

            try
            {
                group.WriteMeta(newFileId);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new LogStorageException(
                    $"Group {group.GroupIndex}: rewriting {group.MetaPath} to start data file {newFileId} failed: {e.Message} The storage is stopped and accepts no more writes.",
                    group.GroupIndex,
                    group.MetaPath,
                    0,
                    e)
                { Operation = LogFileOperation.Meta };
            }

            // The new file's directory entry is not fsynced separately (.NET cannot open a directory
            // handle); on ext4/xfs the first fsync of the file commits the journal that created it, and
            // recovery recreates a missing meta+1 file as empty.
            var handle = group.OpenForAppend(newFileId, out var fileSize);
            group.WriteHandle!.Dispose();
            group.WriteHandle = handle;
            group.CurrentFileId = newFileId;
            group.WriteOffset = 0;
            group.CurrentFileSize = fileSize;
        }
        catch (Exception e) when (e is IOException and not LogStorageException or UnauthorizedAccessException)
        {
            throw new LogStorageException(
                $"Group {group.GroupIndex}: creating and preallocating data file {path} (rolling over from {oldFileId}.f) failed: {e.Message} The storage is stopped and accepts no more writes.",
                group.GroupIndex,
                path,
                0,
                e)
            { Operation = LogFileOperation.Preallocate };
        }

        group.EventLog.Write($"new file expand ok, fileid {newFileId} filesize {group.CurrentFileSize}");
    }

    private static void IndexBatch(GroupLog group)
    {
        try
        {
            group.Index.Upsert(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(group.PendingIndex), group.Synced);
        }
        catch (Microsoft.Data.Sqlite.SqliteException e)
        {
            throw new LogStorageException(
                $"Group {group.GroupIndex}: indexing {group.PendingIndex.Count} records in {group.Index.Path} failed: {e.Message} The storage is stopped and accepts no more writes.",
                group.GroupIndex,
                group.Index.Path,
                -1,
                e)
            { Operation = LogFileOperation.Index };
        }
    }

    /// <summary>
    /// One writer thread and its queue. Groups are spread over the lanes so that the fsyncs of
    /// different groups' files run at the same time (the disk merges them into one journal commit),
    /// while each group's records stay in order on one thread.
    /// </summary>
    private sealed class WriterLane
    {
        public object QueueLock { get; } = new();

        public List<GroupLog> BatchGroups { get; } = [];

        /// <summary>The batch's groups that need an fsync, those written in place, and the devices flushed (writer only).</summary>
        public List<GroupLog> SyncGroups { get; } = [];

        /// <inheritdoc cref="SyncGroups"/>
        public List<GroupLog> InPlaceGroups { get; } = [];

        /// <inheritdoc cref="SyncGroups"/>
        public List<GroupLog> OtherGroups { get; } = [];

        /// <inheritdoc cref="SyncGroups"/>
        public List<ulong> FlushedDevices { get; } = [];

        /// <summary>Runs the fsyncs of the batch's groups that are not written in place at the same time (writer only).</summary>
        public ParallelFsyncs<GroupLog> Fsyncs { get; } = new("Paxos log writer");

        public List<PendingPut> Incoming { get; set; } = [];

        public List<PendingPut> Draining { get; set; } = [];

        public bool Stopping { get; set; }

        /// <summary>Swaps the queue with the drained list and returns the puts queued so far. Under <see cref="QueueLock"/>.</summary>
        public List<PendingPut> TakeIncoming()
        {
            var batch = Incoming;
            Incoming = Draining;
            Draining = batch;
            return batch;
        }

        /// <summary>Whether a thread (the writer thread or a caller) is writing a batch or index rows; guarded by <see cref="QueueLock"/>. Only that thread touches the lane's batch state.</summary>
        public bool WriterActive { get; set; }

        /// <summary>A data file rolled over since the last shared-log checkpoint (writer only).</summary>
        public bool SharedLogCheckpointDue { get; set; }

        /// <summary>The shared-log records of the batch being written (writer only).</summary>
        public List<SharedLogRecord> SharedRecords { get; } = [];

        /// <summary>Groups with index rows held back (writer thread only).</summary>
        public HashSet<GroupLog> IndexGroups { get; } = [];

        /// <summary>Index rows held back (writer thread only).</summary>
        public int IndexPendingRows { get; set; }

        /// <summary>Bytes of the records whose index rows are held back (writer thread only).</summary>
        public long IndexPendingBytes { get; set; }

        /// <summary>Stopwatch timestamp by which the held-back rows are written; 0 when none are (read under <see cref="QueueLock"/> by the writer only).</summary>
        public long IndexDue { get; set; }

        public Thread? Thread { get; set; }
    }

    /// <summary>
    /// One queued put; <paramref name="Value"/> is the storage's (its own copy, or an array handed over by
    /// <see cref="PutOwned"/> or <see cref="PutRented"/>), also served to readers until indexed.
    /// </summary>
    private readonly record struct PendingPut(int GroupIndex, ulong InstanceId, RecordBytes Value, bool Sync, TaskCompletionSource? Completion, IPutCallback? Callback);
}
