using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Orleans.Runtime.MembershipService.SiloMetadata;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.StateMachines.KeyValue;
using Orleans.Paxos.Grains.Placement;

namespace Orleans.Paxos.Grains.Hosting;

/// <summary>Adds a Paxos node to an Orleans silo.</summary>
public static class PaxosSiloBuilderExtensions
{
    /// <summary>The configuration section the node's options are bound from.</summary>
    public const string ConfigurationSection = "Paxos";

    /// <summary>The silo metadata key that publishes the silo's Paxos node id (ip:port).</summary>
    public const string NodeMetadataKey = "paxos-node";

    /// <summary>
    /// Runs a Paxos node in this silo: binds <see cref="PaxosNodeOptions"/> from the configuration section
    /// <c>Paxos</c> and then applies <paramref name="configure"/>; starts the node before grains activate
    /// and stops it after they deactivate; registers the group, node and key-value grains' placement.
    /// </summary>
    /// <exception cref="ArgumentException">Peer authentication is enabled without a usable secret (<c>Paxos:PeerAuthentication</c>).</exception>
    /// <remarks>
    /// Publishes the node id as silo metadata (<c>UseSiloMetadata</c>), which master placement uses to find
    /// the silo of a group's master; a silo that also sets its own metadata must include
    /// <see cref="NodeMetadataKey"/>.
    /// </remarks>
    public static ISiloBuilder AddPaxos(this ISiloBuilder builder, Action<PaxosNodeOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = builder.Services.AddOptions<PaxosNodeOptions>();
        options.Bind(builder.Configuration.GetSection(ConfigurationSection));
        if (configure is not null)
        {
            options.Configure(configure);
        }

        // The metadata must be known when the silo starts: resolve the node id from the same sources now.
        var probe = new PaxosNodeOptions();
        builder.Configuration.GetSection(ConfigurationSection).Bind(probe);
        configure?.Invoke(probe);

        // A missing or bad peer-authentication secret stops the silo here, before anything starts, with a clear message.
        _ = probe.PeerAuthentication?.ResolveKey();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        if (!string.IsNullOrWhiteSpace(probe.MyNode))
        {
            metadata[NodeMetadataKey] = Engine.Protocol.NodeId.Parse(probe.MyNode).ToString();
        }

#pragma warning disable ORLEANSEXP004 // silo metadata is experimental in Orleans 10
        builder.UseSiloMetadata(metadata);
#pragma warning restore ORLEANSEXP004

        builder.Services.TryAddSingleton<PaxosEngineHost>();
        builder.Services.TryAddSingleton<PaxosEngineLifecycle>();
        builder.Services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => sp.GetRequiredService<PaxosEngineLifecycle>());
        builder.Services.AddPlacementDirector<PaxosMasterPlacement, PaxosMasterPlacementDirector>();
        builder.Services.AddPlacementDirector<PaxosSiloPlacement, PaxosSiloPlacementDirector>();
        return builder;
    }

    /// <summary>Mounts a state machine, created when the node starts, on one group or (null) every group.</summary>
    public static ISiloBuilder AddPaxosStateMachine(this ISiloBuilder builder, int? group, Func<IServiceProvider, PaxosNodeOptions, IStateMachine> factory)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(factory);
        builder.Services.AddSingleton(new PaxosStateMachineRegistration(group, factory));
        return builder;
    }

    /// <summary>
    /// Mounts the replicated key-value store (<see cref="KeyValueStateMachine"/>, data in <c>g&lt;N&gt;/kv/</c>)
    /// on every group, serving <see cref="IKeyValueGrain"/>.
    /// Mounting it twice is harmless (the Paxos grain storage and reminder table mount it too).
    /// </summary>
    public static ISiloBuilder AddPaxosKeyValueStore(this ISiloBuilder builder, int smId = KeyValueStateMachine.DefaultSmId) =>
        AddPaxosKeyValueStore(builder, smId, chosen: true);

    /// <summary>
    /// Mounts the key-value store once. A store mounted only because a Paxos provider needs it
    /// (<paramref name="chosen"/> false) takes the state machine id of a later explicit call.
    /// </summary>
    internal static ISiloBuilder AddPaxosKeyValueStore(ISiloBuilder builder, int smId, bool chosen)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var existing = builder.Services.FirstOrDefault(d => d.ServiceType == typeof(KeyValueStoreMarker))?.ImplementationInstance as KeyValueStoreMarker;
        if (existing is not null)
        {
            if (chosen && existing.Chosen && existing.SmId != smId)
            {
                throw new InvalidOperationException($"The key-value store is mounted twice with different state machine ids ({existing.SmId} and {smId}).");
            }

            if (chosen)
            {
                existing.SmId = smId;
                existing.Chosen = true;
            }

            return builder;
        }

        var marker = new KeyValueStoreMarker { SmId = smId, Chosen = chosen };
        builder.Services.AddSingleton(marker);
        return builder.AddPaxosStateMachine(null, (sp, options) =>
            new KeyValueStateMachine(options.StoragePath, marker.SmId, sp.GetService<ILoggerFactory>()?.CreateLogger<KeyValueStateMachine>()));
    }
}

/// <summary>Marks a silo's services as having the key-value store mounted, and with which state machine id.</summary>
internal sealed class KeyValueStoreMarker
{
    /// <summary>The state machine id the store runs under.</summary>
    public int SmId { get; set; }

    /// <summary>Whether the id was chosen by an explicit <c>AddPaxosKeyValueStore</c> call.</summary>
    public bool Chosen { get; set; }
}
