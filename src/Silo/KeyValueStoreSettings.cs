using System.Globalization;
using Microsoft.Extensions.Configuration;
using Orleans.Paxos.Engine.StateMachines.KeyValue;

namespace Orleans.Paxos.Silo;

/// <summary>
/// The <c>Paxos:KeyValueStore</c> section: whether the silo mounts the replicated key-value store on every
/// group, and on which state machine id. In a cluster shared with PhxPaxos nodes whose own state machine
/// uses SMID 1 (as PhxPaxos's samples do), move the store to another id or turn it off.
/// </summary>
public sealed class KeyValueStoreSettings
{
    /// <summary>The configuration section.</summary>
    public const string Section = "Paxos:KeyValueStore";

    /// <summary>Whether the store is mounted (and <c>IKeyValueGrain</c> served). Default true.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>The store's state machine id, 1 to 99999999 (0 and 100000000 and above are reserved). Default 1.</summary>
    public int SmId { get; set; } = KeyValueStateMachine.DefaultSmId;

    /// <summary>Reads the section (defaults for what is missing).</summary>
    /// <exception cref="ArgumentException">The state machine id is reserved or negative.</exception>
    public static KeyValueStoreSettings From(IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        var settings = new KeyValueStoreSettings();
        configuration.GetSection(Section).Bind(settings);
        if (settings.SmId is < 1 or >= 100_000_000)
        {
            throw new ArgumentException($"{Section}:SmId must be between 1 and 99999999 (0 and 100000000 and above are reserved); it is {settings.SmId}.");
        }

        return settings;
    }

    /// <inheritdoc />
    public override string ToString() =>
        Enabled ? string.Create(CultureInfo.InvariantCulture, $"key-value store on every group (SMID {SmId})") : "no key-value store (Paxos:KeyValueStore:Enabled=false)";
}
