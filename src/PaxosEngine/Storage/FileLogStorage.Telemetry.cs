namespace Orleans.Paxos.Engine.Storage;

/// <summary>Sizes read by the telemetry gauges.</summary>
public sealed partial class FileLogStorage
{
    /// <summary>
    /// The bytes a group's log uses (full data files plus the current file's write offset) and the number
    /// of data files it spans. Read without locks while the writer runs, so it may be a write behind.
    /// Thread-safe.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">No such group.</exception>
    public (long Bytes, int Files) GetLogSize(int groupIndex)
    {
        var group = GetGroup(groupIndex);
        var current = group.CurrentFileId;
        var lowest = Math.Min(group.LowestFileId, current);
        var files = current - lowest + 1;
        return (((long)(files - 1) * group.DataFileSize) + group.WriteOffset, files);
    }
}
