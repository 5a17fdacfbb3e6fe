using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;

namespace Orleans.Paxos.Faults.Cluster;

/// <summary>An Orleans client in the harness process, connected to a list of gateways.</summary>
public sealed class HarnessClient : IAsyncDisposable
{
    private readonly IHost _host;

    private HarnessClient(IHost host)
    {
        _host = host;
        Grains = host.Services.GetRequiredService<IClusterClient>();
    }

    /// <summary>The client.</summary>
    public IClusterClient Grains { get; }

    /// <summary>Connects, retrying for up to <paramref name="connectTimeout"/>.</summary>
    public static async Task<HarnessClient> ConnectAsync(IReadOnlyList<string> gateways, TimeSpan responseTimeout, TimeSpan connectTimeout, string clusterId = "paxos", string serviceId = "paxos")
    {
        ArgumentNullException.ThrowIfNull(gateways);
        var endpoints = gateways.Select(IPEndPoint.Parse).ToArray();
        var deadline = DateTime.UtcNow + connectTimeout;
        while (true)
        {
            var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
            builder.Logging.ClearProviders();
            builder.UseOrleansClient(client =>
            {
                client.UseStaticClustering(endpoints);
                client.Configure<Orleans.Configuration.ClusterOptions>(o =>
                {
                    o.ClusterId = clusterId;
                    o.ServiceId = serviceId;
                });
                client.Configure<ClientMessagingOptions>(o => o.ResponseTimeout = responseTimeout);
                client.Configure<GatewayOptions>(o => o.GatewayListRefreshPeriod = TimeSpan.FromSeconds(5));
            });
            var host = builder.Build();
            try
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
                await host.StartAsync(cts.Token);
                return new HarnessClient(host);
            }
            catch (Exception) when (DateTime.UtcNow < deadline)
            {
                // Not connected yet (the gateways may still be starting): the next attempt comes after a pause.
                host.Dispose();
                await Task.Delay(1000);
            }
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await _host.StopAsync(timeout.Token);
        }
        catch (Exception ex) when (ex is OrleansException or OperationCanceledException)
        {
        }

        _host.Dispose();
    }
}
