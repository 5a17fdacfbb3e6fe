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
    /// Whether <see cref="WriteBack"/> and <see cref="InPlaceFlushDevice"/> work here: Linux, 64-bit (where <c>st_dev</c> is the
    /// first eight bytes of <c>struct stat</c>).
    /// </summary>
    public static bool SupportsWriteBack { get; } = IsLinux && Environment.Is64BitProcess;

    /// <summary>
    /// Writes the file's dirty pages in the range to the disk without its metadata and without flushing the disk's
    /// cache (<c>sync_file_range</c>): <paramref name="wait"/> false starts the writes, true also waits until every
    /// write in the range has completed. Only for ranges whose blocks are already allocated and written (overwrites
    /// in place): the data is then durable after the next flush of the device's cache, such as an <c>fdatasync</c>
    /// of any file on the same device. Throws <see cref="IOException"/> on failure.
    /// </summary>
    public static void WriteBack(SafeFileHandle handle, long offset, long length, bool wait)
    {
        const uint WaitBefore = 1;
        const uint Write = 2;
        const uint WaitAfter = 4;
        var flags = wait ? WaitBefore | Write | WaitAfter : Write;
        var errno = 0;
        var added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            // Once per group and batch: no closure.
            if (sync_file_range((int)handle.DangerousGetHandle(), offset, length, flags) != 0)
            {
                errno = Marshal.GetLastPInvokeError();
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }

        if (errno != 0)
        {
            throw new IOException($"sync_file_range failed: {new Win32Exception(errno).Message} (errno {errno}).", errno);
        }
    }

    /// <summary>
    /// The device of a file whose in-place overwrites a later flush of any file on that device makes durable (see
    /// <see cref="WriteBack"/>): <c>st_dev</c> of <c>fstat</c> for a file on ext2/3/4 or XFS, whose <c>fdatasync</c>
    /// always ends with a flush of the disk's cache and which overwrite allocated blocks in place. Null for every
    /// other file system (btrfs and ZFS copy on write, network and FUSE file systems flush per file, overlayfs
    /// writes back its own pages) and where it cannot be told: those files are fsynced one by one.
    /// </summary>
    public static ulong? InPlaceFlushDevice(SafeFileHandle handle)
    {
        const long Ext4Magic = 0xEF53;
        const long XfsMagic = 0x58465342;
        if (!SupportsWriteBack)
        {
            return null;
        }

        try
        {
            // struct statfs starts with f_type and struct stat with st_dev (8 bytes each) on x86-64 and arm64; both
            // structures are at most 144 bytes there.
            var buffer = new byte[256];
            if (OnDescriptor(handle, fd => fstatfs(fd, buffer)) != 0 || BitConverter.ToInt64(buffer, 0) is not (Ext4Magic or XfsMagic))
            {
                return null;
            }

            return OnDescriptor(handle, fd => fstat(fd, buffer)) == 0 ? BitConverter.ToUInt64(buffer, 0) : null;
        }
        catch (EntryPointNotFoundException)
        {
            // A C library older than glibc 2.33 exports no fstat symbol.
            return null;
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
    private static partial int sync_file_range(int fd, long offset, long nbytes, uint flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fstat(int fd, [Out] byte[] buf);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fstatfs(int fd, [Out] byte[] buf);

    [LibraryImport("libc", SetLastError = true)]
    private static partial long lseek(int fd, long offset, int whence);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fsync(int fd);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);
}
