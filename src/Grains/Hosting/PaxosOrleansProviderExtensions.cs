using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Paxos.Engine.StateMachines.KeyValue;
using Orleans.Paxos.Grains.Clustering;
using Orleans.Paxos.Grains.Reminders;
using Orleans.Paxos.Grains.Storage;
using Orleans.Providers;
using Orleans.Runtime.Hosting;
using Orleans.Storage;

namespace Orleans.Paxos.Grains.Hosting;

/// <summary>
/// Orleans' own tables on the silos' Paxos nodes: clustering (membership), grain storage and reminders, with no
/// external store. Every silo must call <c>AddPaxos</c>; the providers call the silo's node directly.
/// </summary>
public static class PaxosOrleansProviderExtensions
{
    /// <summary>The configuration section of <see cref="PaxosTableOptions"/>.</summary>
    public const string TableConfigurationSection = "Paxos:Orleans";

    /// <summary>
    /// Uses the Paxos membership table (<see cref="PaxosMembershipTable"/>) for Orleans clustering: mounts the
    /// <see cref="MembershipStateMachine"/> on group <see cref="PaxosClusteringOptions.Group"/> (default 0) and
    /// registers the table. Silos may start in any order; each joins once a Paxos majority is up. Needs
    /// <c>AddPaxos</c>; the Paxos node starts before Orleans membership (<see cref="PaxosEngineLifecycle"/>).
    /// </summary>
    public static ISiloBuilder UsePaxosClustering(this ISiloBuilder builder, Action<PaxosClusteringOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var probe = new PaxosClusteringOptions();
        configure?.Invoke(probe);
        var options = builder.Services.AddOptions<PaxosClusteringOptions>();
        if (configure is not null)
        {
            options.Configure(configure);
        }

        AddTableAccess(builder);
        builder.Services.AddSingleton<IMembershipTable, PaxosMembershipTable>();
        builder.AddPaxosStateMachine(probe.Group, (sp, node) =>
            new MembershipStateMachine(node.StoragePath, probe.SmId, sp.GetService<ILoggerFactory>()?.CreateLogger<MembershipStateMachine>()));
        return builder;
    }

    /// <summary>
    /// Adds grain storage provider <paramref name="name"/> on the replicated key-value store
    /// (<see cref="PaxosGrainStorage"/>); mounts the store if it is not mounted yet.
    /// </summary>
    public static ISiloBuilder AddPaxosGrainStorage(this ISiloBuilder builder, string name, Action<PaxosGrainStorageOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrEmpty(name);
        var options = builder.Services.AddOptions<PaxosGrainStorageOptions>(name);
        if (configure is not null)
        {
            options.Configure(configure);
        }

        AddTableAccess(builder);
        EnsureKeyValueStore(builder);
        builder.Services.AddTransient<IPostConfigureOptions<PaxosGrainStorageOptions>, DefaultStorageProviderSerializerOptionsConfigurator<PaxosGrainStorageOptions>>();
        builder.Services.AddGrainStorage(name, PaxosGrainStorage.Create);
        return builder;
    }

    /// <summary>Adds the default grain storage provider on the replicated key-value store.</summary>
    public static ISiloBuilder AddPaxosGrainStorageAsDefault(this ISiloBuilder builder, Action<PaxosGrainStorageOptions>? configure = null) =>
        builder.AddPaxosGrainStorage(ProviderConstants.DEFAULT_STORAGE_PROVIDER_NAME, configure);

    /// <summary>
    /// Uses the reminder service with its table on the replicated key-value store (<see cref="PaxosReminderTable"/>);
    /// mounts the store if it is not mounted yet.
    /// </summary>
    public static ISiloBuilder UsePaxosReminderService(this ISiloBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        AddTableAccess(builder);
        EnsureKeyValueStore(builder);
        builder.AddReminders();
        builder.Services.AddSingleton<IReminderTable, PaxosReminderTable>();
        return builder;
    }

    private static void AddTableAccess(ISiloBuilder builder)
    {
        if (builder.Services.Any(d => d.ServiceType == typeof(PaxosTableAccess)))
        {
            return;
        }

        builder.Services.AddOptions<PaxosTableOptions>().Bind(builder.Configuration.GetSection(TableConfigurationSection));
        builder.Services.TryAddSingleton<PaxosTableAccess>();
    }

    private static void EnsureKeyValueStore(ISiloBuilder builder)
    {
        PaxosSiloBuilderExtensions.AddPaxosKeyValueStore(builder, KeyValueStateMachine.DefaultSmId, chosen: false);
    }
}
