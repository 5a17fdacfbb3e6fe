using System.Diagnostics;
using System.Globalization;
using Microsoft.Win32.SafeHandles;
using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Engine.Benchmarks;

/// <summary>
/// The disk's own ceiling for what an acceptor does per chosen instance: each thread appends one record
/// to its own preallocated data file (sparse, as PhxPaxos and the log storage create them) and flushes it
/// with the storage's fdatasync, then the next. No Paxos, no group commit: the figure is how many durable
/// single-record writes per second the disk completes at that concurrency, and how long each takes.
/// Three acceptors on one disk need three of them per chosen instance.
/// </summary>
internal static class DiskBenchmark
{
    public const string Summary = "the disk's ceiling: durable one-record appends/s per thread count (--threads 1,8,24 --value-size 100,102400 --seconds 2 --path DIR)";

    public static int Run(string[] args)
    {
        int[] threads = [1, 8, 24];
        int[] sizes = [100, 102400];
        var seconds = 2.0;
        var basePath = Path.GetTempPath();
        try
        {
            for (var i = 0; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new FormatException($"{args[i]} needs a value");
                int[] Ints() => [.. Next().Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture))];
                switch (args[i])
                {
                    case "--threads": threads = Ints(); break;
                    case "--value-size": sizes = Ints(); break;
                    case "--seconds": seconds = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--path": basePath = Next(); break;
                    default: throw new FormatException($"unknown option {args[i]}");
                }
            }
        }
        catch (FormatException ex)
        {
            Console.Error.WriteLine(ex.Message);
            Console.Error.WriteLine(Summary);
            return 2;
        }

        Console.WriteLine($"disk: one file per thread, preallocated to {LogStorageOptions.DefaultDataFileSize} B (sparse), each append followed by fdatasync; {seconds:0.#} s per configuration");
        Console.WriteLine($"  folder {basePath}, {Environment.ProcessorCount} cores, .NET {Environment.Version}");
        Console.WriteLine();
        Console.WriteLine($"{"value",7} {"threads",7} {"appends/s",10} {"MB/s",7} {"mean ms",8} {"p50 ms",8} {"p99 ms",8} {"CPU us/op",9}");
        foreach (var size in sizes)
        {
            foreach (var count in threads)
            {
                var r = RunOne(basePath, size, count, seconds);
                Console.WriteLine($"{size,7} {count,7} {r.PerSecond,10:0} {r.PerSecond * (size + 12) / 1e6,7:0.0} {r.MeanMs,8:0.000} {r.P50Ms,8:0.000} {r.P99Ms,8:0.000} {r.CpuMicros,9:0}");
            }
        }

        return 0;
    }

    private static (double PerSecond, double MeanMs, double P50Ms, double P99Ms, double CpuMicros) RunOne(string basePath, int size, int threads, double seconds)
    {
        var root = Path.Combine(basePath, "paxos-disk-bench-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(root);
        try
        {
            var latencies = new List<double>[threads];
            using var start = new Barrier(threads + 1);
            var workers = new Thread[threads];
            var stopAt = 0L;
            for (var t = 0; t < threads; t++)
            {
                var index = t;
                latencies[t] = new List<double>(100_000);
                workers[t] = new Thread(() =>
                {
                    using SafeFileHandle handle = File.OpenHandle(Path.Combine(root, $"{index}.f"), FileMode.CreateNew, FileAccess.ReadWrite);
                    RandomAccess.Write(handle, [0], LogStorageOptions.DefaultDataFileSize - 1);
                    DataSync.Flush(handle);
                    var record = new byte[size + 12];
                    Random.Shared.NextBytes(record);
                    long offset = 0;
                    start.SignalAndWait();
                    while (Stopwatch.GetTimestamp() < Volatile.Read(ref stopAt))
                    {
                        var began = Stopwatch.GetTimestamp();
                        if (offset + record.Length >= LogStorageOptions.DefaultDataFileSize)
                        {
                            offset = 0;
                        }

                        RandomAccess.Write(handle, record, offset);
                        DataSync.Flush(handle);
                        offset += record.Length;
                        latencies[index].Add(Stopwatch.GetElapsedTime(began).TotalMilliseconds);
                    }
                }) { IsBackground = true };
                workers[t].Start();
            }

            Volatile.Write(ref stopAt, long.MaxValue);
            var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
            start.SignalAndWait();
            var wall = Stopwatch.StartNew();
            Volatile.Write(ref stopAt, Stopwatch.GetTimestamp() + (long)(seconds * Stopwatch.Frequency));
            foreach (var w in workers)
            {
                w.Join();
            }

            var elapsed = wall.Elapsed.TotalSeconds;
            var cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpuBefore).TotalSeconds;
            var all = latencies.SelectMany(l => l).ToArray();
            Array.Sort(all);
            return (all.Length / elapsed, all.Length == 0 ? double.NaN : all.Average(), DiskProbe.Percentile(all, 0.5), DiskProbe.Percentile(all, 0.99), all.Length == 0 ? double.NaN : cpu * 1e6 / all.Length);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}
