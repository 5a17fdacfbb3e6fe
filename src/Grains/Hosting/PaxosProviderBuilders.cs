using Microsoft.Extensions.Configuration;
using Orleans.Paxos.Grains.Hosting;
using Orleans.Paxos.Grains.Storage;
using Orleans.Providers;

[assembly: RegisterProvider(PaxosProviderBuilder.Name, "Clustering", "Silo", typeof(PaxosProviderBuilder))]
[assembly: RegisterProvider(PaxosProviderBuilder.Name, "Reminders", "Silo", typeof(PaxosProviderBuilder))]
[assembly: RegisterProvider(PaxosProviderBuilder.Name, "GrainStorage", "Silo", typeof(PaxosProviderBuilder))]

namespace Orleans.Paxos.Grains.Hosting;

/// <summary>
/// Lets Orleans' configuration choose the Paxos providers: <c>Orleans:Clustering:ProviderType=Paxos</c>,
/// <c>Orleans:Reminders:ProviderType=Paxos</c>, <c>Orleans:GrainStorage:&lt;name&gt;:ProviderType=Paxos</c>
/// (optional keys: <c>Group</c> and <c>SmId</c> for clustering, <c>DeleteStateOnClear</c> for grain storage).
/// The silo must also run a Paxos node (<c>AddPaxos</c>).
/// </summary>
public sealed class PaxosProviderBuilder : IProviderBuilder<ISiloBuilder>
{
    /// <summary>The provider type name in configuration.</summary>
    public const string Name = "Paxos";

    /// <inheritdoc />
    public void Configure(ISiloBuilder builder, string? name, IConfigurationSection configurationSection)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configurationSection);
        switch (configurationSection.Path.Split(':') is [.., var kind, _] && name is not null ? kind : configurationSection.Key)
        {
            case "Clustering":
                builder.UsePaxosClustering(o => configurationSection.Bind(o));
                break;
            case "Reminders":
                builder.UsePaxosReminderService();
                break;
            case "GrainStorage":
                builder.AddPaxosGrainStorage(name!, o => o.DeleteStateOnClear = configurationSection.GetValue(nameof(PaxosGrainStorageOptions.DeleteStateOnClear), true));
                break;
            default:
                throw new InvalidOperationException($"The Paxos provider does not serve '{configurationSection.Path}'; it serves Clustering, Reminders and GrainStorage.");
        }
    }
}
