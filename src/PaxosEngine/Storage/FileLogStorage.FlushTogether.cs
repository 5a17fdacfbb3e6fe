namespace Orleans.Paxos.Engine.Storage;

/// <summary>One flush of the disk for the records of several groups (<see cref="LogStorageOptions.FlushFilesTogether"/>).</summary>
/// <remarks>
/// <para>
/// An <c>fdatasync</c> of a data file writes its dirty pages, then, when the blocks under them were newly allocated,
/// the file's metadata that finds them, and flushes the disk's cache. Done for every group of a batch, that is one
/// cache flush per group, as PhxPaxos does it. The flush is the expensive part and it is the same for every file on
/// the device: a flush makes durable every write the device completed before it.
/// </para>
/// <para>
/// So a group's current file is written ahead with zeros (<see cref="ZeroAheadBytes"/> at a time, fsynced with the
/// records before them): below that mark its blocks are allocated, and records written there are overwrites in
/// place with no metadata to write. A batch then starts the write-back of every such group's new records
/// (<c>sync_file_range</c>), waits for each, and fsyncs: each group whose records passed its mark (which writes
/// zeros ahead of them first), and one group per device that has none of those. Each flush comes after the
/// write-backs it covers have completed. The zeros are what the preallocated sparse file read as before, so the
/// files are PhxPaxos's byte for byte.
/// </para>
/// </remarks>
public sealed partial class FileLogStorage
{
    /// <summary>Zeros written ahead of a group's records at a time: about 8,000 small records, fsynced once.</summary>
    internal const int ZeroAheadBytes = 1 << 20;

    private const int PageSize = 4096;

    /// <summary>Zeros for one write ahead: <see cref="ZeroAheadBytes"/> and the rest of a page.</summary>
    private static readonly byte[] Zeros = new byte[ZeroAheadBytes + PageSize];

    /// <summary>
    /// Makes the records just written for <paramref name="groups"/> durable: with one flush per device for the
    /// groups written in place, one <c>fdatasync</c> per group otherwise. Sets each synced group's mark. The
    /// caller holds the groups' write locks.
    /// </summary>
    private void SyncGroups(WriterLane lane, List<GroupLog> groups)
    {
        var syncing = lane.SyncGroups;
        syncing.Clear();
        foreach (var group in groups)
        {
            if (group.NeedsSync)
            {
                // Files the group left without an fsync come first: an acknowledged record must not follow a gap.
                SyncListed(group, null);
                syncing.Add(group);
            }
        }

        if (syncing.Count < 2 || !_flushFilesTogether)
        {
            foreach (var group in syncing)
            {
                FsyncCurrentFile(group);
            }

            return;
        }

        SendHeldBeforeFsync();
        var inPlace = lane.InPlaceGroups;
        var others = lane.OtherGroups;
        var flushed = lane.FlushedDevices;
        try
        {
            foreach (var group in syncing)
            {
                if (!group.DeviceKnown)
                {
                    group.Device = DataSync.InPlaceFlushDevice(group.WriteHandle!);
                    group.DeviceKnown = true;
                }

                if (group.Device is not null && ReferenceEquals(group.InPlaceHandle, group.WriteHandle) && group.WriteOffset <= group.InPlaceEnd)
                {
                    inPlace.Add(group);
                }
                else
                {
                    if (group.Device is not null)
                    {
                        if (UnsyncedBytes(group) >= SparseSyncBytes)
                        {
                            // Zeros ahead of large records would double what the disk writes: the group's own
                            // fdatasync, run beside the others', allocates its blocks instead.
                            group.ZeroedAheadTo = group.WriteOffset;
                        }
                        else
                        {
                            ZeroAhead(group);
                        }
                    }

                    others.Add(group);
                }
            }

            // Start every write-back, then wait for those written in place: the device works on them together.
            foreach (var group in syncing)
            {
                WriteBack(group, wait: false);
            }

            foreach (var group in inPlace)
            {
                WriteBack(group, wait: true);
            }

            // Every other group gets its own fdatasync (its metadata may have changed), which flushes its device. They
            // run at the same time, so that the file system commits their metadata together.
            lane.Fsyncs.Run(others, _fsyncCurrentFile);
            foreach (var group in others)
            {
                if (group.Device is { } device)
                {
                    flushed.Add(device);
                    group.InPlaceHandle = group.WriteHandle;
                    group.InPlaceEnd = group.ZeroedAheadTo;
                }
            }

            // A device none of those flushed: one fdatasync of a group on it flushes it for all of them.
            for (var i = inPlace.Count - 1; i >= 0; i--)
            {
                var device = inPlace[i].Device!.Value;
                if (!flushed.Contains(device))
                {
                    FsyncCurrentFile(inPlace[i]);
                    flushed.Add(device);
                }
            }

            foreach (var group in inPlace)
            {
                group.Synced = new SyncMark(group.CurrentFileId, group.WriteOffset);
            }
        }
        finally
        {
            inPlace.Clear();
            others.Clear();
            flushed.Clear();
            syncing.Clear();
        }
    }

