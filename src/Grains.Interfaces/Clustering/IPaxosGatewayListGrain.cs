namespace Orleans.Paxos.Grains.Clustering;

/// <summary>
/// Serves clients the gateways of the cluster's active silos, read from the Paxos-backed membership table
/// (through the log). Used by <see cref="PaxosGatewayListProvider"/>; any key works (a stateless worker).
/// </summary>
[Alias("paxos.IPaxosGatewayListGrain")]
public interface IPaxosGatewayListGrain : IGrainWithIntegerKey
{
    /// <summary>The gateway URIs (<c>gwy.tcp://ip:port/generation</c>) of the silos that are Active in the membership table.</summary>
    [Alias("GetGateways")]
    Task<string[]> GetGatewaysAsync(CancellationToken cancellationToken = default);
}
