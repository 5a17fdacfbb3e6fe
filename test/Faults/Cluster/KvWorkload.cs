using System.Globalization;
using System.Text;
using Orleans.Paxos.Faults.History;
using Orleans.Paxos.Grains;

namespace Orleans.Paxos.Faults.Cluster;

/// <summary>
/// Concurrent clients doing get, put, delete and compare-and-set on a small key set so that operations
/// collide; every operation is recorded (history-format.md). A cas expects the value the client last
/// saw for the key and sends that value's version: versions are 1 + the instance of the write and values
/// are unique, so the version names the value.
/// </summary>
public sealed class KvWorkload(IGrainFactory grains, int groupCount, HistoryRecorder recorder, int clients, int keys, int seed, TimeSpan opTimeout)
{
    /// <summary>The client id of the final reads.</summary>
    public const int FinalClient = 999_999;

    /// <summary>A final read that failed is retried after this pause (a client's retry pace; every attempt is recorded).</summary>
    private static readonly TimeSpan RetryPause = TimeSpan.FromMilliseconds(500);

    private long _done;

    /// <summary>Operations completed with a known outcome.</summary>
    public long Completed => Interlocked.Read(ref _done);

    /// <summary>The keys used.</summary>
    public IReadOnlyList<string> Keys { get; } = Enumerable.Range(0, keys).Select(k => "k" + k.ToString(CultureInfo.InvariantCulture)).ToArray();

