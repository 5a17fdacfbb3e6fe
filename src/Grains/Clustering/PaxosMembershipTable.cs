using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Paxos.Grains.Storage;

namespace Orleans.Paxos.Grains.Clustering;

/// <summary>
/// Orleans' membership table on the silos' own Paxos log: every operation is proposed to group
/// <see cref="PaxosClusteringOptions.Group"/> for the <see cref="MembershipStateMachine"/>, which checks
/// table versions and ETags in log order. Reads go through the log too, so each silo's view is
/// linearizable. Calls the silo's engine directly (membership starts before grains exist).
/// </summary>
public sealed class PaxosMembershipTable : IMembershipTable
{
    private readonly PaxosTableAccess _access;
    private readonly PaxosClusteringOptions _options;
    private readonly string _clusterId;

    /// <summary>Creates the table for the silo's cluster id.</summary>
    public PaxosMembershipTable(PaxosTableAccess access, IOptions<PaxosClusteringOptions> options, IOptions<ClusterOptions> cluster)
    {
        ArgumentNullException.ThrowIfNull(access);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(cluster);
        _access = access;
        _options = options.Value;
        _clusterId = cluster.Value.ClusterId;
    }

    /// <inheritdoc />
    /// <remarks>Nothing to create: an absent table reads as empty with version 0. Needs no majority, so silos may start in any order.</remarks>
    public Task InitializeMembershipTable(bool tryInitTableVersion) => Task.CompletedTask;

    /// <inheritdoc />
    public Task InitializeMembershipTableAsync(bool tryInitTableVersion, CancellationToken cancellationToken) => Task.CompletedTask;

    /// <inheritdoc />
    public Task DeleteMembershipTableEntries(string clusterId) => DeleteMembershipTableEntriesAsync(clusterId, CancellationToken.None);

    /// <inheritdoc />
    public async Task DeleteMembershipTableEntriesAsync(string clusterId, CancellationToken cancellationToken) =>
        await RunAsync("DeleteMembershipTableEntries", MembershipCommand.Delete(clusterId), cancellationToken).ConfigureAwait(false);

    /// <inheritdoc />
    public Task CleanupDefunctSiloEntries(DateTimeOffset beforeDate) => CleanupDefunctSiloEntriesAsync(beforeDate, CancellationToken.None);

    /// <inheritdoc />
    public async Task CleanupDefunctSiloEntriesAsync(DateTimeOffset beforeDate, CancellationToken cancellationToken) =>
        await RunAsync("CleanupDefunctSiloEntries", MembershipCommand.Cleanup(_clusterId, beforeDate.UtcDateTime), cancellationToken).ConfigureAwait(false);

    /// <inheritdoc />
    public Task<MembershipTableData> ReadRow(SiloAddress key) => ReadRowAsync(key, CancellationToken.None);

    /// <inheritdoc />
    public async Task<MembershipTableData> ReadRowAsync(SiloAddress key, CancellationToken cancellationToken) =>
        (await RunAsync("ReadRow", MembershipCommand.ReadRow(_clusterId, key), cancellationToken).ConfigureAwait(false)).Data!;

    /// <inheritdoc />
    public Task<MembershipTableData> ReadAll() => ReadAllAsync(CancellationToken.None);

    /// <inheritdoc />
    public async Task<MembershipTableData> ReadAllAsync(CancellationToken cancellationToken) =>
        (await RunAsync("ReadAll", MembershipCommand.ReadAll(_clusterId), cancellationToken).ConfigureAwait(false)).Data!;

    /// <inheritdoc />
    public Task<bool> InsertRow(MembershipEntry entry, TableVersion tableVersion) => InsertRowAsync(entry, tableVersion, CancellationToken.None);

    /// <inheritdoc />
    public async Task<bool> InsertRowAsync(MembershipEntry entry, TableVersion tableVersion, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        ArgumentNullException.ThrowIfNull(tableVersion);
        return (await RunAsync("InsertRow", MembershipCommand.Insert(_clusterId, entry, tableVersion.Version), cancellationToken).ConfigureAwait(false)).Ok;
    }

    /// <inheritdoc />
    public Task<bool> UpdateRow(MembershipEntry entry, string etag, TableVersion tableVersion) => UpdateRowAsync(entry, etag, tableVersion, CancellationToken.None);

    /// <inheritdoc />
    public async Task<bool> UpdateRowAsync(MembershipEntry entry, string etag, TableVersion tableVersion, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        ArgumentNullException.ThrowIfNull(tableVersion);
        return (await RunAsync("UpdateRow", MembershipCommand.Update(_clusterId, entry, etag ?? string.Empty, tableVersion.Version), cancellationToken).ConfigureAwait(false)).Ok;
    }

    /// <inheritdoc />
    public Task UpdateIAmAlive(MembershipEntry entry) => UpdateIAmAliveAsync(entry, CancellationToken.None);

    /// <inheritdoc />
    /// <exception cref="PaxosTableException">The silo has no row in the table.</exception>
    public async Task UpdateIAmAliveAsync(MembershipEntry entry, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        var result = await RunAsync("UpdateIAmAlive", MembershipCommand.IAmAlive(_clusterId, entry.SiloAddress, entry.IAmAliveTime.ToUniversalTime()), cancellationToken).ConfigureAwait(false);
        if (!result.Ok)
        {
            throw new PaxosTableException($"UpdateIAmAlive: silo {entry.SiloAddress} has no row in the membership table of cluster '{_clusterId}'.");
        }
    }

    private async Task<MembershipResult> RunAsync(string what, MembershipCommand command, CancellationToken cancellationToken)
    {
        var output = await _access.ProposeAsync("membership " + what, _options.Group, _options.SmId, command.Encode(), cancellationToken).ConfigureAwait(false);
        return output as MembershipResult
            ?? throw new PaxosTableException($"membership {what}: state machine {_options.SmId} on group {_options.Group} is not the membership table; another state machine uses that id.");
    }
}

/// <summary>Settings of <c>UsePaxosClustering</c> on a silo.</summary>
public sealed class PaxosClusteringOptions
{
    /// <summary>The Paxos group holding the membership table. Default 0.</summary>
    public int Group { get; set; }

    /// <summary>The membership state machine's id on that group. Default <see cref="MembershipStateMachine.DefaultSmId"/>.</summary>
    public int SmId { get; set; } = MembershipStateMachine.DefaultSmId;
}
