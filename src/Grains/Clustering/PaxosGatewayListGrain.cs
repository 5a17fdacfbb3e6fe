using Orleans.Concurrency;

namespace Orleans.Paxos.Grains.Clustering;

/// <summary>
/// <see cref="IPaxosGatewayListGrain"/>: reads the silo's membership table through the log and returns the
/// gateways of the Active silos.
/// </summary>
[StatelessWorker]
public sealed class PaxosGatewayListGrain(IMembershipTable table) : Grain, IPaxosGatewayListGrain
{
    /// <inheritdoc />
    public async Task<string[]> GetGatewaysAsync(CancellationToken cancellationToken = default)
    {
        var data = await table.ReadAllAsync(cancellationToken);
        return [.. data.Members
            .Select(m => m.Item1)
            .Where(e => e.Status == SiloStatus.Active && e.ProxyPort > 0)
            .Select(e => SiloAddress.New(e.SiloAddress.Endpoint.Address, e.ProxyPort, e.SiloAddress.Generation).ToGatewayUri().ToString())];
    }
}
