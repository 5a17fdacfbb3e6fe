using System.Globalization;

namespace Orleans.Paxos.Faults.Cluster;

/// <summary>What <see cref="DiskFaults.LoseUnsyncedWrites"/> did.</summary>
/// <param name="Files">Data files that had bytes past their durable end.</param>
/// <param name="Bytes">Non-zero bytes put back to zero.</param>
/// <param name="Untracked">Data files the journal does not mention (left as they are).</param>
public sealed record UnsyncedLoss(int Files, long Bytes, int Untracked);

/// <summary>
/// Damage done to a stopped silo's data folder (the Paxos StoragePath): wipe it, delete its SQLite
/// indexes, or lose what was written but not fsynced, as a power loss would (LazyFS-style).
/// </summary>
public static class DiskFaults
{
    /// <summary>Deletes the whole data folder and the sync journal (a replaced disk).</summary>
    /// <returns>Files deleted.</returns>
    public static int Wipe(string dataDirectory, string? syncJournal)
    {
        ArgumentNullException.ThrowIfNull(dataDirectory);
        var files = Directory.Exists(dataDirectory) ? Directory.EnumerateFiles(dataDirectory, "*", SearchOption.AllDirectories).Count() : 0;
        if (Directory.Exists(dataDirectory))
        {
            Directory.Delete(dataDirectory, recursive: true);
        }

        if (syncJournal is not null)
        {
            // The silo starts a new journal; what was read of the old one no longer applies.
            lock (Journals)
            {
                Journals.Remove(Path.GetFullPath(syncJournal));
            }

            if (File.Exists(syncJournal))
            {
                File.Delete(syncJournal);
            }
        }

        return files;
    }

    /// <summary>Deletes every group's <c>g&lt;N&gt;/index.db</c> with its <c>-wal</c> and <c>-shm</c>.</summary>
    /// <returns>Files deleted.</returns>
    public static int DeleteIndexes(string dataDirectory)
    {
        ArgumentNullException.ThrowIfNull(dataDirectory);
        if (!Directory.Exists(dataDirectory))
        {
            return 0;
        }

        var deleted = 0;
        foreach (var group in Directory.EnumerateDirectories(dataDirectory, "g*"))
        {
            foreach (var name in new[] { "index.db", "index.db-wal", "index.db-shm", "index.db-journal" })
            {
                var path = Path.Combine(group, name);
                if (File.Exists(path))
                {
                    File.Delete(path);
                    deleted++;
                }
            }
        }

        return deleted;
    }

    /// <summary>
    /// Puts every data file (<c>g&lt;N&gt;/vfile/&lt;id&gt;.f</c>) back to what its last fsync made durable:
    /// every byte at or past the durable end the sync journal records for it becomes zero again (data files
    /// are append-only and preallocated with zeros, so that is their content before the lost writes). A file
    /// created (<c>new</c>) but never fsynced loses everything. Call only while the silo is stopped. The
    /// SQLite files (<c>index.db</c>, <c>kv.db</c>) and <c>meta</c> are left as the kill left them: SQLite
    /// syncs through its own calls, which the journal does not see, and <c>meta</c> is fsynced at each rewrite.
    /// </summary>
    public static UnsyncedLoss LoseUnsyncedWrites(string dataDirectory, string syncJournal) => Unsynced(dataDirectory, syncJournal, zero: true);

    /// <summary>
    /// What <see cref="LoseUnsyncedWrites"/> would put back now, without changing anything; safe while the
    /// silo runs (a write racing the count may or may not be seen).
    /// </summary>
    public static UnsyncedLoss CountUnsyncedWrites(string dataDirectory, string syncJournal) => Unsynced(dataDirectory, syncJournal, zero: false);

    private static UnsyncedLoss Unsynced(string dataDirectory, string syncJournal, bool zero)
    {
        ArgumentNullException.ThrowIfNull(dataDirectory);
        ArgumentNullException.ThrowIfNull(syncJournal);
        var durable = ReadJournal(syncJournal);
        int files = 0, untracked = 0;
        long bytes = 0;
        if (!Directory.Exists(dataDirectory))
        {
            return new UnsyncedLoss(0, 0, 0);
        }

        foreach (var path in Directory.EnumerateFiles(dataDirectory, "*.f", SearchOption.AllDirectories).Where(p => Path.GetFileName(Path.GetDirectoryName(p)) == "vfile"))
        {
            if (!durable.TryGetValue(Path.GetFullPath(path), out var end))
            {
                untracked++;
                continue;
            }

            var zeroed = ZeroFrom(path, end, zero);
            if (zeroed > 0)
            {
                files++;
                bytes += zeroed;
            }
        }

        return new UnsyncedLoss(files, bytes, untracked);
    }

    /// <summary>Full path of each data file → its durable end (0 for a file created and never fsynced).</summary>
    public static Dictionary<string, long> ReadJournal(string syncJournal)
    {
        ArgumentNullException.ThrowIfNull(syncJournal);
        var full = Path.GetFullPath(syncJournal);
        lock (Journals)
        {
            if (!Journals.TryGetValue(full, out var state))
            {
                state = new JournalState();
                Journals[full] = state;
            }

            state.Update(full);
            return new Dictionary<string, long>(state.Durable, StringComparer.Ordinal);
        }
    }

    /// <summary>Journals read so far, so that a poll reads only what was appended since (they grow to many MB in a soak).</summary>
    private static readonly Dictionary<string, JournalState> Journals = new(StringComparer.Ordinal);

    private sealed class JournalState
    {
        private long _position;

        public Dictionary<string, long> Durable { get; } = new(StringComparer.Ordinal);

        public void Update(string path)
        {
            if (!File.Exists(path) || new FileInfo(path).Length < _position)
            {
                Reset();
                if (!File.Exists(path))
                {
                    return;
                }
            }

            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            stream.Position = _position;
            var bytes = new byte[stream.Length - _position];
            stream.ReadExactly(bytes);

            // Only whole lines: the last one may still be being written (or was cut by the kill).
            var end = Array.LastIndexOf(bytes, (byte)'\n') + 1;
            foreach (var line in System.Text.Encoding.UTF8.GetString(bytes, 0, end).Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                // "new <path>" or "sync <path> <end>".
                if (line.StartsWith("new ", StringComparison.Ordinal))
                {
                    Durable[line[4..]] = 0;
                }
                else if (line.StartsWith("sync ", StringComparison.Ordinal) && line.LastIndexOf(' ') is var space && space > 5
                    && long.TryParse(line.AsSpan(space + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var synced))
                {
                    var file = line[5..space];
                    Durable[file] = Math.Max(Durable.GetValueOrDefault(file), synced);
                }
            }

            _position += end;
        }

        public void Reset()
        {
            _position = 0;
            Durable.Clear();
        }
    }

    private static long ZeroFrom(string path, long end, bool zero)
    {
        using var file = zero
            ? new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None)
            : new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        var buffer = new byte[64 * 1024];
        long zeroed = 0;
        for (var position = end; position < file.Length; position += buffer.Length)
        {
            file.Position = position;
            var read = file.Read(buffer, 0, (int)Math.Min(buffer.Length, file.Length - position));
            var span = buffer.AsSpan(0, read);
            var nonZero = span.Length - span.Count((byte)0);
            if (nonZero == 0)
            {
                continue;
            }

            zeroed += nonZero;
            if (!zero)
            {
                continue;
            }

            span.Clear();
            file.Position = position;
            file.Write(span);
        }

        if (zero)
        {
            file.Flush(flushToDisk: true);
        }

        return zeroed;
    }
}
