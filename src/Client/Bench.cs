using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Orleans.Paxos.Grains;

namespace Orleans.Paxos.Client;

/// <summary>The <c>bench</c> command: a closed-loop load generator over the group grains.</summary>
internal static class Bench
{
    /// <summary>The summary of a run.</summary>
    public sealed record BenchSummary(
        string Mode, int Groups, int Concurrency, int ValueSize, double Seconds, long Operations, long Errors,
        double OperationsPerSecond, double P50Ms, double P99Ms, double P999Ms, double MaxMs);

    public static Command Build(Func<ParseResult, CancellationToken, Func<IClusterClient, bool, Task<int>>, Task<int>> withCluster)
    {
        var groups = new Option<int?>("--groups") { Description = "Spread the load over groups 0..N-1 (default: all groups)." };
        var concurrency = new Option<int>("--concurrency", "-c") { Description = "Requests in flight.", DefaultValueFactory = _ => 64 };
        var duration = new Option<double>("--duration", "-d") { Description = "Seconds to run.", DefaultValueFactory = _ => 10 };
        var size = new Option<int>("--value-size") { Description = "Bytes per value.", DefaultValueFactory = _ => 100 };
        var mode = new Option<string>("--mode") { Description = "propose (log only) or kv (key-value puts).", DefaultValueFactory = _ => "propose" };
        mode.AcceptOnlyFromAmong("propose", "kv");
        var bench = new Command("bench", "Load generator: proposals per second and latency percentiles.") { groups, concurrency, duration, size, mode };
        bench.SetAction((p, ct) => withCluster(p, ct, async (client, json) =>
        {
            var count = await client.GetGrain<IPaxosGroupGrain>(0).GetGroupCountAsync();
            var g = Math.Clamp(p.GetValue(groups) ?? count, 1, count);
            var summary = await RunAsync(client, p.GetValue(mode)!, g, Math.Max(1, p.GetValue(concurrency)), TimeSpan.FromSeconds(p.GetValue(duration)), Math.Max(1, p.GetValue(size)), !json, ct);
            ClientCommands.Print(json, summary, () => string.Create(CultureInfo.InvariantCulture,
                $"{summary.Mode}: {summary.Operations} ok, {summary.Errors} failed in {summary.Seconds:F1} s over {summary.Groups} groups, {summary.Concurrency} in flight, {summary.ValueSize} B values\n" +
                $"throughput {summary.OperationsPerSecond:F0} ops/s; latency p50 {summary.P50Ms:F2} ms, p99 {summary.P99Ms:F2} ms, p99.9 {summary.P999Ms:F2} ms, max {summary.MaxMs:F2} ms"));
            return summary.Operations > 0 ? ExitCodes.Ok : ExitCodes.OperationFailed;
        }));
        return bench;
    }

    public static async Task<BenchSummary> RunAsync(IGrainFactory client, string mode, int groups, int concurrency, TimeSpan duration, int valueSize, bool progress, CancellationToken cancellationToken)
    {
        var value = new byte[valueSize];
        Random.Shared.NextBytes(value);
        long ok = 0, failed = 0;
        var latencies = new List<long>[concurrency];
        var started = Stopwatch.GetTimestamp();
        var end = started + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);

        async Task Worker(int w)
        {
            var mine = latencies[w] = new List<long>(4096);
            var kv = new KeyValueClient(client, groups);
            var n = 0;
            while (!stop.IsCancellationRequested && Stopwatch.GetTimestamp() < end)
            {
                var t0 = Stopwatch.GetTimestamp();
                bool success;
                try
                {
                    if (mode == "kv")
                    {
                        success = (await kv.PutAsync(string.Create(CultureInfo.InvariantCulture, $"bench-{w}-{n % 1000}"), value)).IsOk;
                    }
                    else
                    {
                        success = (await client.GetGrain<IPaxosGroupGrain>((w + n) % groups).ProposeAsync(value)).IsOk;
                    }
                }
                catch (Exception ex) when (ex is OrleansException or TimeoutException)
                {
                    success = false;
                }

                n++;
                if (success)
                {
                    mine.Add(Stopwatch.GetTimestamp() - t0);
                    Interlocked.Increment(ref ok);
                }
                else
                {
                    Interlocked.Increment(ref failed);
                }
            }
        }

        var workers = Enumerable.Range(0, concurrency).Select(w => Task.Run(() => Worker(w))).ToArray();
        if (progress)
        {
            long last = 0;
            while (!Task.WaitAll(workers, 0) && !cancellationToken.IsCancellationRequested)
            {
                await Task.WhenAny(Task.WhenAll(workers), Task.Delay(1000, cancellationToken)).ContinueWith(_ => { }, TaskScheduler.Default);
                var now = Interlocked.Read(ref ok);
                var elapsed = Stopwatch.GetElapsedTime(started).TotalSeconds;
                Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{elapsed,5:F1} s] {now,9} ok  {now - last,7} ops/s  {Interlocked.Read(ref failed)} failed"));
                last = now;
            }
        }

        await Task.WhenAll(workers);
        var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        var all = latencies.Where(l => l is not null).SelectMany(l => l).ToArray();
        Array.Sort(all);
        double Pct(double q) => all.Length == 0 ? 0 : all[Math.Min(all.Length - 1, (int)(q * all.Length))] * 1000.0 / Stopwatch.Frequency;
        return new BenchSummary(mode, groups, concurrency, valueSize, seconds, ok, failed, ok / seconds, Pct(0.50), Pct(0.99), Pct(0.999), all.Length == 0 ? 0 : all[^1] * 1000.0 / Stopwatch.Frequency);
    }
}
