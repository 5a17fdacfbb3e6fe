namespace Orleans.Paxos.Grains;

/// <summary>The outcome of a key-value operation.</summary>
public enum KvStatus
{
    /// <summary>Done; for a read, the key exists.</summary>
    Ok = 0,

    /// <summary>The key does not exist.</summary>
    NotFound = 1,

    /// <summary>The key's version is not the expected one; the current value and version are returned.</summary>
    VersionConflict = 2,

    /// <summary>The request is invalid (empty key); nothing changed.</summary>
    BadRequest = 3,

    /// <summary>The operation did not go through the log; <see cref="KvResult.Proposal"/> says why.</summary>
    ProposalFailed = 4,
}

/// <summary>The result of a key-value operation.</summary>
/// <param name="Status">What happened.</param>
/// <param name="Key">The key.</param>
/// <param name="Group">The group the key lives in.</param>
/// <param name="Value">The value (reads, conflicts) or null.</param>
/// <param name="Version">The key's version after the operation: 1 + the instance id of its last write; 0 when absent.</param>
/// <param name="InstanceId">The instance the operation was executed in (0 for stale reads).</param>
/// <param name="Proposal">The proposal's status (Ok for stale reads); not Ok when <paramref name="Status"/> is ProposalFailed.</param>
/// <param name="Node">The Paxos node that served the request.</param>
[GenerateSerializer, Immutable, Alias("paxos.KvResult")]
public sealed record KvResult(
    [property: Id(0)] KvStatus Status,
    [property: Id(1)] string Key,
    [property: Id(2)] int Group,
    [property: Id(3)] byte[]? Value,
    [property: Id(4)] ulong Version,
    [property: Id(5)] ulong InstanceId,
    [property: Id(6)] ProposalStatus Proposal,
    [property: Id(7)] string Node)
{
    /// <summary>Whether <see cref="Status"/> is Ok.</summary>
    public bool IsOk => Status == KvStatus.Ok;

    /// <summary>The value as UTF-8 text, or null.</summary>
    public string? ValueText => Value is null ? null : System.Text.Encoding.UTF8.GetString(Value);
}

/// <summary>
/// The replicated key-value store of one group (key: the group index). Keys map to groups with
/// <see cref="KeyValueClient.GroupOf"/>; use <see cref="KeyValueClient"/> rather than this grain directly.
/// </summary>
/// <remarks>
/// <see cref="GetAsync"/> is linearizable: it proposes a read operation, so it is ordered with every
/// write of the group and sees all writes that completed before it was called. <see cref="GetStaleAsync"/>
/// reads the hosting node's store directly: fast, but it may miss recent writes.
/// </remarks>
[Alias("paxos.IKeyValueGrain")]
public interface IKeyValueGrain : IGrainWithIntegerKey
{
    /// <summary>Linearizable read, through the log.</summary>
    [Alias("Get")]
    Task<KvResult> GetAsync(string key);

    /// <summary>STALE read of the hosting node's store, not through the log.</summary>
    [Alias("GetStale")]
    Task<KvResult> GetStaleAsync(string key);

    /// <summary>Unconditional write.</summary>
    [Alias("Put")]
    Task<KvResult> PutAsync(string key, byte[] value);

    /// <summary>Delete; only when the key has <paramref name="expectedVersion"/> if that is given.</summary>
    [Alias("Delete")]
    Task<KvResult> DeleteAsync(string key, ulong? expectedVersion = null);

    /// <summary>Write only when the key's version is <paramref name="expectedVersion"/> (0: the key must not exist).</summary>
    [Alias("CompareAndSet")]
    Task<KvResult> CompareAndSetAsync(string key, byte[] value, ulong expectedVersion);
}
