using System.Globalization;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>
/// Testing only (<see cref="Node.PaxosFaultInjectionOptions.SyncJournal"/>): the operating-system file
/// operations, journaling how far each data file was made durable. Data files are append-only, so a
/// file's durable part is everything below the end of the last write that completed before its last
/// successful fsync. Lines: <c>new &lt;path&gt;</c> when a data file is preallocated (a new file; earlier lines
/// about that path no longer apply) and <c>sync &lt;path&gt; &lt;end&gt;</c> after each successful flush.
/// Each line reaches the operating system before the call returns, so it survives kill -9.
/// </summary>
internal sealed class SyncJournalFileOperations : LogFileOperations
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, long> _writtenEnd = new(StringComparer.Ordinal);
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

    public override void Flush(SafeFileHandle handle, string path, bool dataOnly)
    {
        // Only writes that completed before the flush started are covered by it.
        long end;
        lock (_gate)
        {
            end = _writtenEnd.GetValueOrDefault(path);
        }

        base.Flush(handle, path, dataOnly);
        Append($"sync {Path.GetFullPath(path)} {end.ToString(CultureInfo.InvariantCulture)}");
    }

    public override void Preallocate(SafeFileHandle handle, string path, long size)
    {
        lock (_gate)
        {
            _writtenEnd.Remove(path);
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
