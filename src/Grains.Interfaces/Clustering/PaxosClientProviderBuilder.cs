using Microsoft.Extensions.Configuration;
using Orleans.Paxos.Grains.Clustering;
using Orleans.Providers;

[assembly: RegisterProvider("Paxos", "Clustering", "Client", typeof(PaxosClientProviderBuilder))]

namespace Orleans.Paxos.Grains.Clustering;

/// <summary>
/// Lets a client's configuration choose Paxos clustering: <c>Orleans:Clustering:ProviderType=Paxos</c> with seed
/// gateways in <c>Orleans:Clustering:Gateways:0=ip:port</c>, <c>...:1=...</c>.
/// </summary>
public sealed class PaxosClientProviderBuilder : IProviderBuilder<IClientBuilder>
{
    /// <inheritdoc />
    public void Configure(IClientBuilder builder, string? name, IConfigurationSection configurationSection)
    {
        ArgumentNullException.ThrowIfNull(configurationSection);
        builder.UsePaxosClustering(o => configurationSection.Bind(o));
    }
}
