using System.ComponentModel;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>
/// Flushes a data file's bytes to the disk. On Linux this is <c>fdatasync</c>, as PhxPaxos does: the
/// data files are preallocated to their full size, so their size never changes while records are
/// appended and the metadata a full <c>fsync</c> would also write (times) is not needed to read the
/// records back. Elsewhere it is the framework's full flush.
/// </summary>
internal static partial class DataSync
{
    private static readonly bool IsLinux = OperatingSystem.IsLinux();

    /// <summary>Flushes the file's data; throws <see cref="IOException"/> on failure.</summary>
    public static void Flush(SafeFileHandle handle)
    {
        if (!IsLinux)
        {
            RandomAccess.FlushToDisk(handle);
            return;
        }

        // errno is read inside: releasing the handle afterwards could make another call.
        var errno = OnDescriptor(handle, static fd => fdatasync(fd) == 0 ? 0 : Marshal.GetLastPInvokeError());
        if (errno != 0)
        {
            throw new IOException($"fdatasync failed: {new Win32Exception(errno).Message} (errno {errno}).", errno);
        }
    }

    /// <summary>
    /// Makes a folder's entries (a file created in it) durable: <c>fsync</c> of the folder on Linux, nothing
    /// elsewhere. Throws <see cref="IOException"/> on failure.
    /// </summary>
    public static void FlushDirectory(string path)
    {
        if (!IsLinux)
        {
            return;
        }

        var fd = open(path, 0 /* O_RDONLY */);
        if (fd < 0)
        {
            var openErrno = Marshal.GetLastPInvokeError();
            throw new IOException($"opening folder {path} to fsync it failed: {new Win32Exception(openErrno).Message} (errno {openErrno}).", openErrno);
        }

        try
        {
            if (fsync(fd) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new IOException($"fsync of folder {path} failed: {new Win32Exception(errno).Message} (errno {errno}).", errno);
            }
        }
        finally
        {
            _ = close(fd);
        }
    }

    /// <summary>
    /// The allocated extents of a file from <paramref name="offset"/> to <paramref name="length"/>, as (start, end)
    /// ranges: <c>lseek</c> with <c>SEEK_DATA</c>/<c>SEEK_HOLE</c> on Linux, so that the holes of a sparse file need not
    /// be read; elsewhere (or when the file system cannot tell) one range covering everything.
    /// </summary>
    public static IEnumerable<(long Start, long End)> DataRanges(SafeFileHandle handle, long offset, long length)
    {
        if (!IsLinux)
        {
            yield return (offset, length);
            yield break;
        }

        var position = offset;
        while (position < length)
        {
            var (start, end) = NextDataRange(handle, position, length);
            if (start < 0)
            {
                yield break;
            }

            yield return (start, end);
            position = end;
        }
    }

    private static (long Start, long End) NextDataRange(SafeFileHandle handle, long position, long length) => OnDescriptor(handle, fd =>
    {
        const int SeekData = 3;
        const int SeekHole = 4;
        var start = lseek(fd, position, SeekData);
        if (start < 0)
        {
            // ENXIO: no data at or after the position. Anything else: the file system cannot tell, so read it all.
            return Marshal.GetLastPInvokeError() == 6 ? (-1L, -1L) : (position, length);
        }

        var end = lseek(fd, start, SeekHole);
        return (start, end < 0 ? length : Math.Min(end, length));
    });

    /// <summary>Runs <paramref name="call"/> on the handle's file descriptor, keeping the handle from being closed meanwhile.</summary>
    private static T OnDescriptor<T>(SafeFileHandle handle, Func<int, T> call)
    {
        var added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            return call((int)handle.DangerousGetHandle());
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fdatasync(int fd);

    [LibraryImport("libc", SetLastError = true)]
    private static partial long lseek(int fd, long offset, int whence);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fsync(int fd);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);
}
