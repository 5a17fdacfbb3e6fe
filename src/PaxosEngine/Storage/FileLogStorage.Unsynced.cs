using System.Diagnostics;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>Data files left by a roll-over without an fsync (<see cref="UnsyncedFiles"/>): listing them and syncing them later.</summary>
public sealed partial class FileLogStorage
{
    private Timer? _unsyncedTimer;

    /// <summary>Starts the timer that syncs listed files once they are <see cref="LogStorageOptions.UnsyncedFileSyncAge"/> old.</summary>
    private void StartUnsyncedTimer()
    {
        if (_sharedLog is not null)
        {
            // Every roll-over fsyncs with the shared log: nothing is ever listed.
            return;
        }

        var period = TimeSpan.FromTicks(Math.Clamp(_options.UnsyncedFileSyncAge.Ticks / 4, TimeSpan.TicksPerMillisecond * 100, TimeSpan.TicksPerSecond));
        _unsyncedTimer = new Timer(_ => SyncAgedFiles(Stopwatch.GetTimestamp()), null, period, period);
    }

    /// <summary>Stops the timer and waits for a run in progress.</summary>
    private void StopUnsyncedTimer()
    {
        if (_unsyncedTimer is { } timer)
        {
            using var stopped = new ManualResetEvent(false);
            if (timer.Dispose(stopped))
            {
                stopped.WaitOne();
            }
        }
    }

    /// <summary>
    /// Lists the file the writer leaves, durably, before <c>meta</c> names the next one; first syncs the oldest
    /// listed file when the list is full. The caller (the writer) holds the group's write lock.
    /// </summary>
    private void LeaveUnsynced(GroupLog group, int fileId, long end)
    {
        UnsyncedFiles.Entry? oldest;
        lock (group.Unsynced.Gate)
        {
            oldest = group.Unsynced.Entries.Count >= UnsyncedFiles.MaxEntries ? group.Unsynced.Entries[0] : null;
        }

        if (oldest is not null)
        {
            SyncListed(group, e => ReferenceEquals(e, oldest));
        }

        lock (group.Unsynced.Gate)
        {
            group.Unsynced.Add(fileId, end);
            WriteList(group);
        }
    }

    /// <summary>
    /// Timer: fsyncs the listed files left at least <see cref="LogStorageOptions.UnsyncedFileSyncAge"/> before
    /// <paramref name="now"/>. By then the kernel has written their pages back, so the fsync costs little and holds
    /// up no writer. Never throws; a failure stops the storage.
    /// </summary>
    internal void SyncAgedFiles(long now)
    {
        var age = (long)(_options.UnsyncedFileSyncAge.TotalSeconds * Stopwatch.Frequency);
        foreach (var group in _groups)
        {
            if (Volatile.Read(ref _failure) is not null || Volatile.Read(ref _disposed) != 0)
            {
                return;
            }

            try
            {
                SyncListed(group, e => e.LeftAt != 0 && now - e.LeftAt >= age);
            }
            catch (LogStorageException e)
            {
                Fail(e);
            }
        }
    }

    /// <summary>
    /// Fsyncs the listed files <paramref name="which"/> picks (all when null), then removes them from the list
    /// durably. Before a record is acknowledged as durable the writer syncs them all: the files before it must be too.
    /// A file deleted meanwhile (cleaned) is simply removed. Runs without the list's lock while it fsyncs, so the
    /// writer can list another file meanwhile.
    /// </summary>
    private void SyncListed(GroupLog group, Func<UnsyncedFiles.Entry, bool>? which)
    {
        // Nearly always empty: the writer asks before every fsync of a synchronous batch, the timer every second.
        // Only the writer adds entries, so a stale count read here by the writer is never a false zero.
        if (group.Unsynced.Entries.Count == 0)
        {
            return;
        }

        SendHeldBeforeFsync();
        Interlocked.Add(ref _fsyncCount, SyncListedCore(group, which));
    }

    /// <summary>The work of <see cref="SyncListed"/>, also run by recovery; returns the number of files fsynced.</summary>
    private static int SyncListedCore(GroupLog group, Func<UnsyncedFiles.Entry, bool>? which)
    {
        List<UnsyncedFiles.Entry> chosen;
        lock (group.Unsynced.Gate)
        {
            chosen = which is null ? [.. group.Unsynced.Entries] : [.. group.Unsynced.Entries.Where(which)];
        }

        if (chosen.Count == 0)
        {
            return 0;
        }

        var synced = 0;
        foreach (var entry in chosen)
        {
            synced += FsyncDataFile(group, entry.FileId) ? 1 : 0;
        }

        lock (group.Unsynced.Gate)
        {
            foreach (var entry in chosen)
            {
                group.Unsynced.Remove(entry);
            }

            WriteList(group);
        }

        return synced;
    }

    /// <summary>Fsyncs a data file that is not the current one; false when it no longer exists.</summary>
    private static bool FsyncDataFile(GroupLog group, int fileId)
    {
        var path = group.DataFilePath(fileId);
        try
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            var started = Stopwatch.GetTimestamp();
            group.Files.Flush(handle, path, dataOnly: true);
            FsyncDuration.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
            return true;
        }
        catch (FileNotFoundException)
        {
            return false;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LogStorageException(
                $"Group {group.GroupIndex}: fsync of data file {path}, left by a roll-over without one, failed: {e.Message} The storage is stopped and accepts no more writes.",
                group.GroupIndex,
                path,
                0,
                e)
            { Operation = LogFileOperation.Fsync };
        }
    }

    /// <summary>Writes the group's list durably. The caller holds the list's lock.</summary>
    private static void WriteList(GroupLog group)
    {
        try
        {
            group.Unsynced.Write();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LogStorageException(
                $"Group {group.GroupIndex}: writing the list of data files that may hold unsynced writes ({group.Unsynced.Path}) failed: {e.Message} The storage is stopped and accepts no more writes.",
                group.GroupIndex,
                group.Unsynced.Path,
                0,
                e)
            { Operation = LogFileOperation.Meta };
        }
    }
}
