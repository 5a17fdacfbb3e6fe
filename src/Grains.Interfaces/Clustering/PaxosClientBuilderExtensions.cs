using Microsoft.Extensions.DependencyInjection;
using Orleans.Messaging;

namespace Orleans.Paxos.Grains.Clustering;

/// <summary>Connects an Orleans client to a cluster whose membership table runs on Paxos.</summary>
public static class PaxosClientBuilderExtensions
{
    /// <summary>
    /// Uses <see cref="PaxosGatewayListProvider"/>: the client starts from the seed gateways set by
    /// <paramref name="configure"/> (<see cref="PaxosGatewayOptions.Gateways"/>, <c>ip:port</c>) and then follows
    /// the active gateways of the cluster's Paxos membership table.
    /// </summary>
    public static IClientBuilder UsePaxosClustering(this IClientBuilder builder, Action<PaxosGatewayOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        builder.Services.Configure(configure);
        builder.Services.AddSingleton<IGatewayListProvider, PaxosGatewayListProvider>();
        return builder;
    }

    /// <summary>Uses <see cref="PaxosGatewayListProvider"/> with these seed gateways.</summary>
    public static IClientBuilder UsePaxosClustering(this IClientBuilder builder, params System.Net.IPEndPoint[] seeds)
    {
        ArgumentNullException.ThrowIfNull(seeds);
        return builder.UsePaxosClustering(o => o.Gateways.AddRange(seeds.Select(s => s.ToString())));
    }
}
