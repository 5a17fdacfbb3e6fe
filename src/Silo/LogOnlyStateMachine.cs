using System.Globalization;
using Microsoft.Extensions.Configuration;
using Orleans.Paxos.Engine.StateMachines;

namespace Orleans.Paxos.Silo;

/// <summary>
/// A state machine that executes nothing: its values stay in the log (read them with <c>watch</c> or
/// <c>IPaxosGroupGrain.WatchAsync</c>) and are executed by the state machines of other nodes. A node
/// waits at any value whose state machine id it does not know (as PhxPaxos does), so a node in a cluster
/// shared with PhxPaxos nodes mounts one of these for each id those nodes use (<c>Paxos:LogOnlySmIds</c>).
/// Stateless and thread-safe.
/// </summary>
/// <param name="smId">The state machine id.</param>
public sealed class LogOnlyStateMachine(int smId) : IStateMachine
{
    /// <summary>The configuration key: a list of state machine ids (<c>Paxos:LogOnlySmIds:0=1</c>).</summary>
    public const string Section = "Paxos:LogOnlySmIds";

    /// <inheritdoc />
    public int SmId { get; } = smId;

    /// <inheritdoc />
    public bool Execute(int groupIndex, ulong instanceId, ReadOnlySpan<byte> value, StateMachineContext? context) => true;

    /// <summary>The ids configured under <see cref="Section"/>, checked against each other and the key-value store's.</summary>
    /// <exception cref="ArgumentException">An id is reserved, repeated, or the key-value store's.</exception>
    public static IReadOnlyList<int> IdsFrom(IConfiguration configuration, KeyValueStoreSettings keyValue)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        ArgumentNullException.ThrowIfNull(keyValue);
        var ids = configuration.GetSection(Section).Get<int[]>() ?? [];
        foreach (var id in ids)
        {
            if (id is < 1 or >= 100_000_000)
            {
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"{Section} must hold ids between 1 and 99999999 (0 and 100000000 and above are reserved); it holds {id}."));
            }

            if (keyValue.Enabled && id == keyValue.SmId)
            {
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"{Section} holds {id}, the key-value store's id (Paxos:KeyValueStore:SmId); move the store or turn it off (Paxos:KeyValueStore:Enabled=false)."));
            }
        }

        if (ids.Distinct().Count() != ids.Length)
        {
            throw new ArgumentException($"{Section} names an id twice: {string.Join(", ", ids)}.");
        }

        return ids;
    }
}
