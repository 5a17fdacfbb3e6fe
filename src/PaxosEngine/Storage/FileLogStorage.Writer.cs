using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Orleans.Paxos.Engine.Hashing;
using Orleans.Paxos.Engine.Telemetry;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>The writer thread and its group commit.</summary>
public sealed partial class FileLogStorage
{
    private static readonly Histogram<double> FsyncDuration = PaxosMetrics.Meter.CreateHistogram<double>(
        "paxos.storage.fsync.duration", "ms", "Duration of one data-file fsync.", tags: null, advice: EngineInstruments.LatencyAdvice);

    private static readonly Histogram<int> CommitBatchSize = PaxosMetrics.Meter.CreateHistogram<int>(
        "paxos.storage.commit.batch_size", "{record}", "Records written by one group commit of the log writer.");

    private readonly WriterLane[] _lanes;
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
        var failure = Enqueue(groupIndex, instanceId, acceptorStateData, sync, completion, null);
        return failure is null ? completion.Task : Task.FromException(failure);
    }

    /// <inheritdoc/>
    /// <remarks>The callback runs on the writer thread once the batch holding the record is written and indexed.</remarks>
    public void Put(int groupIndex, ulong instanceId, ReadOnlyMemory<byte> acceptorStateData, bool sync, IPutCallback callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        if (Enqueue(groupIndex, instanceId, acceptorStateData, sync, null, callback) is { } failure)
        {
            callback.OnPutCompleted(failure);
        }
    }

    private LogStorageException? Enqueue(int groupIndex, ulong instanceId, ReadOnlyMemory<byte> acceptorStateData, bool sync, TaskCompletionSource? completion, IPutCallback? callback)
    {
        GetGroup(groupIndex);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(instanceId, (ulong)long.MaxValue);
        if (acceptorStateData.Length > _options.DataFileSize - 12)
        {
            throw new ArgumentOutOfRangeException(
                nameof(acceptorStateData),
                acceptorStateData.Length,
                $"A record of {acceptorStateData.Length + 12} bytes does not fit in a data file of {_options.DataFileSize} bytes.");
        }

        var failure = Volatile.Read(ref _failure);
        if (failure is not null)
        {
            return Stopped(failure);
        }

        var group = _groups[groupIndex];
        var lane = LaneOf(group);
        var buffer = ArrayPool<byte>.Shared.Rent(acceptorStateData.Length);
        acceptorStateData.Span.CopyTo(buffer);
        lock (lane.QueueLock)
        {
            if (lane.Stopping || instanceId < group.LastInstanceId)
            {
                ReturnBuffer(buffer);
                ObjectDisposedException.ThrowIf(lane.Stopping, this);
                throw new ArgumentException(
                    $"Group {groupIndex}: instance {instanceId} is below instance {group.LastInstanceId}, which was already put; instance ids of a group must not decrease.",
                    nameof(instanceId));
            }

            group.LastInstanceId = instanceId;
            var snapshot = acceptorStateData.ToArray();
            group.Unindexed[instanceId] = snapshot;
            lane.Incoming.Add(new PendingPut(groupIndex, instanceId, buffer, acceptorStateData.Length, sync, completion, callback, snapshot));
            if (lane.Incoming.Count == 1)
            {
                // The writer only waits when the queue is empty, so only the first put needs to wake it.
                Monitor.Pulse(lane.QueueLock);
            }
        }

        return null;
    }

    private static LogStorageException Stopped(LogStorageException failure) =>
        new($"The log storage is stopped after an earlier write failure and accepts no more writes: {failure.Message}", failure);

    private WriterLane LaneOf(GroupLog group) => _lanes[group.GroupIndex % _lanes.Length];

    private void WriterLoop(WriterLane lane)
    {
        while (true)
        {
            List<PendingPut> batch;
            lock (lane.QueueLock)
            {
                while (lane.Incoming.Count == 0 && !lane.Stopping)
                {
                    Monitor.Wait(lane.QueueLock);
                }

                if (lane.Incoming.Count == 0)
                {
                    return;
                }

                batch = lane.Incoming;
                lane.Incoming = lane.Draining;
                lane.Draining = batch;
            }

            CommitBatch(lane, batch);
            batch.Clear();
        }
    }

    /// <summary>Writes, fsyncs and indexes one batch, then completes its tasks. Never throws.</summary>
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
                        Monitor.Enter(group.WriteLock);
                        group.InBatch = true;
                        batchGroups.Add(group);
                    }

                    Append(group, put);
                }

                foreach (var group in batchGroups)
                {
                    WriteBuffer(group);
                }

                foreach (var group in batchGroups)
                {
                    if (group.NeedsSync)
                    {
                        Fsync(group, group.WriteHandle!, group.CurrentFileId);
                    }
                }

                foreach (var group in batchGroups)
                {
                    IndexBatch(group);
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
                    group.PendingIndex.Clear();
                    Monitor.Exit(group.WriteLock);
                }

                batchGroups.Clear();
            }
        }
        else
        {
            failure = Stopped(failure);
        }

        foreach (var put in batch)
        {
            // Indexed now (or failed): readers go through the index again. A newer put of the same
            // instance keeps its own entry, since only this exact snapshot is removed.
            _groups[put.GroupIndex].Unindexed.TryRemove(KeyValuePair.Create(put.InstanceId, put.Snapshot));
            ReturnBuffer(put.Buffer);
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

    /// <summary>Appends one record to the group's batch buffer, rolling over to a new file when it does not fit.</summary>
    private void Append(GroupLog group, PendingPut put)
    {
        var recordLength = 12 + put.Length;
        if (group.WriteOffset + recordLength > group.CurrentFileSize)
        {
            WriteBuffer(group);
            Rollover(group);
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
        BinaryPrimitives.WriteInt32LittleEndian(record, 8 + put.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(record[4..], put.InstanceId);
        put.Buffer.AsSpan(0, put.Length).CopyTo(record[12..]);

        // PhxPaxos's index crc: instance id (8 bytes) then the body, every 8th byte.
        var crc = SkipCrc32.Compute(0, record[4..], SkipCrc32.ValueSkip);
        group.PendingIndex.Add(new IndexEntry(put.InstanceId, group.CurrentFileId, checked((int)group.WriteOffset), crc, System.IO.Hashing.Crc32.HashToUInt32(record[4..])));
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
    /// Starts the next data file: fsync the old one, rewrite and fsync <c>meta</c>, then create and
    /// preallocate the new file. The old file is fsynced even for non-sync records so that damage in
    /// any file but the last can only be media damage, which recovery then reports instead of cutting.
    /// </summary>
    private void Rollover(GroupLog group)
    {
        var oldFileId = group.CurrentFileId;
        Fsync(group, group.WriteHandle!, oldFileId);
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
            group.Index.Upsert(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(group.PendingIndex));
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

        public List<PendingPut> Incoming { get; set; } = [];

        public List<PendingPut> Draining { get; set; } = [];

        public bool Stopping { get; set; }

        public Thread? Thread { get; set; }
    }

    /// <summary>One queued put. The value lives in a pooled buffer until the writer has copied it.</summary>
    private readonly record struct PendingPut(int GroupIndex, ulong InstanceId, byte[] Buffer, int Length, bool Sync, TaskCompletionSource? Completion, IPutCallback? Callback, byte[] Snapshot);
}