    /// <summary>
    /// The bytes a group has to sync at or above which it writes no zeros ahead of them: with records this large the
    /// zeros cost more disk bandwidth than the group's own <c>fdatasync</c> costs, as that runs beside the others'.
    /// </summary>
    internal const int SparseSyncBytes = 64 * 1024;

    /// <summary>Bytes of the group's current file written since its last fsync.</summary>
    private static long UnsyncedBytes(GroupLog group) =>
        group.WriteOffset - (group.Synced is { } synced && synced.FileId == group.CurrentFileId ? synced.Offset : 0);

    /// <summary>
    /// Writes zeros from the group's write position to <see cref="ZeroAheadBytes"/> past it (page-aligned, within the
    /// file), so that the blocks the next records go to are allocated once the group's <c>fdatasync</c> returns.
    /// </summary>
    private static void ZeroAhead(GroupLog group)
    {
        var end = Math.Min(group.CurrentFileSize, (group.WriteOffset + ZeroAheadBytes + PageSize - 1) / PageSize * PageSize);
        var path = group.DataFilePath(group.CurrentFileId);
        for (var offset = group.WriteOffset; offset < end; offset += Zeros.Length)
        {
            var length = (int)Math.Min(Zeros.Length, end - offset);
            try
            {
                group.Files.WriteZeros(group.WriteHandle!, path, Zeros.AsSpan(0, length), offset);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ObjectDisposedException)
            {
                throw new LogStorageException(
                    $"Group {group.GroupIndex}: writing {length} zero bytes ahead of the records of data file {path} at offset {offset} failed: {e.Message} The storage is stopped and accepts no more writes.",
                    group.GroupIndex,
                    path,
                    offset,
                    e)
                { Operation = LogFileOperation.Write };
            }
        }

        group.ZeroedAheadTo = Math.Max(end, group.WriteOffset);
    }

    /// <summary>Starts (or waits for) the write-back of the group's records written since its last fsync.</summary>
    private static void WriteBack(GroupLog group, bool wait) =>
        WriteBack(group, group.Synced is { } synced && synced.FileId == group.CurrentFileId ? synced.Offset / PageSize * PageSize : 0, wait);

    /// <summary>Starts (or waits for) the write-back of the group's current file from <paramref name="from"/> to its write position.</summary>
    private static void WriteBack(GroupLog group, long from, bool wait)
    {
        var path = group.DataFilePath(group.CurrentFileId);
        try
        {
            group.Files.WriteBack(group.WriteHandle!, path, from, group.WriteOffset - from, wait);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ObjectDisposedException)
        {
            throw new LogStorageException(
                $"Group {group.GroupIndex}: writing back data file {path} up to offset {group.WriteOffset} failed: {e.Message} The storage is stopped and accepts no more writes.",
                group.GroupIndex,
                path,
                group.WriteOffset,
                e)
            { Operation = LogFileOperation.Fsync };
        }
    }
}
