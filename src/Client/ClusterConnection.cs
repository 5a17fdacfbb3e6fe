using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;

namespace Orleans.Paxos.Client;

/// <summary>An Orleans client connected to the cluster's gateways.</summary>
public sealed class ClusterConnection : IAsyncDisposable
{
    /// <summary>The gateways of the default local cluster (<c>dotnet run --project src/Silo</c>).</summary>
    public static readonly string[] DefaultGateways = ["127.0.0.1:30000", "127.0.0.1:30001", "127.0.0.1:30002"];

    private readonly IHost _host;

    private ClusterConnection(IHost host)
    {
        _host = host;
        Grains = host.Services.GetRequiredService<IClusterClient>();
    }

    /// <summary>The client.</summary>
    public IClusterClient Grains { get; }

    /// <summary>Connects; throws <see cref="ClusterUnreachableException"/> when no gateway answers.</summary>
    public static async Task<ClusterConnection> ConnectAsync(IReadOnlyList<string> gateways, string clusterId, string serviceId, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var endpoints = gateways.Select(g => IPEndPoint.TryParse(g, out var ep) ? ep : throw new FormatException($"'{g}' is not a gateway address such as 127.0.0.1:30000.")).ToArray();
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.ClearProviders();
        builder.UseOrleansClient(client =>
        {
            client.UseStaticClustering(endpoints);
            client.Configure<ClusterOptions>(o =>
            {
                o.ClusterId = clusterId;
                o.ServiceId = serviceId;
            });
            client.Configure<ClientMessagingOptions>(o => o.ResponseTimeout = timeout);
        });
        var host = builder.Build();
        try
        {
            using var connectTimeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            connectTimeout.CancelAfter(TimeSpan.FromSeconds(10));
            await host.StartAsync(connectTimeout.Token);
        }
        catch (Exception ex) when (ex is OrleansException or OperationCanceledException or System.Net.Sockets.SocketException or TimeoutException)
        {
            host.Dispose();
            throw new ClusterUnreachableException($"No gateway answered ({string.Join(", ", gateways)}): {ex.Message}", ex);
        }

        return new ClusterConnection(host);
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

/// <summary>The cluster could not be reached.</summary>
public sealed class ClusterUnreachableException(string message, Exception inner) : Exception(message, inner);
