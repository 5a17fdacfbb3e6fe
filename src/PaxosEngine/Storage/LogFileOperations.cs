using Microsoft.Data.Sqlite;
using Microsoft.Win32.SafeHandles;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>What a <see cref="LogFileOperations"/> call does to a file; names the step in errors, logs and metrics.</summary>
internal enum LogFileOperation
{
    /// <summary>Appending records to a data file.</summary>
    Write,

    /// <summary>Flushing a data file to the disk (fdatasync).</summary>
    Fsync,

    /// <summary>Extending a new data file to its full size.</summary>
    Preallocate,

    /// <summary>Rewriting and flushing <c>meta</c>.</summary>
    Meta,

    /// <summary>Writing rows to the SQLite index.</summary>
    Index,
}

/// <summary>
/// The file operations of <see cref="FileLogStorage"/> that a full or failing disk makes fail: data file
/// writes, fsyncs and preallocation, <c>meta</c> writes and SQLite index writes. Production uses
/// <see cref="Os"/>, the plain operating-system calls; tests derive from it to inject failures (ENOSPC,
/// EIO) exactly where the disk would report them, and to watch what was flushed.
/// </summary>
/// <remarks>Every member may be called from any storage thread. Overrides must be thread-safe.</remarks>
internal class LogFileOperations
{
    /// <summary>The real operating-system calls.</summary>
    public static readonly LogFileOperations Os = new();

    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/> of the file at <paramref name="path"/>.</summary>
    /// <exception cref="IOException">The write failed (its HResult is the errno on Unix).</exception>
    public virtual void Write(SafeFileHandle handle, string path, ReadOnlySpan<byte> data, long offset) => RandomAccess.Write(handle, data, offset);

    /// <summary>
    /// Flushes the file's data to the disk: <c>fdatasync</c> on Linux for data files
    /// (<paramref name="dataOnly"/>), a full flush otherwise.
    /// </summary>
    /// <exception cref="IOException">The flush failed; what was written since the last flush may be lost.</exception>
    public virtual void Flush(SafeFileHandle handle, string path, bool dataOnly)
    {
        if (dataOnly)
        {
            DataSync.Flush(handle);
        }
        else
        {
            RandomAccess.FlushToDisk(handle);
        }
    }

    /// <summary>
    /// Writes <paramref name="zeros"/> (all zero bytes) at <paramref name="offset"/>, past the file's records, so that
    /// the blocks the next records go to are allocated. What it writes is what the sparse file read as.
    /// </summary>
    /// <exception cref="IOException">The write failed (its HResult is the errno on Unix).</exception>
    public virtual void WriteZeros(SafeFileHandle handle, string path, ReadOnlySpan<byte> zeros, long offset) => Write(handle, path, zeros, offset);

    /// <summary>
    /// Writes the file's range to the disk without flushing the disk's cache (<c>sync_file_range</c>, see
    /// <see cref="DataSync.WriteBack"/>): <paramref name="wait"/> false starts the writes, true waits for them.
    /// Durable only once a later <see cref="Flush"/> of a file on the same device returns.
    /// </summary>
    /// <exception cref="IOException">The write-back failed; what was written since the last flush may be lost.</exception>
    public virtual void WriteBack(SafeFileHandle handle, string path, long offset, long length, bool wait) => DataSync.WriteBack(handle, offset, length, wait);

    /// <summary>
    /// Extends a new data file to <paramref name="size"/> bytes the way PhxPaxos does: one zero byte
    /// written at size − 1, leaving a sparse file whose unused space reads as zeros.
    /// </summary>
    /// <exception cref="IOException">The file could not be extended.</exception>
    public virtual void Preallocate(SafeFileHandle handle, string path, long size) => RandomAccess.Write(handle, [0], size - 1);

    /// <summary>Called before a write transaction of the SQLite index at <paramref name="path"/> commits; the real one does nothing.</summary>
    /// <exception cref="SqliteException">The index write fails (a test's SQLITE_FULL or SQLITE_IOERR).</exception>
    public virtual void BeforeIndexCommit(string path)
    {
    }
}
