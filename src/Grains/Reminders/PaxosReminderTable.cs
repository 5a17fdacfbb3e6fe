using System.Globalization;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Paxos.Engine.StateMachines.KeyValue;
using Orleans.Paxos.Grains.Storage;

namespace Orleans.Paxos.Grains.Reminders;

/// <summary>
/// Orleans' reminder table on the replicated key-value store of the silo's own Paxos node. The grain-hash ring is
/// cut into <see cref="BucketCount"/> buckets (the top bits of the grain's uniform hash); each bucket is one key,
/// <c>&lt;serviceId&gt;/reminders/&lt;bucket&gt;</c>, holding the bucket's reminders, spread over the groups like any
/// key. A range read reads the buckets the range touches (through the log) and keeps the reminders in range;
/// a write is a compare-and-set of its bucket on the bucket's version, retried on a conflict.
/// </summary>
/// <remarks>Each reminder has its own ETag (a new random one per write), checked by <c>RemoveRow</c>.</remarks>
public sealed partial class PaxosReminderTable : IReminderTable
{
    /// <summary>How many buckets the hash ring is cut into.</summary>
    public const int BucketCount = 64;

    private const int BucketShift = 26; // 32 - log2(BucketCount)
    private const int MaxAttempts = 50;

    private readonly PaxosTableAccess _access;
    private readonly ILogger _logger;
    private readonly string _prefix;

