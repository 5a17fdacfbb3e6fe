namespace Orleans.Paxos.Engine.Storage;

/// <summary>A log storage operation failed. The message names the group and, where known, the file and offset.</summary>
public sealed class LogStorageException : IOException
{
    /// <summary>Creates the exception.</summary>
    public LogStorageException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with its cause.</summary>
    public LogStorageException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception with the location of the damage.</summary>
    public LogStorageException(string message, int groupIndex, string? file, long offset, Exception? innerException = null)
        : base(message, innerException)
    {
        GroupIndex = groupIndex;
        File = file;
        Offset = offset;
    }

    /// <summary>The group concerned, or -1.</summary>
    public int GroupIndex { get; } = -1;

    /// <summary>The data file concerned, if any.</summary>
    public string? File { get; }

    /// <summary>The byte offset in <see cref="File"/>, or -1.</summary>
    public long Offset { get; } = -1;

    /// <summary>The file operation that failed, when a write path failed.</summary>
    internal LogFileOperation? Operation { get; init; }
}
