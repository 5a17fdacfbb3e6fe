using System.Collections.Concurrent;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Orleans.Paxos.Grains;

namespace Orleans.Paxos.Client;

/// <summary>The <c>bench</c> command: a closed-loop load generator over the group grains.</summary>
internal static class Bench
{
    /// <summary>How long calls still in flight at the end of the run may take before they count as failed.</summary>
    public static readonly TimeSpan Grace = TimeSpan.FromSeconds(3);

    /// <summary>The summary of a run; <see cref="Failures"/> counts failed operations by reason.</summary>
    public sealed record BenchSummary(
        string Mode, int Groups, int Concurrency, int ValueSize, double Seconds, long Operations, long Errors,
        double OperationsPerSecond, double P50Ms, double P99Ms, double P999Ms, double MaxMs, IReadOnlyDictionary<string, long> Failures);

    public static Command Build(Func<ParseResult, CancellationToken, Func<IClusterClient, bool, Task<int>>, Task<int>> withCluster)
    {
        var groups = new Option<int?>("--groups") { Description = "Spread the load over groups 0..N-1 (default: all groups)." };
        var concurrency = new Option<int>("--concurrency", "-c") { Description = "Requests in flight.", DefaultValueFactory = _ => 64 };
        var duration = new Option<double>("--duration", "-d") { Description = "Seconds to run.", DefaultValueFactory = _ => 10 };
        var size = new Option<int>("--value-size") { Description = "Bytes per value.", DefaultValueFactory = _ => 100 };
        var mode = new Option<string>("--mode") { Description = "propose (log only) or kv (key-value puts).", DefaultValueFactory = _ => "propose" };
        mode.AcceptOnlyFromAmong("propose", "kv");
        var bench = new Command("bench", "Load generator: proposals per second and latency percentiles. Exit code 1 when any operation failed.") { groups, concurrency, duration, size, mode };
        bench.SetAction((p, ct) => withCluster(p, ct, async (client, json) =>
        {
            if (p.GetValue(duration) is var d && d is <= 0 or > 86400)
            {
                throw new CommandException(ErrorKind.Usage, $"--duration must be between 0 and 86400 seconds; it is {d.ToString(CultureInfo.InvariantCulture)}.");
            }

            var count = await client.GetGrain<IPaxosGroupGrain>(0).GetGroupCountAsync();
            var g = Math.Clamp(p.GetValue(groups) ?? count, 1, count);
            var summary = await RunAsync(client, p.GetValue(mode)!, g, Math.Max(1, p.GetValue(concurrency)), TimeSpan.FromSeconds(d), Math.Max(1, p.GetValue(size)), !json, ct);
            ClientCommands.Print(json, summary, () => Render(summary));
            return summary.Operations > 0 && summary.Errors == 0 ? ExitCodes.Ok : ExitCodes.OperationFailed;
        }));
        return bench;
    }

    private static string Render(BenchSummary summary)
    {
        var text = new StringBuilder(string.Create(CultureInfo.InvariantCulture,
            $"{summary.Mode}: {summary.Operations} ok, {summary.Errors} failed in {summary.Seconds:F1} s over {summary.Groups} groups, {summary.Concurrency} in flight, {summary.ValueSize} B values\n" +
            $"throughput {summary.OperationsPerSecond:F0} ops/s; latency p50 {summary.P50Ms:F2} ms, p99 {summary.P99Ms:F2} ms, p99.9 {summary.P999Ms:F2} ms, max {summary.MaxMs:F2} ms"));
        foreach (var (reason, n) in summary.Failures.OrderByDescending(f => f.Value).Take(5))
        {
            text.Append(CultureInfo.InvariantCulture, $"\nfailed {n}x: {reason}");
        }

        return text.ToString();
    }

