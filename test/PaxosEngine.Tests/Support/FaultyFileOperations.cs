using Microsoft.Data.Sqlite;
using Microsoft.Win32.SafeHandles;
using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Engine.Tests.Support;

/// <summary>An error a failing disk reports.</summary>
public enum DiskError
{
    /// <summary>ENOSPC, "No space left on device" (SQLITE_FULL for the index).</summary>
    NoSpace,

    /// <summary>EIO, "Input/output error" (SQLITE_IOERR for the index).</summary>
    Io,
}

/// <summary>
/// The storage's real file operations with injectable failures, and a shadow of what was made durable:
/// every write is remembered until a successful flush of its file makes it durable, or, once a write-back of its
/// file completed, a successful flush of any file (a flush of the disk's cache; the tests keep every file on one
/// device), but only below the end of what the file's own flushes made durable: a write past it needs blocks whose
/// allocation only the file's own flush records. A failed flush leaves
/// it pending, as a kernel that drops dirty pages after a failed fsync would. <see cref="SimulatePowerLoss(Random)"/>
/// then puts back on disk only what was durable. Thread-safe.
/// </summary>
internal sealed class FaultyFileOperations : LogFileOperations
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, byte[]> _durable = [];
    private readonly Dictionary<string, List<(long Offset, byte[] Data)>> _pending = [];
    private readonly Dictionary<string, List<(long Offset, byte[] Data)>> _writtenBack = [];
    private LogFileOperation? _failing;
    private DiskError _error;
    private int _failuresInjected;

    /// <summary>Called with the path before every flush, outside the lock (a test may block here).</summary>
    public Action<string>? BeforeFlush { get; set; }

    /// <summary>Flushes of files with this name do nothing (a disk that lies about fsync); null: none.</summary>
    public string? IgnoreFlushesOf { get; set; }

    /// <summary>Number of calls failed so far.</summary>
    public int FailuresInjected => Volatile.Read(ref _failuresInjected);

    /// <summary>Makes every later call of <paramref name="operation"/> fail with <paramref name="error"/> until <see cref="Heal"/>.</summary>
    public void Fail(LogFileOperation operation, DiskError error)
    {
        lock (_gate)
        {
            _error = error;
            _failing = operation;
        }
    }

    /// <summary>Stops failing.</summary>
    public void Heal()
    {
        lock (_gate)
        {
            _failing = null;
        }
    }

    public override void Write(SafeFileHandle handle, string path, ReadOnlySpan<byte> data, long offset)
    {
        ThrowIfFailing(IsMeta(path) ? LogFileOperation.Meta : LogFileOperation.Write, path, "write");
        base.Write(handle, path, data, offset);
        lock (_gate)
        {
            Pending(path).Add((offset, data.ToArray()));
        }
    }

    public override void Flush(SafeFileHandle handle, string path, bool dataOnly)
    {
        ThrowIfFailing(dataOnly ? LogFileOperation.Fsync : LogFileOperation.Meta, path, dataOnly ? "fdatasync" : "fsync");
        BeforeFlush?.Invoke(path);
        if (IgnoreFlushesOf is { } ignored && Path.GetFileName(path) == ignored)
        {
            return;
        }

        lock (_gate)
        {
            // Taken under the lock so that a write of the same file cannot slip between the flush and the bookkeeping.
            base.Flush(handle, path, dataOnly);
            if (_writtenBack.Remove(path, out var own))
            {
                MakeDurable(path, own);
            }

            MakeDurable(path, Pending(path));

            // The disk's cache is flushed: what other files wrote back is durable too, where it overwrote blocks
            // their own flushes made durable; the rest goes back to waiting for such a flush.
            foreach (var (other, writes) in _writtenBack)
            {
                var allocatedEnd = _durable.GetValueOrDefault(other, []).Length;
                var inPlace = writes.Where(w => w.Offset + w.Data.Length <= allocatedEnd).ToList();
                MakeDurable(other, inPlace);
                Pending(other).AddRange(writes.Where(w => w.Offset + w.Data.Length > allocatedEnd));
            }

            _writtenBack.Clear();
        }
    }

    public override void WriteBack(SafeFileHandle handle, string path, long offset, long length, bool wait)
    {
        ThrowIfFailing(LogFileOperation.Fsync, path, "sync_file_range");
        lock (_gate)
        {
            base.WriteBack(handle, path, offset, length, wait);
            if (!wait)
            {
                return;
            }

            // Written to the disk's cache, not yet durable: the next flush of any file makes it so.
            var pending = Pending(path);
            if (!_writtenBack.TryGetValue(path, out var written))
            {
                _writtenBack[path] = written = [];
            }

            foreach (var write in pending.Where(w => w.Offset >= offset && w.Offset + w.Data.Length <= offset + length).ToList())
            {
                written.Add(write);
                pending.Remove(write);
            }
        }
    }

    /// <summary>Applies <paramref name="writes"/> to the durable image of <paramref name="path"/> and forgets them. Under the lock.</summary>
    private void MakeDurable(string path, List<(long Offset, byte[] Data)> writes)
    {
        var image = _durable.GetValueOrDefault(path, []);
        foreach (var (offset, data) in writes)
        {
            if (image.Length < offset + data.Length)
            {
                Array.Resize(ref image, (int)(offset + data.Length));
            }

            data.CopyTo(image, offset);
        }

        _durable[path] = image;
        writes.Clear();
    }

    public override void Preallocate(SafeFileHandle handle, string path, long size)
    {
        ThrowIfFailing(LogFileOperation.Preallocate, path, "write");
        if (RandomAccess.GetLength(handle) == 0)
        {
            // A new file (perhaps at the path of a deleted one): what was known of the old file is void.
            lock (_gate)
            {
                _durable.Remove(path);
                _pending.Remove(path);
                _writtenBack.Remove(path);
            }
        }

        base.Preallocate(handle, path, size);
    }

    public override void BeforeIndexCommit(string path)
    {
        lock (_gate)
        {
            if (_failing == LogFileOperation.Index)
            {
                Interlocked.Increment(ref _failuresInjected);
                throw _error == DiskError.NoSpace
                    ? new SqliteException("SQLite Error 13: 'database or disk is full'.", 13)
                    : new SqliteException("SQLite Error 10: 'disk I/O error'.", 10);
            }
        }
    }

    /// <summary>Whether <paramref name="bytes"/> lie, whole, in the durable part of a file under <paramref name="directory"/>.</summary>
    public bool IsDurable(string directory, ReadOnlySpan<byte> bytes)
    {
        lock (_gate)
        {
            foreach (var (path, image) in _durable)
            {
                if (path.StartsWith(directory, StringComparison.Ordinal) && image.AsSpan().IndexOf(bytes) >= 0)
                {
                    return true;
                }
            }

            return false;
        }
    }

    /// <summary>
    /// What a power loss after the failure leaves: every byte written but never flushed goes back to its
    /// durable content (zeros past it). Call with the storage closed.
    /// </summary>
    /// <returns>The number of bytes put back.</returns>
    public long SimulatePowerLoss() => SimulatePowerLoss(random: null);

    /// <summary>
    /// A power loss after which the kernel had written back some of the unflushed pages, in any order: each 4 KiB
    /// page of each unflushed write either reached the disk or goes back to its durable content, as
    /// <paramref name="random"/> decides (null: none reached it). This is harsher than a real page cache, which
    /// writes a page with all the writes made to it so far. Call with the storage closed.
    /// </summary>
    /// <returns>The number of bytes put back.</returns>
    public long SimulatePowerLoss(Random? random)
    {
        const int Page = 4096;
        lock (_gate)
        {
            // Written back but never flushed: still in the disk's volatile cache, as lost as the rest.
            foreach (var (path, writes) in _writtenBack)
            {
                Pending(path).InsertRange(0, writes);
            }

            _writtenBack.Clear();
            long reverted = 0;
            foreach (var (path, writes) in _pending)
            {
                if (!File.Exists(path))
                {
                    continue;
                }

                var image = _durable.GetValueOrDefault(path, []);
                using var file = new FileStream(path, FileMode.Open, FileAccess.Write);
                foreach (var (offset, data) in writes)
                {
                    for (var start = offset; start < offset + data.Length;)
                    {
                        var end = Math.Min(offset + data.Length, ((start / Page) + 1) * Page);
                        if (random is null || random.Next(2) == 0)
                        {
                            var original = new byte[end - start];
                            if (start < image.Length)
                            {
                                image.AsSpan((int)start, (int)Math.Min(original.Length, image.Length - start)).CopyTo(original);
                            }

                            file.Position = start;
                            file.Write(original);
                            reverted += original.Length;
                        }

                        start = end;
                    }
                }

                writes.Clear();
            }

            return reverted;
        }
    }

    private static bool IsMeta(string path) => Path.GetFileName(path) == "meta";

    private void ThrowIfFailing(LogFileOperation operation, string path, string call)
    {
        lock (_gate)
        {
            if (_failing != operation)
            {
                return;
            }

            Interlocked.Increment(ref _failuresInjected);

            // The messages and HResults .NET and DataSync give for these errno values on Linux.
            var (errno, text) = _error == DiskError.NoSpace ? (28, "No space left on device") : (5, "Input/output error");
            throw call == "write"
                ? new IOException($"{text} : '{path}'", errno)
                : new IOException($"{call} failed: {text} (errno {errno}).", errno);
        }
    }

    private List<(long Offset, byte[] Data)> Pending(string path)
    {
        if (!_pending.TryGetValue(path, out var list))
        {
            list = [];
            _pending[path] = list;
        }

        return list;
    }
}
