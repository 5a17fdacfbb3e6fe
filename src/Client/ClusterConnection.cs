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
            var listening = await ListeningAsync(endpoints, cancellationToken);
            throw new ClusterUnreachableException(
                $"No gateway answered ({string.Join(", ", gateways)}): is the cluster running, and are these its gateways (-g ip:port)?",
                listening,
                ex);
        }

        return new ClusterConnection(host);
    }

    /// <summary>The gateways that accept a TCP connection (something listens there, if not an Orleans gateway of this cluster).</summary>
    private static async Task<IReadOnlyList<string>> ListeningAsync(IPEndPoint[] endpoints, CancellationToken cancellationToken)
    {
        var listening = new List<string>();
        foreach (var endpoint in endpoints)
        {
            using var socket = new System.Net.Sockets.Socket(endpoint.AddressFamily, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(1));
            try
            {
                await socket.ConnectAsync(endpoint, timeout.Token);
                listening.Add(endpoint.ToString());
            }
            catch (Exception ex) when (ex is System.Net.Sockets.SocketException or OperationCanceledException)
            {
            }
        }

        return listening;
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
/// <param name="message">What happened.</param>
/// <param name="listening">Gateways that accept TCP connections all the same (then the client was refused, e.g. for a wrong cluster id).</param>
/// <param name="inner">The cause.</param>
public sealed class ClusterUnreachableException(string message, IReadOnlyList<string> listening, Exception inner) : Exception(message, inner)
{
    /// <summary>Gateways that accept TCP connections although the client could not connect through them.</summary>
    public IReadOnlyList<string> Listening { get; } = listening;
}
