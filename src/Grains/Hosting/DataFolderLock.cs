using System.Diagnostics;
using System.Globalization;

namespace Orleans.Paxos.Grains.Hosting;

/// <summary>
/// An exclusive OS lock on a node's data folder (<c>&lt;StoragePath&gt;/node.lock</c>, <c>flock</c> on Linux),
/// held from before the node opens its stores until it has closed them, so that a second node started on
/// the same folder stops before touching them. The process that holds it writes who it is to
/// <c>node.lock.owner</c>, which the refused process quotes. The OS drops the lock when the holder exits,
/// even on <c>kill -9</c>. Not thread-safe; owned by <see cref="PaxosEngineHost"/>.
/// </summary>
public sealed class DataFolderLock : IDisposable
{
    /// <summary>The lock file's name inside the data folder.</summary>
    public const string FileName = "node.lock";

    /// <summary>The name of the file that says which process holds the lock.</summary>
    public const string OwnerFileName = "node.lock.owner";

    private readonly FileStream _handle;

    private DataFolderLock(FileStream handle, string folder)
    {
        _handle = handle;
        Folder = folder;
    }

    /// <summary>The locked folder (full path).</summary>
    public string Folder { get; }

    /// <summary>Locks <paramref name="folder"/> (creating it), or throws naming the process that holds it.</summary>
    /// <param name="folder">The data folder.</param>
    /// <param name="node">This node's id, written beside the process id for the next one to read.</param>
    /// <exception cref="IOException">Another process holds the lock: the message names it.</exception>
    public static DataFolderLock Acquire(string folder, string node)
    {
        var full = Path.GetFullPath(folder);
        Directory.CreateDirectory(full);
        var path = Path.Combine(full, FileName);
        FileStream handle;
        try
        {
            // FileShare.None takes an exclusive flock on Unix (and a share-none handle on Windows).
            handle = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException ex) when (ex is not FileNotFoundException and not DirectoryNotFoundException)
        {
            throw new IOException(
                $"The data folder {full} is in use: {Owner(full)} holds {path}. Stop that process, or give this node its own Paxos:StoragePath.",
                ex);
        }

        var owner = string.Create(CultureInfo.InvariantCulture, $"process {Environment.ProcessId} on {Environment.MachineName} (Paxos node {node}, since {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm:ss} UTC)");
        try
        {
            File.WriteAllText(Path.Combine(full, OwnerFileName), owner + Environment.NewLine);
        }
        catch
        {
            handle.Dispose();
            throw;
        }

        return new DataFolderLock(handle, full);
    }

    /// <summary>Releases the lock.</summary>
    public void Dispose() => _handle.Dispose();

    private static string Owner(string folder)
    {
        try
        {
            var text = File.ReadAllText(Path.Combine(folder, OwnerFileName)).Trim();
            if (text.Length > 0)
            {
                return text + (IsRunning(text) ? string.Empty : " (or a process that has just exited)");
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
        }

        return "another process";
    }

    private static bool IsRunning(string owner)
    {
        var parts = owner.Split(' ', 3);
        if (parts.Length < 2 || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
        {
            return false;
        }

        try
        {
            using var process = Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }
}
