using System.Text;

namespace Orleans.Paxos.Grains;

/// <summary>
/// The replicated key-value store of a cluster: routes each key to its group's <see cref="IKeyValueGrain"/>.
/// Thread-safe.
/// </summary>
/// <remarks>
/// Sharding is stable: a key's group is the 32-bit FNV-1a hash of its UTF-8 bytes modulo the group
/// count (<see cref="GroupOf"/>). Changing the group count moves keys, so it is fixed for a cluster's life.
/// </remarks>
public sealed class KeyValueClient
{
    private readonly IGrainFactory _grains;

    /// <summary>Creates a client for a cluster running <paramref name="groupCount"/> groups.</summary>
    public KeyValueClient(IGrainFactory grains, int groupCount)
    {
        ArgumentNullException.ThrowIfNull(grains);
        ArgumentOutOfRangeException.ThrowIfLessThan(groupCount, 1);
        _grains = grains;
        GroupCount = groupCount;
    }

    /// <summary>The number of groups keys are spread over.</summary>
    public int GroupCount { get; }

    /// <summary>Creates a client, asking the cluster for its group count.</summary>
    public static async Task<KeyValueClient> CreateAsync(IGrainFactory grains)
    {
        ArgumentNullException.ThrowIfNull(grains);
        var count = await grains.GetGrain<IPaxosGroupGrain>(0).GetGroupCountAsync();
        return new KeyValueClient(grains, count);
    }

    /// <summary>The group of a key: FNV-1a (32-bit) of its UTF-8 bytes, modulo <paramref name="groupCount"/>.</summary>
    public static int GroupOf(string key, int groupCount)
    {
        ArgumentNullException.ThrowIfNull(key);
        var hash = 2166136261u;
        foreach (var b in Encoding.UTF8.GetBytes(key))
        {
            hash = (hash ^ b) * 16777619u;
        }

        return (int)(hash % (uint)groupCount);
    }

    /// <summary>The grain serving a key.</summary>
    public IKeyValueGrain GrainFor(string key) => _grains.GetGrain<IKeyValueGrain>(GroupOf(key, GroupCount));

    /// <summary>Linearizable read (through the log).</summary>
    public Task<KvResult> GetAsync(string key) => GrainFor(key).GetAsync(key);

    /// <summary>STALE read of one node's store (not through the log).</summary>
    public Task<KvResult> GetStaleAsync(string key) => GrainFor(key).GetStaleAsync(key);

    /// <summary>Unconditional write.</summary>
    public Task<KvResult> PutAsync(string key, byte[] value) => GrainFor(key).PutAsync(key, value);

    /// <summary>Unconditional write of UTF-8 text.</summary>
    public Task<KvResult> PutAsync(string key, string value) => PutAsync(key, Encoding.UTF8.GetBytes(value));

    /// <summary>Delete (conditional when <paramref name="expectedVersion"/> is given).</summary>
    public Task<KvResult> DeleteAsync(string key, ulong? expectedVersion = null) => GrainFor(key).DeleteAsync(key, expectedVersion);

    /// <summary>Compare-and-set on the key's version (0: create only if absent).</summary>
    public Task<KvResult> CompareAndSetAsync(string key, byte[] value, ulong expectedVersion) =>
        GrainFor(key).CompareAndSetAsync(key, value, expectedVersion);
}
