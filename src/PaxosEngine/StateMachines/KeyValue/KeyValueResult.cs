namespace Orleans.Paxos.Engine.StateMachines.KeyValue;

/// <summary>The outcome of a key-value operation.</summary>
public enum KeyValueStatus
{
    /// <summary>Done; for a read, the key exists and its value is returned.</summary>
    Ok = 0,

    /// <summary>The key does not exist.</summary>
    NotFound = 1,

    /// <summary>The key's version is not the expected one; the current version (0 when absent) and value are returned.</summary>
    VersionConflict = 2,

    /// <summary>The operation could not be decoded or is not supported; nothing changed.</summary>
    BadRequest = 3,

    /// <summary>
    /// An earlier operation of the same instance (a batch) already wrote or tried to write this key; nothing
    /// changed. Propose again. (Versions are 1 + the instance id, so two writes of one key in one instance
    /// would share a version and a compare-and-set could not tell them apart.)
    /// </summary>
    Retry = 4,
}

/// <summary>
/// The result of one key-value operation, set as <see cref="StateMachineContext.Output"/> on the
/// proposing node and returned by stale reads.
/// </summary>
/// <param name="Status">What happened.</param>
/// <param name="Value">The key's value (reads and conflicts), or null.</param>
/// <param name="Version">The key's version after the operation: 1 + the instance id of its last write; 0 when the key does not exist.</param>
public sealed record KeyValueResult(KeyValueStatus Status, byte[]? Value, ulong Version)
{
    /// <summary>Whether <see cref="Status"/> is <see cref="KeyValueStatus.Ok"/>.</summary>
    public bool IsOk => Status == KeyValueStatus.Ok;

    internal static readonly KeyValueResult NotFound = new(KeyValueStatus.NotFound, null, 0);
}
