using System.Diagnostics;
using System.Globalization;
using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;
using Orleans.Paxos.Grains.Clustering;
using Orleans.Paxos.Grains.Examples;
using Orleans.Paxos.Grains.Hosting;

namespace Orleans.Paxos.Grains.Benchmarks;

/// <summary>
/// Orleans' own tables on Paxos: grain storage writes/s and reads/s through <see cref="IDurableRegisterGrain"/> from an
/// external client, and the latency of membership table operations (ReadAll, UpdateIAmAlive) on a silo. Three silos
/// in this process, each with its own Paxos node (UDP/TCP on loopback, files, fsync as given), clustering, grain
/// storage and the key-value store on Paxos. Usage: <c>-- tables [--seconds 6] [--concurrency 64] [--sync true] [--groups 3]</c>.
/// </summary>
internal static class TablesBenchmark
{
    public static async Task RunAsync(int groups, int concurrency, bool sync, TimeSpan duration, Func<int, int[]> freePorts, Func<string> tempRoot, Action<string> cleanup)
    {
        var root = tempRoot();
        var nodes = freePorts(3).Select(p => $"127.0.0.1:{p}").ToArray();
        var siloPorts = freePorts(3);
        var gatewayPorts = freePorts(3);
        var silos = new List<IHost>();
        IHost? client = null;
        Console.WriteLine($"Orleans tables on Paxos: 3 silos, {groups} groups, fsync={sync}, {concurrency} in flight, {duration.TotalSeconds} s per run, {Environment.ProcessorCount} cores");
        try
        {
            for (var i = 0; i < 3; i++)
            {
                var index = i;
                var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
                builder.Logging.SetMinimumLevel(LogLevel.Warning).AddFilter("Orleans", LogLevel.Error);
                builder.UseOrleans(silo =>
                {
                    silo.ConfigureEndpoints(IPAddress.Loopback, siloPorts[index], gatewayPorts[index], listenOnAnyHostAddress: false);
                    silo.Configure<ClusterOptions>(o => (o.ClusterId, o.ServiceId) = ("bench", "bench"));
                    silo.AddPaxos(o =>
                    {
                        o.MyNode = nodes[index];
                        o.Members = [.. nodes];
                        o.GroupCount = groups;
                        o.StoragePath = Path.Combine(root, "node" + index);
                        o.Sync = sync;
                        o.DataFileSize = 64L << 20;
                    });
                    silo.UsePaxosClustering();
                    silo.AddPaxosGrainStorageAsDefault();
                });
                silos.Add(builder.Build());
            }

            await Task.WhenAll(silos.Select(s => s.StartAsync()));
            var clientBuilder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
            clientBuilder.UseOrleansClient(c =>
            {
                c.UsePaxosClustering([.. gatewayPorts.Select(p => new IPEndPoint(IPAddress.Loopback, p))]);
                c.Configure<ClusterOptions>(o => (o.ClusterId, o.ServiceId) = ("bench", "bench"));
            });
            client = clientBuilder.Build();
            await client.StartAsync();
            var grains = client.Services.GetRequiredService<IClusterClient>();
            for (var w = 0; w < concurrency; w++)
            {
                await grains.GetGrain<IDurableRegisterGrain>("r" + w.ToString(CultureInfo.InvariantCulture)).WriteAsync(0);
            }

            Console.WriteLine($"{"operation",-26} {"ops/s",9} {"p50 ms",8} {"p99 ms",8} {"failed",7}");
            var writes = await LoadAsync(concurrency, duration, async (w, n) =>
            {
                await grains.GetGrain<IDurableRegisterGrain>("r" + w.ToString(CultureInfo.InvariantCulture)).WriteAsync(n + 1);
                return true;
            });
            Print("grain state write", writes);
            var reads = await LoadAsync(concurrency, duration, async (w, n) =>
            {
                await grains.GetGrain<IDurableRegisterGrain>("r" + w.ToString(CultureInfo.InvariantCulture)).ReadAsync();
                return true;
            });
            Print("grain state read (log)", reads);

            // Membership operations as a silo makes them: one at a time, on silo 0.
            var table = silos[0].Services.GetRequiredService<IMembershipTable>();
            var local = silos[0].Services.GetRequiredService<ILocalSiloDetails>().SiloAddress;
            var readAll = await LoadAsync(1, duration, async (_, _) => (await table.ReadAllAsync(CancellationToken.None)).Members.Count == 3);
            Print("membership ReadAll", readAll);
            var alive = await LoadAsync(1, duration, async (_, _) =>
            {
                await table.UpdateIAmAliveAsync(new MembershipEntry { SiloAddress = local, IAmAliveTime = DateTime.UtcNow }, CancellationToken.None);
                return true;
            });
            Print("membership UpdateIAmAlive", alive);
        }
        finally
        {
            if (client is not null)
            {
                await client.StopAsync();
                client.Dispose();
            }

            await Task.WhenAll(silos.Select(s => s.StopAsync()));
            foreach (var s in silos)
            {
                s.Dispose();
            }

            cleanup(root);
        }
    }

    private static void Print(string what, Result r) =>
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{what,-26} {r.OpsPerSecond,9:F0} {r.P50,8:F2} {r.P99,8:F2} {r.Failed,7}"));

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
                bool ok;
                try
                {
                    ok = await op(w, n);
                }
                catch (OrleansException)
                {
                    ok = false;
                }

                if (ok)
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

    private sealed record Result(double OpsPerSecond, double P50, double P99, long Failed);
}
