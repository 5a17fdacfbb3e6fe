using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Orleans.Paxos.Engine.Benchmarks;

/// <summary>What the comparison prints: the configuration first, a line per run, then the medians as Markdown tables.</summary>
internal static partial class ComparisonBenchmark
{
    private static async Task PrintConfigurationAsync(Options o, string phxbench, int runsPerRound)
    {
        var commit = await DescribeCommitAsync().ConfigureAwait(false);
        var build = typeof(ComparisonBenchmark).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "unknown";
        string sha;
        await using (var file = File.OpenRead(phxbench))
        {
            sha = Convert.ToHexStringLower(await SHA256.HashDataAsync(file).ConfigureAwait(false))[..16];
        }

        var runs = runsPerRound * o.Repeat;
        Console.WriteLine($"compare: PhxPaxos (phxbench) and this engine (consensus --procs 3) in one run, rows interleaved, medians of {o.Repeat}");
        Console.WriteLine($"  date       {DateTime.UtcNow:yyyy-MM-dd HH:mm:ss} UTC");
        Console.WriteLine($"  machine    {Environment.ProcessorCount} cores ({ProcField("/proc/cpuinfo", "model name") ?? "unknown CPU"}), " +
            $"memory {MemoryGiB()}, {RuntimeInformation.OSDescription}; load average {LoadAverage()} at the start");
        Console.WriteLine($"  .NET       {Environment.Version} ({RuntimeInformation.FrameworkDescription}); {build} build of commit {commit}");
        Console.WriteLine($"  phxbench   {phxbench} (sha256 {sha}..., from {(string.IsNullOrEmpty(Environment.GetEnvironmentVariable(PhxbenchVariable)) ? "../shared/peer beside the repository" : PhxbenchVariable)})");
        Console.WriteLine($"  durations  warm-up {o.WarmupSeconds:0.###} s + window {o.Seconds:0.###} s per run, after the nodes start; {o.Repeat} round(s) of {runsPerRound} runs = {runs} runs, " +
            $"at least {runs * (o.WarmupSeconds + o.Seconds) / 60:0.#} min; disk ceiling {(o.DiskSeconds > 0 ? $"{o.DiskSeconds:0.###} s per configuration" : "skipped")}");
        Console.WriteLine($"  nodes      3 nodes in 3 processes on 127.0.0.1 per side, fresh folders under {Path.GetTempPath()}, every proposal from node 0's process;");
        Console.WriteLine($"  opt-ins    ours: {string.Join("; ", o.OptIns.Select(DescribeOptIns))}");
        Console.WriteLine(o.Loops == 0
            ? "  loops      ours: the engine's default loop threads per node (one per core)"
            : $"  loops      ours: {o.Loops} loop thread(s) per node (Paxos:LoopThreadCount; the default, one per core, is for a node with the machine to itself, and the 3 nodes share its {Environment.ProcessorCount} cores)");
        Console.WriteLine(AppContext.GetData("System.Runtime.TieredCompilation") is "false" or false && Environment.GetEnvironmentVariable("DOTNET_TieredCompilation") is null or "0"
            ? "  jit        ours: tiered compilation off (optimized code from the first call, as a warm silo runs; DOTNET_TieredCompilation=1 to see the JIT's warm-up)"
            : "  jit        ours: tiered compilation on (the first seconds of each run include the JIT's warm-up)");
        Console.WriteLine(AppContext.GetData("System.GC.LOHThreshold") is { } lohThreshold
            ? $"  gc         ours: workstation, concurrent; arrays under {lohThreshold} B start in generation 0 (System.GC.LOHThreshold, as the silo ships)"
            : "  gc         ours: workstation, concurrent; arrays of 85,000 B or more on the large object heap (the runtime's default)");
        Console.WriteLine("             caller i (a thread in phxbench, a task in ours) proposes to group i % groups, one call at a time");
        Console.WriteLine("  calls      PhxPaxos Propose against ours off (one value per instance) and auto (values waiting behind an instance share the next one);");
        Console.WriteLine($"             PhxPaxos BatchPropose against ours on (BatchProposeAsync, the same rule: count {o.BatchCount}, 20 ms) and idle (BatchFlushWhenIdle)");
        Console.WriteLine(o.ScaleOnly
            ? "  selection  none (--scale-only)"
            : $"  selection  groups {Join(o.Groups)}; callers {Join(o.Callers)}; value B {Join(o.ValueSizes)}; batch {Join(o.Batch)}; sync {Join(o.Sync.Select(s => s ? "on" : "off"))}{(o.Quick ? " (--quick)" : "")}");
        Console.WriteLine(o.ScaleGroups > 0
            ? $"  scale row  ours alone: {o.ScaleGroups} groups, {o.ScaleCallers} callers, 100 B, batch auto, sync {(o.Sync[0] ? "on" : "off")}"
            : "  scale row  none");
        Console.WriteLine();
    }

    private static string Progress(Figures f) =>
        $"{F(f.OpsPerSecond, "0"),8} ops/s  mean {F(f.MeanMs, "0.00")}  p50 {F(f.P50Ms, "0.00")}  p99 {F(f.P99Ms, "0.00")} ms  fail {f.Failed}  CPU {F(f.CpuPercent, "0")}%  {F(f.CpuMicrosPerOp, "0")} us/op" +
        (double.IsNaN(f.StartSeconds) ? "" : $"  {F(f.AllocatedBytesPerOp, "0")} B/op  started in {f.StartSeconds:0.0} s") +
        $"  disk {F(f.Disk.WriteMBPerSecond, "0")} MB/s {F(f.Disk.FlushesPerSecond, "0")} flushes/s";

    private static void PrintSummary(Options o, List<Row> rows)
    {
        if (rows.Count == 0)
        {
            return;
        }

        Console.WriteLine($"{(o.Repeat == 1 ? "one run" : $"medians of {o.Repeat} runs")} per side (window {o.Seconds:0.###} s after {o.WarmupSeconds:0.###} s warm-up):");
        Console.WriteLine("  range: lowest and highest ops/s; fail: failed proposals in all runs together; CPU %: of one core, both cores = 200;");
        Console.WriteLine("  CPU us/op: CPU time of the three node processes (callers included) over the window per successful proposal;");
        Console.WriteLine("  alloc B/op: bytes allocated in our three node processes over the window per proposal (n/a for PhxPaxos);");
        Console.WriteLine("  disk MB/s, flushes/s: what the machine's disks wrote and the cache flushes they completed (each fdatasync ends with one),");
        Console.WriteLine("  per second over the run's busiest stretch as long as the window; compare with the disk ceiling above;");
        Console.WriteLine("  x PhxPaxos: ours / PhxPaxos of the same row (ops/s: above 1 is faster; CPU/op: below 1 is cheaper)");
        Console.WriteLine();
        Console.WriteLine("| sync | groups | callers | value B | side | ops/s | range | mean ms | p50 ms | p99 ms | fail | CPU % | CPU us/op | alloc B/op | disk MB/s | flushes/s | ops/s x PhxPaxos | CPU/op x PhxPaxos |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var row in rows)
        {
            var phx = row.Runs.GetValueOrDefault(Row.PhxPaxos) ?? [];
            var phxOps = Median(phx, f => f.OpsPerSecond);
            var phxCpu = Median(phx, f => f.CpuMicrosPerOp);
            foreach (var side in row.Sides)
            {
                var runs = row.Runs.GetValueOrDefault(side) ?? [];
                var ours = side != Row.PhxPaxos;
                var ops = Median(runs, f => f.OpsPerSecond);
                var cpu = Median(runs, f => f.CpuMicrosPerOp);
                Console.WriteLine(
                    $"| {(row.Sync ? "on" : "off")} | {row.Groups} | {row.Callers} | {row.ValueBytes} | {row.SideName(side)}{RunCount(o, runs)} " +
                    $"| {F(ops, "0")} | {Range(runs)} | {F(Median(runs, f => f.MeanMs), "0.00")} | {F(Median(runs, f => f.P50Ms), "0.00")} | {F(Median(runs, f => f.P99Ms), "0.00")} " +
                    $"| {(runs.Count == 0 ? "n/a" : runs.Sum(f => f.Failed))} | {F(Median(runs, f => f.CpuPercent), "0")} | {F(cpu, "0")} | {F(Median(runs, f => f.AllocatedBytesPerOp), "0")} " +
                    $"| {F(Median(runs, f => f.Disk.WriteMBPerSecond), "0")} | {F(Median(runs, f => f.Disk.FlushesPerSecond), "0")} " +
                    $"| {(ours ? F(ops / phxOps, "0.00") : "")} | {(ours ? F(cpu / phxCpu, "0.00") : "")} |");
            }
        }
    }

    private static void PrintScale(Row row)
    {
        Console.WriteLine($"ours alone with {row.Groups} groups (PhxPaxos's documented maximum is 200), medians of the runs; threads and working set");
        Console.WriteLine("at the end of the window, per node process (node 0, the callers' process, first):");
        Console.WriteLine();
        Console.WriteLine("| groups | callers | value B | batch | sync | ops/s | range | p50 ms | p99 ms | fail | CPU % | CPU us/op | alloc B/op | threads | working set MiB | start s |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var side in row.Ours)
        {
            PrintScaleSide(row, side);
        }
    }

    private static void PrintScaleSide(Row row, string side)
    {
        var runs = row.Runs.GetValueOrDefault(side) ?? [];
        var processes = runs.Count == 0 ? 0 : runs.Max(f => f.Threads.Length);
        string PerProcess(Func<Figures, int, double> figure, string format) => processes == 0
            ? "n/a"
            : string.Join(" / ", Enumerable.Range(0, processes).Select(p => F(Median(runs.Where(f => p < f.Threads.Length).ToList(), f => figure(f, p)), format)));

        Console.WriteLine(
            $"| {row.Groups} | {row.Callers} | {row.ValueBytes} | {side}{RunCount(null, runs)} | {(row.Sync ? "on" : "off")} | {F(Median(runs, f => f.OpsPerSecond), "0")} | {Range(runs)} " +
            $"| {F(Median(runs, f => f.P50Ms), "0.00")} | {F(Median(runs, f => f.P99Ms), "0.00")} | {(runs.Count == 0 ? "n/a" : runs.Sum(f => f.Failed))} " +
            $"| {F(Median(runs, f => f.CpuPercent), "0")} | {F(Median(runs, f => f.CpuMicrosPerOp), "0")} | {F(Median(runs, f => f.AllocatedBytesPerOp), "0")} " +
            $"| {PerProcess((f, p) => f.Threads[p], "0")} | {PerProcess((f, p) => f.WorkingSetBytes[p] / 1048576.0, "0")} | {F(Median(runs, f => f.StartSeconds), "0.0")} |");
    }

    /// <summary>" (2 of 3 runs)" when some runs of a side gave no figures; nothing otherwise.</summary>
    private static string RunCount(Options? o, List<Figures> runs) =>
        o is null || runs.Count == o.Repeat ? "" : $" ({runs.Count} of {o.Repeat} runs)";

    private static string Range(List<Figures> runs) =>
        runs.Count == 0 ? "n/a" : $"{runs.Min(f => f.OpsPerSecond):0}–{runs.Max(f => f.OpsPerSecond):0}";

    /// <summary>The median of a figure over runs, NaN values left out; NaN when none is left.</summary>
    private static double Median(List<Figures> runs, Func<Figures, double> figure)
    {
        var values = runs.Select(figure).Where(v => !double.IsNaN(v)).Order().ToArray();
        return values.Length switch
        {
            0 => double.NaN,
            var n when n % 2 == 1 => values[n / 2],
            var n => (values[(n / 2) - 1] + values[n / 2]) / 2,
        };
    }

    private static string F(double value, string format) =>
        double.IsNaN(value) || double.IsInfinity(value) ? "n/a" : value.ToString(format, CultureInfo.InvariantCulture);

    /// <summary>The value of the first "<paramref name="key"/>: value" line of a /proc file, or null.</summary>
    private static string? ProcField(string path, string key)
    {
        try
        {
            var line = File.ReadLines(path).FirstOrDefault(l => l.StartsWith(key, StringComparison.Ordinal));
            return line?[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static string MemoryGiB()
    {
        var total = ProcField("/proc/meminfo", "MemTotal")?.Split(' ')[0];
        return long.TryParse(total, NumberStyles.Integer, CultureInfo.InvariantCulture, out var kb) ? $"{kb / 1048576.0:0.#} GiB" : "unknown";
    }

    private static string LoadAverage()
    {
        try
        {
            return string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    /// <summary>What one set of opt-ins (<c>--opt-in</c>) changes.</summary>
    private static string DescribeOptIns(string set) => set == "none"
        ? "the defaults (each group fsyncs its own files and every frame is its own datagram, as PhxPaxos)"
        : "\"+" + set + "\": " + string.Join(" and ", set.Split('+').Select(p => p switch
        {
            SharedOptIn => "one write-ahead log per node, one fdatasync per batch across groups (rows with fsync)",
            CoalesceOptIn => "a burst's frames to one peer in one datagram",
            _ => "callers' code continues on the engine thread that completes their proposal, not through the thread pool",
        }));
}
