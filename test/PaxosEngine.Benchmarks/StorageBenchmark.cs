using System.Diagnostics;
using System.Globalization;
using Google.Protobuf;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Engine.Benchmarks;

/// <summary>
/// Durable (sync) puts per second of <see cref="FileLogStorage"/> with 1, 8 and 64 concurrent writers,
/// showing how group commit shares fsyncs. Options: <c>--seconds N</c> (default 3) per configuration,
/// <c>--path DIR</c> (default: the temp folder) to pick the disk.
/// </summary>
internal static class StorageBenchmark
{
    private static readonly int[] WriterCounts = [1, 8, 64];
    private static readonly int[] ValueSizes = [100, 4096];

    public static async Task<int> RunAsync(string[] args)
    {
        var seconds = 3.0;
        var basePath = Path.GetTempPath();
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--seconds" when i + 1 < args.Length:
                    seconds = double.Parse(args[++i], CultureInfo.InvariantCulture);
                    break;
                case "--path" when i + 1 < args.Length:
                    basePath = args[++i];
                    break;
                default:
                    Console.Error.WriteLine("storage options: [--seconds N] [--path DIR]");
                    return 2;
            }
        }

        Console.WriteLine($"storage: FileLogStorage, 1 group, sync puts, {seconds:0.#} s per configuration after 0.5 s warm-up");
        Console.WriteLine($"  disk folder {basePath}, {Environment.ProcessorCount} cores, .NET {Environment.Version}, server GC {System.Runtime.GCSettings.IsServerGC}");
        Console.WriteLine($"  data file size {LogStorageOptions.DefaultDataFileSize} B; a writer awaits each put before issuing the next");
        Console.WriteLine();
        Console.WriteLine($"{"value",7} {"writers",7} {"puts/s",10} {"fsyncs/s",9} {"puts/fsync",10} {"p50 ms",8} {"p99 ms",8} {"alloc B/put",11}");
        foreach (var size in ValueSizes)
        {
            foreach (var writers in WriterCounts)
            {
                var result = await RunOneAsync(basePath, size, writers, seconds).ConfigureAwait(false);
                Console.WriteLine(
                    $"{size,7} {writers,7} {result.PutsPerSecond,10:0} {result.FsyncsPerSecond,9:0} {result.PutsPerFsync,10:0.0} {result.P50Ms,8:0.000} {result.P99Ms,8:0.000} {result.AllocatedPerPut,11:0}");
            }
        }

        return 0;
    }

    private static async Task<Result> RunOneAsync(string basePath, int valueSize, int writers, double seconds)
    {
        var root = Path.Combine(basePath, "paxos-storage-bench-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var storage = new FileLogStorage(new LogStorageOptions { RootPath = root, GroupCount = 1 });

            // One serialized AcceptorStateData reused for every put: the benchmark measures the log, not protobuf.
            var body = new AcceptorStateData
            {
                InstanceID = 0,
                PromiseID = 1,
                PromiseNodeID = 1,
                AcceptedID = 1,
                AcceptedNodeID = 1,
                AcceptedValue = ByteString.CopyFrom(new byte[valueSize]),
                Checksum = 1,
            }.ToByteArray();

            var latencies = new LatencyHistogram();
            var gate = new object();
            ulong nextInstance = 0;
            long completed = 0;
            var measuring = false;
            var stop = false;

            async Task WriterAsync()
            {
                while (!Volatile.Read(ref stop))
                {
                    var started = Stopwatch.GetTimestamp();
                    Task put;

                    // A group's instance ids must not decrease, so ids are taken in queue order.
                    lock (gate)
                    {
                        put = storage.PutAsync(0, nextInstance++, body, sync: true);
                    }

                    await put.ConfigureAwait(false);
                    if (Volatile.Read(ref measuring))
                    {
                        latencies.Record(Stopwatch.GetElapsedTime(started));
                        Interlocked.Increment(ref completed);
                    }
                }
            }

            var tasks = new Task[writers];
            for (var i = 0; i < writers; i++)
            {
                tasks[i] = Task.Run(WriterAsync);
            }

            await Task.Delay(500).ConfigureAwait(false);
            var fsyncsBefore = storage.FsyncCount;
            var allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
            var clock = Stopwatch.StartNew();
            Volatile.Write(ref measuring, true);
            await Task.Delay(TimeSpan.FromSeconds(seconds)).ConfigureAwait(false);
            Volatile.Write(ref measuring, false);
            var elapsed = clock.Elapsed.TotalSeconds;
            var puts = Interlocked.Read(ref completed);
            var fsyncs = storage.FsyncCount - fsyncsBefore;
            var allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;
            Volatile.Write(ref stop, true);
            await Task.WhenAll(tasks).ConfigureAwait(false);

            return new Result(
                puts / elapsed,
                fsyncs / elapsed,
                fsyncs == 0 ? 0 : (double)puts / fsyncs,
                latencies.Percentile(0.50),
                latencies.Percentile(0.99),
                puts == 0 ? 0 : (double)allocated / puts);
        }
        finally
        {
            if (Directory.Exists(root))
            {
                Directory.Delete(root, recursive: true);
            }
        }
    }

    private readonly record struct Result(double PutsPerSecond, double FsyncsPerSecond, double PutsPerFsync, double P50Ms, double P99Ms, double AllocatedPerPut);

    /// <summary>Latencies in 10 µs buckets up to 1 s, recorded without allocating.</summary>
    private sealed class LatencyHistogram
    {
        private const double BucketMicroseconds = 10;
        private readonly long[] _buckets = new long[100_001];

        public void Record(TimeSpan latency)
        {
            var bucket = (int)Math.Min(latency.TotalMicroseconds / BucketMicroseconds, _buckets.Length - 1);
            Interlocked.Increment(ref _buckets[bucket]);
        }

        public double Percentile(double fraction)
        {
            long total = 0;
            foreach (var count in _buckets)
            {
                total += count;
            }

            var target = (long)Math.Ceiling(total * fraction);
            long seen = 0;
            for (var i = 0; i < _buckets.Length; i++)
            {
                seen += _buckets[i];
                if (seen >= target && seen > 0)
                {
                    return (i + 1) * BucketMicroseconds / 1000.0;
                }
            }

            return 0;
        }
    }
}