    /// <summary>Creates the table for the silo's service id.</summary>
    public PaxosReminderTable(PaxosTableAccess access, IOptions<ClusterOptions> cluster, ILogger<PaxosReminderTable> logger)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        _access = access;
        _logger = logger;
        _prefix = cluster.Value.ServiceId + "/reminders/";
    }

    /// <inheritdoc />
    public Task StartAsync(CancellationToken cancellationToken = default) => Task.CompletedTask;

    /// <inheritdoc />
    public Task<ReminderTableData> ReadRows(GrainId grainId) => ReadRows(grainId, CancellationToken.None);

    /// <inheritdoc />
    public async Task<ReminderTableData> ReadRows(GrainId grainId, CancellationToken cancellationToken)
    {
        var (entries, _) = await ReadBucketAsync(BucketOf(grainId.GetUniformHashCode()), cancellationToken).ConfigureAwait(false);
        return new ReminderTableData(entries.Where(e => e.GrainId.Equals(grainId)));
    }

    /// <inheritdoc />
    public Task<ReminderTableData> ReadRows(uint begin, uint end) => ReadRows(begin, end, CancellationToken.None);

    /// <inheritdoc />
    public async Task<ReminderTableData> ReadRows(uint begin, uint end, CancellationToken cancellationToken)
    {
        var buckets = BucketsOf(begin, end);
        var reads = await Task.WhenAll(buckets.Select(b => ReadBucketAsync(b, cancellationToken))).ConfigureAwait(false);
        return new ReminderTableData(reads.SelectMany(r => r.Entries).Where(e => InRange(e.GrainId.GetUniformHashCode(), begin, end)));
    }

    /// <inheritdoc />
    public Task<ReminderEntry?> ReadRow(GrainId grainId, string reminderName) => ReadRow(grainId, reminderName, CancellationToken.None);

    /// <inheritdoc />
    public async Task<ReminderEntry?> ReadRow(GrainId grainId, string reminderName, CancellationToken cancellationToken)
    {
        var (entries, _) = await ReadBucketAsync(BucketOf(grainId.GetUniformHashCode()), cancellationToken).ConfigureAwait(false);
        return entries.FirstOrDefault(e => e.GrainId.Equals(grainId) && e.ReminderName == reminderName);
    }

    /// <inheritdoc />
    public Task<string?> UpsertRow(ReminderEntry entry) => UpsertRow(entry, CancellationToken.None);

    /// <inheritdoc />
    public async Task<string?> UpsertRow(ReminderEntry entry, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        var bucket = BucketOf(entry.GrainId.GetUniformHashCode());
        var etag = Guid.NewGuid().ToString("N");
        for (var attempt = 1; ; attempt++)
        {
            var (entries, version) = await ReadBucketAsync(bucket, cancellationToken).ConfigureAwait(false);
            entries.RemoveAll(e => e.GrainId.Equals(entry.GrainId) && e.ReminderName == entry.ReminderName);
            entries.Add(new ReminderEntry { GrainId = entry.GrainId, ReminderName = entry.ReminderName, StartAt = entry.StartAt, Period = entry.Period, ETag = etag });
            if (await WriteBucketAsync(bucket, entries, version, attempt, cancellationToken).ConfigureAwait(false))
            {
                entry.ETag = etag;
                return etag;
            }
        }
    }

    /// <inheritdoc />
    public Task<bool> RemoveRow(GrainId grainId, string reminderName, string eTag) => RemoveRow(grainId, reminderName, eTag, CancellationToken.None);

    /// <inheritdoc />
    public async Task<bool> RemoveRow(GrainId grainId, string reminderName, string eTag, CancellationToken cancellationToken)
    {
        var bucket = BucketOf(grainId.GetUniformHashCode());
        for (var attempt = 1; ; attempt++)
        {
            var (entries, version) = await ReadBucketAsync(bucket, cancellationToken).ConfigureAwait(false);
            if (entries.RemoveAll(e => e.GrainId.Equals(grainId) && e.ReminderName == reminderName && e.ETag == eTag) == 0)
            {
                return false;
            }

            if (await WriteBucketAsync(bucket, entries, version, attempt, cancellationToken).ConfigureAwait(false))
            {
                return true;
            }
        }
    }

    /// <inheritdoc />
    public Task TestOnlyClearTable() => TestOnlyClearTable(CancellationToken.None);

    /// <inheritdoc />
    public async Task TestOnlyClearTable(CancellationToken cancellationToken)
    {
        await Task.WhenAll(Enumerable.Range(0, BucketCount).Select(async b =>
        {
            for (var attempt = 1; ; attempt++)
            {
                var (entries, version) = await ReadBucketAsync(b, cancellationToken).ConfigureAwait(false);
                if (version == 0 || await WriteBucketAsync(b, [], version, attempt, cancellationToken).ConfigureAwait(false))
                {
                    return;
                }
            }
        })).ConfigureAwait(false);
    }

    /// <summary>The bucket of a grain hash.</summary>
    public static int BucketOf(uint hash) => (int)(hash >> BucketShift);

    /// <summary>The buckets a ring range (<paramref name="begin"/>, <paramref name="end"/>] touches (begin == end: the whole ring).</summary>
    public static IReadOnlyList<int> BucketsOf(uint begin, uint end)
    {
        if (begin == end || (begin == uint.MaxValue && end == uint.MaxValue))
        {
            return [.. Enumerable.Range(0, BucketCount)];
        }

        var result = new List<int>();
        if (begin < end)
        {
            for (var b = BucketOf(begin + 1); b <= BucketOf(end); b++)
            {
                result.Add(b);
            }
        }
        else
        {
            if (begin != uint.MaxValue)
            {
                for (var b = BucketOf(begin + 1); b < BucketCount; b++)
                {
                    result.Add(b);
                }
            }

            for (var b = 0; b <= BucketOf(end); b++)
            {
                if (!result.Contains(b))
                {
                    result.Add(b);
                }
            }
        }

        return result;
    }

    private static bool InRange(uint hash, uint begin, uint end) =>
        begin == end || (begin < end ? hash > begin && hash <= end : hash > begin || hash <= end);

    private string BucketKey(int bucket) => _prefix + bucket.ToString("x2", CultureInfo.InvariantCulture);

    private async Task<(List<ReminderEntry> Entries, ulong Version)> ReadBucketAsync(int bucket, CancellationToken cancellationToken)
    {
        var key = BucketKey(bucket);
        var result = await RunAsync("read", key, KeyValueCommand.Get(Encoding.UTF8.GetBytes(key)), cancellationToken).ConfigureAwait(false);
        return result.Status == KeyValueStatus.Ok && result.Value is { } value
            ? (Decode(value), result.Version)
            : ([], 0);
    }

    private async Task<bool> WriteBucketAsync(int bucket, List<ReminderEntry> entries, ulong version, int attempt, CancellationToken cancellationToken)
    {
        var key = BucketKey(bucket);
        var keyBytes = Encoding.UTF8.GetBytes(key);
        var operation = entries.Count == 0
            ? KeyValueCommand.Delete(keyBytes, version)
            : KeyValueCommand.CompareAndSet(keyBytes, Encode(entries), version);
        var result = await RunAsync("write", key, operation, cancellationToken).ConfigureAwait(false);
        if (result.Status is KeyValueStatus.Ok)
        {
            return true;
        }

        if (result.Status is KeyValueStatus.VersionConflict or KeyValueStatus.NotFound && attempt < MaxAttempts)
        {
            LogBucketConflict(key, attempt);
            await Task.Delay(Random.Shared.Next(1, 5 * attempt), cancellationToken).ConfigureAwait(false); // back off so that contending silos interleave
            return false;
        }

        throw new PaxosTableException($"Reminder table: writing bucket {key} failed after {attempt} attempts: {result.Status}.");
    }

    private async Task<KeyValueResult> RunAsync(string what, string key, byte[] operation, CancellationToken cancellationToken)
    {
        var host = _access.Host;
        var machine = host.KeyValue
            ?? throw new PaxosTableException($"Reminder table: node {host.MyNodeId} has no key-value store mounted; call AddPaxosKeyValueStore() on the silo.");
        var group = KeyValueClient.GroupOf(key, host.GroupCount);
        for (var attempt = 1; ; attempt++)
        {
            var output = await _access.ProposeAsync($"reminder table {what} of {key}", group, machine.SmId, PaxosTableAccess.WithNonce(operation), cancellationToken).ConfigureAwait(false);
            var result = output as KeyValueResult
                ?? throw new PaxosTableException($"Reminder table: state machine {machine.SmId} on group {group} is not the key-value store.");
            if (result.Status == KeyValueStatus.Retry && attempt < 16)
            {
                continue;
            }

            return result;
        }
    }

    private static byte[] Encode(List<ReminderEntry> entries)
    {
        using var stream = new MemoryStream();
        using (var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true))
        {
            w.Write((byte)1);
            w.Write(entries.Count);
            foreach (var e in entries)
            {
                w.Write(e.GrainId.ToString());
                w.Write(e.ReminderName);
                w.Write(e.StartAt.ToUniversalTime().Ticks);
                w.Write(e.Period.Ticks);
                w.Write(e.ETag ?? string.Empty);
            }
        }

        return stream.ToArray();
    }

    private static List<ReminderEntry> Decode(byte[] value)
    {
        try
        {
            using var r = new BinaryReader(new MemoryStream(value, writable: false), Encoding.UTF8);
            if (r.ReadByte() != 1)
            {
                throw new InvalidDataException("unknown reminder bucket format");
            }

            var count = r.ReadInt32();
            var list = new List<ReminderEntry>(count);
            for (var i = 0; i < count; i++)
            {
                list.Add(new ReminderEntry
                {
                    GrainId = GrainId.Parse(r.ReadString()),
                    ReminderName = r.ReadString(),
                    StartAt = new DateTime(r.ReadInt64(), DateTimeKind.Utc),
                    Period = TimeSpan.FromTicks(r.ReadInt64()),
                    ETag = r.ReadString(),
                });
            }

            return list;
        }
        catch (Exception ex) when (ex is EndOfStreamException or FormatException or ArgumentException)
        {
            throw new InvalidDataException("A reminder bucket does not decode: " + ex.Message, ex);
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Reminder bucket {Key} changed under a write (attempt {Attempt}); retrying.")]
    private partial void LogBucketConflict(string key, int attempt);
}
