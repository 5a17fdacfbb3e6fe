using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Paxos.Grains.Reminders;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>
/// The cases of Orleans' <c>ReminderTableTestsBase</c> (upsert, read row, read by grain, ranges by grain hash,
/// remove with ETags, clear) against <see cref="PaxosReminderTable"/> on a three-node Paxos cluster.
/// </summary>
public sealed class PaxosReminderTableTests(PaxosTrio trio) : IClassFixture<PaxosTrio>
{
    private readonly string _serviceId = "r-" + Guid.NewGuid().ToString("N");

    private PaxosReminderTable Table(int node) =>
        new(trio.Access(node), Options.Create(new ClusterOptions { ServiceId = _serviceId, ClusterId = "c" }), NullLogger<PaxosReminderTable>.Instance);

    private static ReminderEntry NewEntry(GrainId? grain = null, string name = "r") => new()
    {
        GrainId = grain ?? GrainId.Create("test", Guid.NewGuid().ToString("N")),
        ReminderName = name,
        StartAt = new DateTime(DateTime.UtcNow.Ticks / TimeSpan.TicksPerSecond * TimeSpan.TicksPerSecond, DateTimeKind.Utc),
        Period = TimeSpan.FromMinutes(1),
    };

    [Fact]
    public async Task Upsert_then_read_row_and_rows_through_other_nodes()
    {
        var entry = NewEntry();
        var etag = await Table(0).UpsertRow(entry);
        Assert.NotNull(etag);
        var row = await Table(1).ReadRow(entry.GrainId, "r");
        Assert.NotNull(row);
        Assert.Equal(etag, row.ETag);
        Assert.Equal(entry.StartAt, row.StartAt);
        Assert.Equal(entry.Period, row.Period);

        var second = NewEntry(entry.GrainId, "r2");
        var etag2 = await Table(2).UpsertRow(second);
        var rows = await Table(0).ReadRows(entry.GrainId);
        Assert.Equal(2, rows.Reminders.Count);
        Assert.NotEqual(etag, etag2);
        Assert.Null(await Table(0).ReadRow(entry.GrainId, "missing"));
    }

    [Fact]
    public async Task Upsert_of_an_existing_reminder_replaces_it_with_a_new_etag()
    {
        var entry = NewEntry();
        var first = await Table(0).UpsertRow(entry);
        entry.Period = TimeSpan.FromMinutes(5);
        var second = await Table(1).UpsertRow(entry);
        Assert.NotEqual(first, second);
        var rows = await Table(2).ReadRows(entry.GrainId);
        var row = Assert.Single(rows.Reminders);
        Assert.Equal(TimeSpan.FromMinutes(5), row.Period);
        Assert.False(await Table(0).RemoveRow(entry.GrainId, "r", first!), "stale etag");
        Assert.True(await Table(0).RemoveRow(entry.GrainId, "r", second!));
        Assert.Null(await Table(1).ReadRow(entry.GrainId, "r"));
        Assert.False(await Table(1).RemoveRow(entry.GrainId, "r", second!), "already removed");
    }

    [Fact]
    public async Task Range_reads_return_exactly_the_reminders_whose_grain_hash_is_in_range()
    {
        var entries = Enumerable.Range(0, 40).Select(_ => NewEntry()).ToList();
        await Task.WhenAll(entries.Select((e, i) => Table(i % 3).UpsertRow(e)));
        var hashes = entries.Select(e => e.GrainId.GetUniformHashCode()).OrderBy(h => h).ToList();

        var all = await Table(0).ReadRows(0, 0);
        Assert.Equal(40, all.Reminders.Count);

        uint begin = hashes[10], end = hashes[30];
        var inside = await Table(1).ReadRows(begin, end);
        Assert.Equal(entries.Where(e => e.GrainId.GetUniformHashCode() > begin && e.GrainId.GetUniformHashCode() <= end).Select(e => e.GrainId).OrderBy(g => g.ToString()),
            inside.Reminders.Select(r => r.GrainId).OrderBy(g => g.ToString()));

        var wrapped = await Table(2).ReadRows(end, begin);
        Assert.Equal(40 - inside.Reminders.Count, wrapped.Reminders.Count);
        Assert.DoesNotContain(wrapped.Reminders, r => inside.Reminders.Any(i => i.GrainId.Equals(r.GrainId)));
    }

    [Fact]
    public async Task Concurrent_upserts_to_one_bucket_all_land_and_clear_empties_the_table()
    {
        var grain = GrainId.Create("test", "one-grain");
        var etags = await Task.WhenAll(Enumerable.Range(0, 12).Select(i => Table(i % 3).UpsertRow(NewEntry(grain, "n" + i))));
        Assert.Equal(12, etags.Distinct().Count());
        Assert.Equal(12, (await Table(0).ReadRows(grain)).Reminders.Count);
        await Table(1).TestOnlyClearTable();
        Assert.Empty((await Table(2).ReadRows(0, 0)).Reminders);
    }

    [Fact]
    public void Buckets_of_a_range_cover_it()
    {
        Assert.Equal(PaxosReminderTable.BucketCount, PaxosReminderTable.BucketsOf(5, 5).Count);
        Assert.Equal([0], PaxosReminderTable.BucketsOf(0, 10));
        Assert.Equal([PaxosReminderTable.BucketCount - 1, 0], PaxosReminderTable.BucketsOf(uint.MaxValue - 10, 10));
        Assert.Equal([0], PaxosReminderTable.BucketsOf(uint.MaxValue, 10));
    }
}
