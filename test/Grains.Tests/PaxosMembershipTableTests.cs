using System.Net;
using Orleans.Paxos.Grains.Clustering;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>
/// The cases of Orleans' <c>MembershipTableTestsBase</c> (table version, ETags, concurrent inserts of one silo,
/// read-after-write, delete, cleanup) against <see cref="PaxosMembershipTable"/> on a three-node Paxos cluster.
/// Each test uses a cluster id of its own.
/// </summary>
public sealed class PaxosMembershipTableTests(PaxosTrio trio) : IClassFixture<PaxosTrio>
{
    private static int _generation = 1;
    private static int _port = 10000;

    private readonly string _clusterId = "c-" + Guid.NewGuid().ToString("N");

    private PaxosMembershipTable Table(int node = 0) => trio.MembershipTable(node, _clusterId);

    [Fact]
    public async Task ReadAll_of_an_empty_table_has_version_zero_and_no_rows()
    {
        var data = await Table().ReadAll();
        Assert.Empty(data.Members);
        Assert.Equal(0, data.Version.Version);
        Assert.NotNull(data.Version.VersionEtag);
    }

    [Fact]
    public async Task InsertRow_bumps_the_table_version()
    {
        var table = Table();
        var data = await table.ReadAll();
        Assert.True(await table.InsertRow(NewEntry(), data.Version.Next()));
        data = await table.ReadAll();
        Assert.Equal(1, data.Version.Version);
        Assert.Single(data.Members);
    }

    [Fact]
    public async Task ReadRow_Insert_Read_refuses_old_versions_and_duplicates()
    {
        var table = Table();
        var data = await table.ReadAll();
        var next = data.Version.Next();
        var entry = NewEntry();
        Assert.True(await table.InsertRow(entry, next));
        Assert.False(await table.InsertRow(entry, next), "same entry, old table version");
        Assert.False(await table.InsertRow(NewEntry(), next), "new entry, old table version");
        data = await table.ReadAll();
        Assert.Equal(1, data.Version.Version);
        Assert.False(await table.InsertRow(entry, data.Version.Next()), "duplicate entry");
        data = await table.ReadAll();
        Assert.Single(data.Members);

        data = await table.ReadRow(entry.SiloAddress);
        Assert.Equal(next.Version, data.Version.Version);
        Assert.NotEqual(next.VersionEtag, data.Version.VersionEtag);
        Assert.Single(data.Members);
        Assert.NotNull(data.Members[0].Item2);
        Assert.Equal(entry.ToFullString(), data.Members[0].Item1.ToFullString());
    }

    [Fact]
    public async Task UpdateRow_checks_the_etag_and_the_table_version()
    {
        var table = Table();
        var data = await table.ReadAll();
        for (var i = 1; i < 6; i++)
        {
            var entry = NewEntry();
            entry.SuspectTimes = [Tuple.Create(NewAddress(), Now().AddSeconds(1)), Tuple.Create(NewAddress(), Now().AddSeconds(2))];
            var version = data.Version.Next();
            Assert.True(await table.InsertRow(entry, version));
            data = await table.ReadAll();
            var etagBefore = data.TryGet(entry.SiloAddress)!.Item2;

            Assert.False(await table.UpdateRow(entry, etagBefore, version), "old table version");
            data = await table.ReadAll();
            version = data.Version.Next();
            Assert.True(await table.UpdateRow(entry, etagBefore, version));
            Assert.False(await table.UpdateRow(entry, etagBefore, version), "old etag and version");

            data = await table.ReadAll();
            var row = data.TryGet(entry.SiloAddress)!;
            Assert.Equal(entry.ToFullString(), row.Item1.ToFullString());
            var etagAfter = row.Item2;
            Assert.NotEqual(etagBefore, etagAfter);
            Assert.False(await table.UpdateRow(entry, etagAfter, version), "right etag, old version");
            Assert.False(await table.UpdateRow(entry, etagBefore, data.Version.Next()), "stale etag, right version");
            data = await table.ReadAll();
            Assert.Equal(etagAfter, data.TryGet(entry.SiloAddress)!.Item2);
            Assert.Equal(version.Version, data.Version.Version);
            Assert.Equal(i, data.Members.Count);
        }
    }

    [Fact]
    public async Task Concurrent_inserts_of_one_silo_through_three_nodes_admit_exactly_one_then_updates_serialize()
    {
        var tables = new[] { Table(0), Table(1), Table(2) };
        var data = await tables[0].ReadAll();
        var entry = NewEntry();
        var next = data.Version.Next();
        var inserts = await Task.WhenAll(Enumerable.Range(0, 12).Select(i => tables[i % 3].InsertRow(entry, next)));
        Assert.Single(inserts, ok => ok);

        await Task.WhenAll(Enumerable.Range(0, 9).Select(async i =>
        {
            var table = tables[i % 3];
            while (true)
            {
                var d = await table.ReadAll();
                var row = d.TryGet(entry.SiloAddress)!;
                if (await table.UpdateRow(row.Item1, row.Item2, d.Version.Next()))
                {
                    return;
                }
            }
        })).WaitAsync(TimeSpan.FromSeconds(60));

        data = await tables[2].ReadAll();
        Assert.Equal(10, data.Version.Version);
        Assert.Single(data.Members);
    }

