using System.Globalization;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>
/// Testing only (<see cref="Node.PaxosFaultInjectionOptions.SyncJournal"/>): the operating-system file
/// operations, journaling how far each data file was made durable. Data files are append-only, so a
/// file's durable part is everything below the end of the last write that completed before its last
/// successful fsync. Lines: <c>new &lt;path&gt;</c> when a data file is preallocated (a new file; earlier lines
/// about that path no longer apply) and <c>sync &lt;path&gt; &lt;end&gt;</c> after each successful flush. A flush of any
/// data file also makes durable what every completed write-back (<see cref="WriteBack"/>) wrote before it started,
/// as a flush of the disk's cache does (the tests keep every data file on one device).
/// Each line reaches the operating system before the call returns, so it survives kill -9.
/// </summary>
internal sealed class SyncJournalFileOperations : LogFileOperations
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, long> _writtenEnd = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _writtenBack = new(StringComparer.Ordinal);
    private readonly FileStream _journal;

    public SyncJournalFileOperations(string journalPath)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(journalPath);
        var full = Path.GetFullPath(journalPath);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        _journal = new FileStream(full, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete);
    }

    public override void Write(SafeFileHandle handle, string path, ReadOnlySpan<byte> data, long offset)
    {
        base.Write(handle, path, data, offset);
        lock (_gate)
        {
            _writtenEnd[path] = Math.Max(_writtenEnd.GetValueOrDefault(path), offset + data.Length);
        }
    }

    public override void WriteZeros(SafeFileHandle handle, string path, ReadOnlySpan<byte> zeros, long offset)
    {
        // Zeros ahead of the records are what the file read as before: they move no durable end, or a power loss
        // simulated from this journal would keep records later written over them and never fsynced.
        base.Write(handle, path, zeros, offset);
    }

    public override void Flush(SafeFileHandle handle, string path, bool dataOnly)
    {
        // Only writes that completed before the flush started are covered by it: this file's, and those of other
        // files whose write-back completed.
        long end;
        KeyValuePair<string, long>[] writtenBack;
        lock (_gate)
        {
            end = _writtenEnd.GetValueOrDefault(path);
            writtenBack = [.. _writtenBack];
        }

        base.Flush(handle, path, dataOnly);
        Append($"sync {Path.GetFullPath(path)} {end.ToString(CultureInfo.InvariantCulture)}");
        foreach (var (other, otherEnd) in writtenBack)
        {
            Append($"sync {Path.GetFullPath(other)} {otherEnd.ToString(CultureInfo.InvariantCulture)}");
            lock (_gate)
            {
                if (_writtenBack.TryGetValue(other, out var now) && now == otherEnd)
                {
                    _writtenBack.Remove(other);
                }
            }
        }
    }

    public override void WriteBack(SafeFileHandle handle, string path, long offset, long length, bool wait)
    {
        // A completed write-back covers what was written in the range before it started.
        long end;
        lock (_gate)
        {
            end = Math.Min(_writtenEnd.GetValueOrDefault(path), offset + length);
        }

        base.WriteBack(handle, path, offset, length, wait);
        if (wait)
        {
            lock (_gate)
            {
                _writtenBack[path] = Math.Max(_writtenBack.GetValueOrDefault(path), end);
            }
        }
    }

    public override void Preallocate(SafeFileHandle handle, string path, long size)
    {
        lock (_gate)
        {
            _writtenEnd.Remove(path);
            _writtenBack.Remove(path);
        }

        Append($"new {Path.GetFullPath(path)}");
        base.Preallocate(handle, path, size);
    }

    private void Append(string line)
    {
        var bytes = Encoding.UTF8.GetBytes(line + "\n");
        lock (_gate)
        {
            _journal.Write(bytes);
            _journal.Flush(flushToDisk: false);
        }
    }
}