    /// <summary>Runs every client until <paramref name="stop"/>.</summary>
    public Task RunAsync(CancellationToken stop) =>
        Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(() => ClientLoopAsync(c, stop), CancellationToken.None)));

    /// <summary>
    /// A linearizable read of every key, by a separate client id, retried until it completes (bounded by
    /// <paramref name="timeout"/>); these reads come after every other operation and show lost writes.
    /// </summary>
    public async Task<bool> FinalReadsAsync(TimeSpan timeout)
    {
        var kv = new KeyValueClient(grains, groupCount);
        var deadline = DateTime.UtcNow + timeout;
        var all = true;
        foreach (var key in Keys)
        {
            var ok = false;
            while (!ok && DateTime.UtcNow < deadline)
            {
                var call = HistoryFile.NowNanoseconds();
                try
                {
                    var r = await kv.GetAsync(key).WaitAsync(opTimeout);
                    var ret = HistoryFile.NowNanoseconds();
                    if (r.Status is KvStatus.Ok or KvStatus.NotFound)
                    {
                        recorder.Record(new HistoryOp(FinalClient, OpKind.Get, key, r.Status == KvStatus.Ok ? r.ValueText : null, null, null, call, ret, OpStatus.Ok, Note: "final"));
                        ok = true;
                    }
                    else
                    {
                        recorder.Record(new HistoryOp(FinalClient, OpKind.Get, key, null, null, null, call, ret, OpStatus.Fail, Note: "final " + r.Proposal));
                        await Task.Delay(RetryPause);
                    }
                }
                catch (Exception ex) when (IsTransient(ex))
                {
                    recorder.Record(new HistoryOp(FinalClient, OpKind.Get, key, null, null, null, call, null, OpStatus.Info, Note: "final " + ex.GetType().Name));
                    await Task.Delay(RetryPause);
                }
            }

            all &= ok;
        }

        return all;
    }

    private async Task ClientLoopAsync(int client, CancellationToken stop)
    {
        var random = new Random(HashCode.Combine(seed, client));
        var kv = new KeyValueClient(grains, groupCount);
        var known = new Dictionary<string, (string? Value, ulong Version)>();
        var seq = 0;
        var id = client; // a client whose op has an unknown outcome continues under a new id, as in Jepsen
        while (!stop.IsCancellationRequested)
        {
            var key = Keys[random.Next(Keys.Count)];
            var dice = random.Next(100);
            var value = $"c{client}-{++seq}";
            var call = HistoryFile.NowNanoseconds();
            HistoryOp op;
            try
            {
                if (dice < 40)
                {
                    var r = await kv.GetAsync(key).WaitAsync(opTimeout, CancellationToken.None);
                    var ret = HistoryFile.NowNanoseconds();
                    op = r.Status switch
                    {
                        KvStatus.Ok or KvStatus.NotFound => new HistoryOp(client, OpKind.Get, key, r.Status == KvStatus.Ok ? r.ValueText : null, null, null, call, ret, OpStatus.Ok),
                        _ => new HistoryOp(client, OpKind.Get, key, null, null, null, call, ret, OpStatus.Fail, Note: r.Proposal.ToString()),
                    };
                    if (op.Status == OpStatus.Ok)
                    {
                        known[key] = (op.Value, r.Version);
                    }
                }
                else if (dice < 65)
                {
                    var r = await kv.PutAsync(key, value).WaitAsync(opTimeout, CancellationToken.None);
                    op = Write(client, OpKind.Put, key, value, null, null, call, r);
                    if (r.IsOk)
                    {
                        known[key] = (value, r.Version);
                    }
                }
                else if (dice < 90)
                {
                    var (expected, version) = known.TryGetValue(key, out var k) ? k : (null, 0UL);
                    var r = await kv.CompareAndSetAsync(key, Encoding.UTF8.GetBytes(value), version).WaitAsync(opTimeout, CancellationToken.None);
                    var ret = HistoryFile.NowNanoseconds();
                    switch (r.Status)
                    {
                        case KvStatus.Ok:
                            op = new HistoryOp(client, OpKind.Cas, key, value, expected, true, call, ret, OpStatus.Ok);
                            known[key] = (value, r.Version);
                            break;
                        case KvStatus.VersionConflict or KvStatus.NotFound:
                            op = new HistoryOp(client, OpKind.Cas, key, value, expected, false, call, ret, OpStatus.Ok, Note: $"version {version}, now {r.Version}");
                            known[key] = (r.Status == KvStatus.NotFound ? null : r.ValueText, r.Version);
                            break;
                        default:
                            op = Write(client, OpKind.Cas, key, value, expected, null, call, r);
                            break;
                    }
                }
                else
                {
                    var r = await kv.DeleteAsync(key).WaitAsync(opTimeout, CancellationToken.None);
                    op = Write(client, OpKind.Delete, key, null, null, null, call, r);
                    if (op.Status == OpStatus.Ok)
                    {
                        known[key] = (null, 0);
                    }
                }
            }
            catch (Exception ex) when (IsTransient(ex))
            {
                // Timeout or lost connection: the operation may still take effect.
                op = dice < 40
                    ? new HistoryOp(client, OpKind.Get, key, null, null, null, call, null, OpStatus.Info, Note: ex.GetType().Name)
                    : new HistoryOp(client, dice < 65 ? OpKind.Put : dice < 90 ? OpKind.Cas : OpKind.Delete, key, dice < 90 ? value : null,
                        dice is >= 65 and < 90 ? (known.TryGetValue(key, out var k) ? k.Value : null) : null, null, call, null, OpStatus.Info, Note: ex.GetType().Name);
                known.Remove(key);

                // The client backs off before its next operation (workload pacing).
                await Task.Delay(random.Next(50, 200), CancellationToken.None);
            }

            recorder.Record(op with { Client = id });
            if (op.Status == OpStatus.Info)
            {
                id += clients;
            }

            if (op.Status == OpStatus.Ok)
            {
                Interlocked.Increment(ref _done);
            }
        }
    }

    private static HistoryOp Write(int client, OpKind kind, string key, string? value, string? expected, bool? swapped, long call, KvResult r)
    {
        var ret = HistoryFile.NowNanoseconds();
        if (r.Status is KvStatus.Ok or KvStatus.NotFound)
        {
            return new HistoryOp(client, kind, key, value, expected, swapped, call, ret, OpStatus.Ok);
        }

        // Only statuses that say the value was never proposed are definite failures.
        var definite = r.Status == KvStatus.BadRequest || r.Proposal is ProposalStatus.TooManyWaiting or ProposalStatus.InvalidGroup
            or ProposalStatus.NotMember or ProposalStatus.FollowerCannotPropose or ProposalStatus.ValueTooLarge or ProposalStatus.NotSupported;
        return new HistoryOp(client, kind, key, value, expected, swapped, call, definite ? ret : null, definite ? OpStatus.Fail : OpStatus.Info, Note: r.Status + "/" + r.Proposal);
    }

    private static bool IsTransient(Exception ex) =>
        ex is TimeoutException or OrleansException or OperationCanceledException or System.Net.Sockets.SocketException or InvalidOperationException;
}