    [Fact]
    public async Task UpdateIAmAlive_changes_only_the_alive_time()
    {
        var table = Table();
        var data = await table.ReadAll();
        var version = data.Version.Next();
        var entry = NewEntry();
        Assert.True(await table.InsertRow(entry, version));
        var etag = (await table.ReadRow(entry.SiloAddress)).Members[0].Item2;
        var alive = DateTime.UtcNow.AddSeconds(5);
        await table.UpdateIAmAlive(new MembershipEntry { SiloAddress = entry.SiloAddress, IAmAliveTime = alive });
        data = await table.ReadAll();
        var row = data.TryGet(entry.SiloAddress)!;
        Assert.True((alive - row.Item1.IAmAliveTime).Duration() < TimeSpan.FromSeconds(1));
        Assert.Equal(version.Version, data.Version.Version);
        Assert.Equal(etag, row.Item2);
        await Assert.ThrowsAsync<Storage.PaxosTableException>(() => table.UpdateIAmAlive(new MembershipEntry { SiloAddress = NewAddress(), IAmAliveTime = alive }));
    }

    [Fact]
    public async Task CleanupDefunctSiloEntries_removes_old_rows_that_are_not_active()
    {
        var table = Table();
        var data = await table.ReadAll();
        var dead = Old(NewEntry(), SiloStatus.Dead);
        Assert.True(await table.InsertRow(dead, data.Version.Next()));
        data = await table.ReadAll();
        Assert.True(await table.InsertRow(Old(NewEntry(), SiloStatus.Joining), data.Version.Next()));
        data = await table.ReadAll();
        Assert.True(await table.InsertRow(NewEntry(), data.Version.Next()));
        foreach (var status in Enum.GetValues<SiloStatus>())
        {
            data = await table.ReadAll();
            Assert.True(await table.InsertRow(Old(NewEntry(), status), data.Version.Next()));
        }

        await table.CleanupDefunctSiloEntries(dead.IAmAliveTime.AddDays(3));
        data = await table.ReadAll();
        Assert.Equal(2, data.Members.Count); // the fresh row and the old Active one
        Assert.Contains(data.Members, m => m.Item1.Status == SiloStatus.Active && m.Item1.IAmAliveTime < DateTime.UtcNow.AddDays(-5));
    }

    [Fact]
    public async Task A_write_through_one_node_is_read_through_every_node_and_delete_empties_the_table()
    {
        var entry = NewEntry();
        Assert.True(await Table(1).InsertRow(entry, new TableVersion(1, "0")));
        foreach (var node in new[] { 0, 2, 1 })
        {
            var data = await Table(node).ReadAll();
            Assert.Equal(1, data.Version.Version);
            Assert.Equal(entry.ToFullString(), Assert.Single(data.Members).Item1.ToFullString());
        }

        await Table(2).DeleteMembershipTableEntries(_clusterId);
        var after = await Table(0).ReadAll();
        Assert.Empty(after.Members);
        Assert.Equal(0, after.Version.Version);
    }

    [Fact]
    public void Commands_round_trip_every_field()
    {
        var entry = NewEntry();
        entry.SuspectTimes = [Tuple.Create(NewAddress(), Now())];
        entry.RoleName = "role";
        var decoded = MembershipCommand.Decode(MembershipCommand.Update("c", entry, "7.0", 9).Encode());
        Assert.Equal(MembershipOperation.UpdateRow, decoded.Operation);
        Assert.Equal("7.0", decoded.ETag);
        Assert.Equal(9, decoded.TableVersion);
        Assert.Equal(entry.ToFullString(), decoded.Entry!.ToFullString());
        Assert.Throws<InvalidDataException>(() => MembershipCommand.Decode([9, 9, 9]));
    }

    internal static SiloAddress NewAddress() =>
        SiloAddress.New(new IPEndPoint(IPAddress.Loopback, Interlocked.Increment(ref _port)), Interlocked.Increment(ref _generation));

    private static DateTime Now()
    {
        var now = DateTime.UtcNow;
        return new DateTime(now.Ticks - (now.Ticks % TimeSpan.TicksPerSecond), DateTimeKind.Utc);
    }

    private static MembershipEntry NewEntry()
    {
        var address = NewAddress();
        return new MembershipEntry
        {
            SiloAddress = address,
            HostName = "host-" + address.Endpoint.Port,
            SiloName = "silo-" + address.Endpoint.Port,
            Status = SiloStatus.Joining,
            ProxyPort = address.Endpoint.Port + 1,
            RoleName = null,
            StartTime = Now(),
            IAmAliveTime = Now(),
        };
    }

    private static MembershipEntry Old(MembershipEntry e, SiloStatus status)
    {
        e.Status = status;
        e.IAmAliveTime = e.IAmAliveTime.AddDays(-10);
        e.StartTime = e.StartTime.AddDays(-10);
        return e;
    }
}
