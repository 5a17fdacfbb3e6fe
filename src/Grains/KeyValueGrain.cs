using System.Text;
using Orleans.Concurrency;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.StateMachines.KeyValue;
using Orleans.Paxos.Grains.Hosting;
using Orleans.Paxos.Grains.Placement;

namespace Orleans.Paxos.Grains;

/// <summary>
/// <see cref="IKeyValueGrain"/> over the silo's <see cref="KeyValueStateMachine"/>: every operation but
/// the stale read is proposed to the group and answered with the state machine's result.
/// </summary>
[Reentrant]
[PaxosMasterPlacement]
public sealed class KeyValueGrain(PaxosEngineHost host) : Grain, IKeyValueGrain
{
    private int Group => (int)this.GetPrimaryKeyLong();

    private KeyValueStateMachine Machine => host.KeyValue
        ?? throw new InvalidOperationException($"Node {host.MyNodeId} has no key-value store mounted: call AddPaxosKeyValueStore() on the silo (the Silo program mounts it unless Paxos:KeyValueStore:Enabled=false).");

    /// <inheritdoc />
    public Task<KvResult> GetAsync(string key) => Run(key, KeyValueCommand.Get(Key(key)));

    /// <inheritdoc />
    public Task<KvResult> GetStaleAsync(string key)
    {
        var machine = Machine;
        CheckGroup();
        var group = Group;
        var keyBytes = Key(key);

        // The store is read on the thread pool: an Orleans scheduler thread never waits for the disk.
        return Task.Run(() => ResultMapping.ToKvResult(key, group, machine.ReadStale(group, keyBytes), 0, host.MyNodeId.ToString()));
    }

    /// <inheritdoc />
    public Task<KvResult> PutAsync(string key, byte[] value) => Run(key, KeyValueCommand.Put(Key(key), value ?? []));

    /// <inheritdoc />
    public Task<KvResult> DeleteAsync(string key, ulong? expectedVersion = null) => Run(key, KeyValueCommand.Delete(Key(key), expectedVersion));

    /// <inheritdoc />
    public Task<KvResult> CompareAndSetAsync(string key, byte[] value, ulong expectedVersion) =>
        Run(key, KeyValueCommand.CompareAndSet(Key(key), value ?? [], expectedVersion));

    /// <summary>Strict: a key with a lone surrogate would otherwise be stored as U+FFFD and collide with other such keys.</summary>
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private static byte[] Key(string key)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        try
        {
            return StrictUtf8.GetBytes(key);
        }
        catch (EncoderFallbackException)
        {
            throw new ArgumentException("The key is not valid UTF-16 text (it holds a lone surrogate), so it has no UTF-8 form; keys are UTF-8 text.", nameof(key));
        }
    }

    private void CheckGroup()
    {
        if ((uint)Group >= (uint)host.GroupCount)
        {
            throw new ArgumentOutOfRangeException(nameof(IKeyValueGrain), Group, $"Group {Group} does not exist; the cluster has groups 0..{host.GroupCount - 1}.");
        }
    }

    private async Task<KvResult> Run(string key, byte[] operation)
    {
        var machine = Machine;
        CheckGroup();

        // The store refuses a second write of one key within one instance (a batch); propose it again.
        for (var attempt = 1; ; attempt++)
        {
            var result = await host.ProposeAsync(Group, machine.SmId, operation, batch: false);
            if (attempt < MaxRetries && result is { Status: ProposeStatus.Ok, Output: KeyValueResult { Status: KeyValueStatus.Retry } })
            {
                continue;
            }

            return ResultMapping.ToKvResult(key, Group, result, host.MyNodeId.ToString());
        }
    }

    private const int MaxRetries = 16;
}