    /// <summary>
    /// Runs the load for <paramref name="duration"/>. Calls still unanswered <see cref="Grace"/> after the end
    /// count as failed and are abandoned, so a dead cluster does not stretch the run.
    /// </summary>
    public static async Task<BenchSummary> RunAsync(IGrainFactory client, string mode, int groups, int concurrency, TimeSpan duration, int valueSize, bool progress, CancellationToken cancellationToken)
    {
        var value = new byte[valueSize];
        Random.Shared.NextBytes(value);
        long ok = 0, failed = 0;
        var failures = new ConcurrentDictionary<string, long>(StringComparer.Ordinal);
        var latencies = new List<long>[concurrency];
        var started = Stopwatch.GetTimestamp();
        var end = started + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);

        void Fail(string reason)
        {
            Interlocked.Increment(ref failed);
            failures.AddOrUpdate(reason, 1, (_, n) => n + 1);
        }

        async Task Worker(int w)
        {
            var mine = latencies[w] = new List<long>(4096);
            var kv = new KeyValueClient(client, groups);
            var n = 0;
            while (!stop.IsCancellationRequested && Stopwatch.GetTimestamp() < end)
            {
                var t0 = Stopwatch.GetTimestamp();
                string? reason;
                try
                {
                    if (mode == "kv")
                    {
                        var r = await kv.PutAsync(string.Create(CultureInfo.InvariantCulture, $"bench-{w}-{n % 1000}"), value);
                        reason = r.IsOk ? null : $"{r.Status} ({r.Proposal})";
                    }
                    else
                    {
                        var r = await client.GetGrain<IPaxosGroupGrain>((w + n) % groups).ProposeAsync(value);
                        reason = r.IsOk ? null : r.Status.ToString();
                    }
                }
                catch (Exception ex) when (ex is OrleansException or TimeoutException or InvalidOperationException)
                {
                    reason = $"{ex.GetType().Name}: {ClientCommands.Describe(ex)}";
                }

                n++;
                if (reason is null)
                {
                    mine.Add(Stopwatch.GetTimestamp() - t0);
                    Interlocked.Increment(ref ok);
                }
                else
                {
                    Fail(reason);
                }
            }
        }

        var workers = Enumerable.Range(0, concurrency).Select(w => Task.Run(() => Worker(w))).ToArray();
        var all = Task.WhenAll(workers);
        var giveUp = TimeSpan.FromSeconds(duration.TotalSeconds) + Grace;
        long last = 0;
        while (!all.IsCompleted && !cancellationToken.IsCancellationRequested && Stopwatch.GetElapsedTime(started) < giveUp)
        {
            var left = giveUp - Stopwatch.GetElapsedTime(started);
            await Task.WhenAny(all, Task.Delay(left < TimeSpan.FromSeconds(1) ? left : TimeSpan.FromSeconds(1), cancellationToken)).ContinueWith(_ => { }, TaskScheduler.Default);
            if (progress)
            {
                var now = Interlocked.Read(ref ok);
                var elapsed = Stopwatch.GetElapsedTime(started).TotalSeconds;
                Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{elapsed,5:F1} s] {now,9} ok  {now - last,7} ops/s  {Interlocked.Read(ref failed)} failed"));
                last = now;
            }
        }

        stop.Cancel();
        var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        var unfinished = workers.Count(w => !w.IsCompleted);
        if (unfinished > 0 && !cancellationToken.IsCancellationRequested)
        {
            // Those workers wait for calls that did not answer in time; their results no longer count.
            for (var i = 0; i < unfinished; i++)
            {
                Fail($"no answer within {Grace.TotalSeconds:0} s after the end of the run");
            }
        }

        var done = latencies.Where((l, i) => l is not null && workers[i].IsCompleted).SelectMany(l => l).ToArray();
        Array.Sort(done);
        double Pct(double q) => done.Length == 0 ? 0 : done[Math.Min(done.Length - 1, (int)(q * done.Length))] * 1000.0 / Stopwatch.Frequency;
        return new BenchSummary(
            mode, groups, concurrency, valueSize, seconds, Interlocked.Read(ref ok), Interlocked.Read(ref failed), Interlocked.Read(ref ok) / seconds,
            Pct(0.50), Pct(0.99), Pct(0.999), done.Length == 0 ? 0 : done[^1] * 1000.0 / Stopwatch.Frequency,
            new Dictionary<string, long>(failures, StringComparer.Ordinal));
    }
}
