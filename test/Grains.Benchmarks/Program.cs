using System.Diagnostics;
using System.Globalization;
using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Grains.Hosting;
using Orleans.Paxos.TestSupport;

namespace Orleans.Paxos.Grains.Benchmarks;

/// <summary>
/// Proposals per second and latency through the group grain from an external Orleans client, against
/// the engine called directly, in the same run, for 1 and 16 groups. Three nodes on loopback with the
/// real UDP/TCP transport and file storage. Usage:
/// <c>dotnet run -c Release --project test/Grains.Benchmarks -- [--seconds 8] [--concurrency 64] [--value-size 100] [--sync true] [--groups 1,16]</c>;
/// <c>-- tables</c> runs <see cref="TablesBenchmark"/> (Orleans clustering and grain storage on Paxos) instead.
/// </summary>
internal static class Program
{
    public static async Task<int> Main(string[] args)
    {
        var seconds = double.Parse(Arg(args, "--seconds", "8"), CultureInfo.InvariantCulture);
        var concurrency = int.Parse(Arg(args, "--concurrency", "64"), CultureInfo.InvariantCulture);
        var valueSize = int.Parse(Arg(args, "--value-size", "100"), CultureInfo.InvariantCulture);
        var sync = bool.Parse(Arg(args, "--sync", "true"));
        if (args.Length > 0 && args[0] == "tables")
        {
            await TablesBenchmark.RunAsync(int.Parse(Arg(args, "--groups", "3"), CultureInfo.InvariantCulture), concurrency, sync, TimeSpan.FromSeconds(seconds), FreePorts, TempRoot, Cleanup);
            return 0;
        }

        var groupCounts = Arg(args, "--groups", "1,16").Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        Console.WriteLine($"grain vs direct: 3 nodes on loopback (UDP/TCP), fsync={sync}, {concurrency} in flight, {valueSize} B values, {seconds} s per run, {Environment.ProcessorCount} cores");
        Console.WriteLine($"{"path",-7} {"groups",6} {"ops/s",9} {"p50 ms",8} {"p99 ms",8} {"failed",7}");
        foreach (var groups in groupCounts)
        {
            var direct = await RunDirectAsync(groups, concurrency, valueSize, sync, TimeSpan.FromSeconds(seconds));
            Print("direct", groups, direct);
            var grain = await RunGrainAsync(groups, concurrency, valueSize, sync, TimeSpan.FromSeconds(seconds));
            Print("grain", groups, grain);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"        grain/direct at {groups} groups: {grain.OpsPerSecond / Math.Max(1, direct.OpsPerSecond):P0}"));
        }

        return 0;
    }

    private static void Print(string path, int groups, Result r) =>
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{path,-7} {groups,6} {r.OpsPerSecond,9:F0} {r.P50,8:F2} {r.P99,8:F2} {r.Failed,7}"));

    private static string Arg(string[] args, string name, string fallback)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
    }

    private static PaxosNodeOptions Options(string[] nodes, int index, int groups, bool sync, string root) => new()
    {
        MyNode = nodes[index],
        Members = [.. nodes],
        GroupCount = groups,
        StoragePath = Path.Combine(root, "node" + index),
        Sync = sync,
        DataFileSize = 64L << 20,
    };

    private static async Task<Result> RunDirectAsync(int groups, int concurrency, int valueSize, bool sync, TimeSpan duration)
    {
        var root = TempRoot();
        var nodes = FreePorts(3).Select(p => $"127.0.0.1:{p}").ToArray();
        var paxos = Enumerable.Range(0, 3).Select(i => new PaxosNode(Options(nodes, i, groups, sync, root))).ToArray();
        try
        {
            foreach (var n in paxos)
            {
                n.Start();
            }

            var value = new byte[valueSize];
            return await LoadAsync(concurrency, duration, async (w, n) =>
                (await paxos[0].ProposeAsync((w + n) % groups, 0, value)).IsOk);
        }
        finally
        {
            foreach (var n in paxos)
            {
                n.Dispose();
            }

            Cleanup(root);
        }
    }

    private static async Task<Result> RunGrainAsync(int groups, int concurrency, int valueSize, bool sync, TimeSpan duration)
    {
        var root = TempRoot();
        var nodes = FreePorts(3).Select(p => $"127.0.0.1:{p}").ToArray();
        var siloPorts = FreePorts(3);
        var gatewayPorts = FreePorts(3);
        var silos = new List<IHost>();
        IHost? client = null;
        try
        {
            for (var i = 0; i < 3; i++)
            {
                var index = i;
                var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
                builder.Logging.SetMinimumLevel(LogLevel.Warning).AddFilter("Orleans", LogLevel.Error);
                builder.UseOrleans(silo =>
                {
                    silo.UseLocalhostClustering(siloPorts[index], gatewayPorts[index], new IPEndPoint(IPAddress.Loopback, siloPorts[0]), "bench", "bench");
                    silo.AddPaxos(o =>
                    {
                        var options = Options(nodes, index, groups, sync, root);
                        o.MyNode = options.MyNode;
                        o.Members = options.Members;
                        o.GroupCount = options.GroupCount;
                        o.StoragePath = options.StoragePath;
                        o.Sync = options.Sync;
                        o.DataFileSize = options.DataFileSize;
                    });
                });
                var host = builder.Build();
                silos.Add(host);
                await host.StartAsync();
            }

            var clientBuilder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
            clientBuilder.UseOrleansClient(c =>
            {
                c.UseStaticClustering([.. gatewayPorts.Select(p => new IPEndPoint(IPAddress.Loopback, p))]);
                c.Configure<ClusterOptions>(o => (o.ClusterId, o.ServiceId) = ("bench", "bench"));
            });
            client = clientBuilder.Build();
            await client.StartAsync();
            var grains = client.Services.GetRequiredService<IClusterClient>();
            var value = new byte[valueSize];
            for (var g = 0; g < groups; g++)
            {
                await grains.GetGrain<IPaxosGroupGrain>(g).ProposeAsync(value);
            }

            return await LoadAsync(concurrency, duration, async (w, n) =>
                (await grains.GetGrain<IPaxosGroupGrain>((w + n) % groups).ProposeAsync(value)).IsOk);
        }
        finally
        {
            if (client is not null)
            {
                await client.StopAsync();
                client.Dispose();
            }

            for (var i = silos.Count - 1; i >= 0; i--)
            {
                await silos[i].StopAsync();
                silos[i].Dispose();
            }

            Cleanup(root);
        }
    }

    private static async Task<Result> LoadAsync(int concurrency, TimeSpan duration, Func<int, int, Task<bool>> op)
    {
        long failed = 0;
        var latencies = new List<long>[concurrency];
        var start = Stopwatch.GetTimestamp();
        var end = start + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        await Task.WhenAll(Enumerable.Range(0, concurrency).Select(w => Task.Run(async () =>
        {
            var mine = latencies[w] = new List<long>(8192);
            for (var n = 0; Stopwatch.GetTimestamp() < end; n++)
            {
                var t0 = Stopwatch.GetTimestamp();
                if (await op(w, n))
                {
                    mine.Add(Stopwatch.GetTimestamp() - t0);
                }
                else
                {
                    Interlocked.Increment(ref failed);
                }
            }
        })));
        var elapsed = Stopwatch.GetElapsedTime(start).TotalSeconds;
        var all = latencies.SelectMany(l => l).ToArray();
        Array.Sort(all);
        double Pct(double q) => all.Length == 0 ? 0 : all[Math.Min(all.Length - 1, (int)(q * all.Length))] * 1000.0 / Stopwatch.Frequency;
        return new Result(all.Length / elapsed, Pct(0.5), Pct(0.99), failed);
    }

    private static string TempRoot() => Path.Combine(Path.GetTempPath(), "paxos-bench-" + Guid.NewGuid().ToString("N"));

    private static void Cleanup(string root)
    {
        try
        {
            Directory.Delete(root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private static int[] FreePorts(int count) => [.. Enumerable.Range(0, count).Select(_ => LoopbackPorts.Next())];

    private sealed record Result(double OpsPerSecond, double P50, double P99, long Failed);
}
