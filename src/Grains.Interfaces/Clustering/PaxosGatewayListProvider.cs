using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Messaging;

namespace Orleans.Paxos.Grains.Clustering;

/// <summary>
/// The gateway list of an Orleans client of a cluster that runs its membership table on Paxos. A client has no
/// Paxos node, so it starts from configured seed gateways (<see cref="PaxosGatewayOptions.Gateways"/>) and, once
/// connected, refreshes the list from the membership table through any gateway
/// (<see cref="IPaxosGatewayListGrain"/>). It always returns the seeds too, so a client that lost every gateway it
/// learned can still come back through a seed. Never blocks: a refresh runs in the background. Thread-safe.
/// </summary>
public sealed partial class PaxosGatewayListProvider : IGatewayListProvider
{
    private readonly PaxosGatewayOptions _options;
    private readonly IServiceProvider _services;
    private readonly ILogger _logger;
    private readonly Uri[] _seeds;
    private volatile Uri[] _learned = [];
    private long _nextRefreshTicks;
    private int _refreshing;

    /// <summary>Creates the provider.</summary>
    public PaxosGatewayListProvider(IOptions<PaxosGatewayOptions> options, IServiceProvider services, ILogger<PaxosGatewayListProvider> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Value;
        _services = services;
        _logger = logger;
        _seeds = [.. _options.Gateways.Select(g => ToGatewayUri(IPEndPoint.Parse(g)))];
        if (_seeds.Length == 0)
        {
            throw new ArgumentException("UsePaxosClustering on a client needs at least one seed gateway (ip:port) in PaxosGatewayOptions.Gateways.", nameof(options));
        }

        _nextRefreshTicks = Environment.TickCount64 + (long)_options.RefreshPeriod.TotalMilliseconds;
    }

    /// <inheritdoc />
    public TimeSpan MaxStaleness => _options.RefreshPeriod;

    /// <inheritdoc />
    [Obsolete("Orleans no longer reads this; every provider is updatable.")]
    public bool IsUpdatable => true;

    /// <inheritdoc />
    public Task InitializeGatewayListProvider() => Task.CompletedTask;

    /// <inheritdoc />
    public Task InitializeGatewayListProviderAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <inheritdoc />
    public Task<IList<Uri>> GetGateways() => GetGatewaysAsync(CancellationToken.None);

    /// <inheritdoc />
    public Task<IList<Uri>> GetGatewaysAsync(CancellationToken cancellationToken)
    {
        if (Environment.TickCount64 >= Interlocked.Read(ref _nextRefreshTicks) && Interlocked.Exchange(ref _refreshing, 1) == 0)
        {
            _ = Task.Run(() => RefreshAsync(CancellationToken.None), CancellationToken.None);
        }

        var list = new List<Uri>(_learned);
        foreach (var seed in _seeds)
        {
            if (!list.Any(u => SameEndpoint(u, seed)))
            {
                list.Add(seed);
            }
        }

        return Task.FromResult<IList<Uri>>(list);
    }

    /// <summary>Reads the active gateways from the cluster now; false when the cluster could not be asked.</summary>
    public async Task<bool> RefreshAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            var grains = _services.GetRequiredService<IGrainFactory>();
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(_options.RefreshTimeout);
            var gateways = await grains.GetGrain<IPaxosGatewayListGrain>(0).GetGatewaysAsync(timeout.Token).WaitAsync(_options.RefreshTimeout).ConfigureAwait(false);
            var learned = gateways.Select(g => new Uri(g)).ToArray();
            if (learned.Length > 0)
            {
                _learned = learned;
                LogRefreshed(learned.Length);
            }

            return true;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // Not connected yet, or every gateway is down: keep what we know and the seeds.
            LogRefreshFailed(ex.Message);
            return false;
        }
        finally
        {
            Interlocked.Exchange(ref _nextRefreshTicks, Environment.TickCount64 + (long)_options.RefreshPeriod.TotalMilliseconds);
            Volatile.Write(ref _refreshing, 0);
        }
    }

    private static Uri ToGatewayUri(IPEndPoint endpoint) => new($"gwy.tcp://{endpoint}/0");

    private static bool SameEndpoint(Uri a, Uri b) => a.Host == b.Host && a.Port == b.Port;

    [LoggerMessage(Level = LogLevel.Debug, Message = "Gateway list refreshed from the membership table: {Count} active gateways.")]
    private partial void LogRefreshed(int count);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Gateway list refresh failed ({Reason}); using the gateways known so far and the seeds.")]
    private partial void LogRefreshFailed(string reason);
}

/// <summary>Settings of <c>UsePaxosClustering</c> on a client.</summary>
public sealed class PaxosGatewayOptions
{
    /// <summary>Seed gateways, <c>ip:port</c> (the silos' gateway ports); at least one.</summary>
    public List<string> Gateways { get; set; } = [];

    /// <summary>How often the list is refreshed from the membership table. Default 30 s.</summary>
    public TimeSpan RefreshPeriod { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long one refresh may take. Default 5 s.</summary>
    public TimeSpan RefreshTimeout { get; set; } = TimeSpan.FromSeconds(5);
}
