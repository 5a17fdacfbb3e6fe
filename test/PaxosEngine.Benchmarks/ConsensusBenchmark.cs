using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Orleans.Paxos.Engine.Groups;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.TestSupport;

namespace Orleans.Paxos.Engine.Benchmarks;

/// <summary>
/// The end-to-end benchmark: three nodes on loopback (one process, or one process per node with
/// <c>--procs 3</c>), every proposal made on node 0, fsync on unless <c>--sync off</c>, fresh data folder
/// per configuration. List options run every combination. Prints proposals/s, mean, p50 and p99
/// latency, CPU, CPU time and bytes allocated per proposal, threads and working set of the node processes;
/// <c>--json</c> prints one JSON object per configuration instead.
/// </summary>
/// <remarks>
/// The proposers run in node 0's process, as PhxPaxos's benchmark driver runs its client threads in node 0's
/// process: CPU and allocations are those of the node processes over the measured window, callers included.
/// </remarks>
internal static class ConsensusBenchmark
{
    public const string Summary = "3 nodes on loopback: proposals/s, latency, CPU and allocations per proposal (options: --groups 1,4,16 --value-size 100 --proposers 8,32 --batch off|on|idle|auto --sync on --seconds 3 --procs 1|3 --loops 0 --shared-log off|on --coalesce off|on --sync-continuations off|on --flush-together on|off --batch-datagrams on|off --alloc-types --metrics off,on,traces --disk --json)";

    private sealed class Options
    {
        public int[] Groups { get; set; } = [1, 4, 16];

        public int[] ValueSizes { get; set; } = [100];

        public int[] Proposers { get; set; } = [8, 32];

        public string[] Batch { get; set; } = ["auto"];

        /// <summary>off: nothing listens; on: an OpenTelemetry meter provider reads the engine's instruments; traces: also a tracer provider samples every span.</summary>
        public string[] Metrics { get; set; } = ["off"];

        public bool Sync { get; set; } = true;

        public double Seconds { get; set; } = 3;

        public double WarmupSeconds { get; set; } = 1;

        public int Procs { get; set; } = 1;

        public int BatchCount { get; set; } = 5;

        /// <summary>Loop threads per node (<see cref="PaxosNodeOptions.LoopThreadCount"/>); 0 = the node's default.</summary>
        public int Loops { get; set; }

        /// <summary>The node-wide shared log (<see cref="PaxosNodeOptions.SharedLog"/>).</summary>
        public bool SharedLog { get; set; }

        /// <summary>Frames to one peer in one burst share a datagram (<see cref="PaxosNodeOptions.CoalesceDatagrams"/>).</summary>
        public bool Coalesce { get; set; }

        /// <summary>Callers' code runs on the engine thread that completes their proposal (<see cref="PaxosNodeOptions.AllowSynchronousContinuations"/>).</summary>
        public bool SyncContinuations { get; set; }

        /// <summary>One flush of the disk for several groups' files (<see cref="PaxosNodeOptions.FlushFilesTogether"/>).</summary>
        public bool FlushTogether { get; set; } = true;

        /// <summary>Datagrams sent and received with sendmmsg/recvmmsg (<see cref="PaxosNodeOptions.BatchDatagrams"/>).</summary>
        public bool BatchDatagrams { get; set; } = true;

        public bool Json { get; set; }

        /// <summary>Also report the disk's share: fsyncs/s, fsync and acceptor-persist latency, records per fsync.</summary>
        public bool Disk { get; set; }

        /// <summary>Also print the types allocated most in this process during the window (<see cref="AllocationSampler"/>).</summary>
        public bool AllocationTypes { get; set; }

        public string BasePath { get; set; } = Path.GetTempPath();
    }

    /// <summary>A state machine that only counts; the benchmark measures consensus, not the application.</summary>
    /// <summary>JSON with NaN written as "NaN" (a configuration in which nothing succeeded has no latency).</summary>
    internal static readonly JsonSerializerOptions JsonOptions = new() { NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    private sealed class CountingStateMachine : IStateMachine
    {
        public long Executed;

        public int SmId => 1;

        public bool Execute(int groupIndex, ulong instanceId, ReadOnlySpan<byte> value, StateMachineContext? context)
        {
            Interlocked.Increment(ref Executed);
            return true;
        }
    }

    public static async Task<int> RunAsync(string[] args)
    {
        if (args.Length > 0 && args[0] == "node")
        {
            return RunNodeProcess(args[1..]);
        }

        Options options;
        try
        {
            options = Parse(args);
        }
        catch (FormatException ex)
        {
            Console.Error.WriteLine(ex.Message);
            Console.Error.WriteLine(Summary);
            return 2;
        }

        if (!options.Json)
        {
            Console.WriteLine($"consensus: 3 nodes on 127.0.0.1, {options.Procs} process(es), proposals from node 0, sync {(options.Sync ? "on" : "off")}, " +
                $"{options.Seconds:0.#} s after {options.WarmupSeconds:0.#} s warm-up; loop threads per node {(options.Loops == 0 ? "default" : options.Loops)}; shared log {(options.SharedLog ? "on" : "off")}; coalesce {(options.Coalesce ? "on" : "off")}; synchronous continuations {(options.SyncContinuations ? "on" : "off")}; flush together {(options.FlushTogether ? "on" : "off")}; batch datagrams {(options.BatchDatagrams ? "on" : "off")}; {Environment.ProcessorCount} cores, .NET {Environment.Version}");
            Console.WriteLine("  batch: off = one value per instance (PhxPaxos Propose); auto = values waiting while an instance is in flight share the next one;");
            Console.WriteLine($"         on = BatchProposeAsync with PhxPaxos's rule, the default (count {options.BatchCount}, 20 ms, 512000 B);");
            Console.WriteLine("         idle = BatchProposeAsync with BatchFlushWhenIdle (values go when the group is idle, gather while an instance is in flight; after one of ours is chosen, up to 1 ms for its callers to come back)");
            Console.WriteLine();
            Console.WriteLine("  metrics: on = OpenTelemetry SDK meter provider (all Orleans.Paxos instruments, read every second); traces = that and a tracer provider (every paxos.propose span sampled, batch-exported)");
            Console.WriteLine();
            if (options.Disk)
            {
                Console.WriteLine("  disk (nodes in this process): fsync/s, fsync mean and p99 ms, acceptor persist (write until the reply may go) mean and p99 ms, records per fsync");
                Console.WriteLine();
            }

            Console.WriteLine("  CPU us/op and B/op: CPU time and bytes allocated in the node processes (callers included) over the window, per proposal;");
            Console.WriteLine("  GC %: time the node processes spent paused for garbage collection over the window, summed over processes, as a share of it; gen2: full collections in that time;");
            Console.WriteLine("  threads and WS MiB: threads and working set of the node processes together at the end of the window;");
            Console.WriteLine("  start s: from starting the nodes until every node votes in every group (new groups survey their peers); the warm-up follows");
            Console.WriteLine();
            Console.WriteLine($"{"groups",6} {"value",7} {"props",5} {"batch",5} {"metrics",7} {"ops/s",9} {"inst/s",8} {"mean ms",8} {"p50 ms",8} {"p99 ms",8} {"fail",5} {"CPU %",6} {"CPU us/op",9} {"B/op",7} {"GC %",5} {"gen2",5} {"threads",7} {"WS MiB",6} {"start s",7}" +
                (options.Disk ? $" {"fsync/s",8} {"fs ms",6} {"fs p99",6} {"pers ms",7} {"pers p99",8} {"rec/fs",6}" : ""));
        }

        foreach (var size in options.ValueSizes)
        {
            foreach (var groups in options.Groups)
            {
                foreach (var proposers in options.Proposers)
                {
                    foreach (var batch in options.Batch)
                    foreach (var metrics in options.Metrics)
                    {
                        Result r;
                        using (metrics == "off" ? null : new TelemetryCollection(traces: metrics == "traces"))
                        {
                            r = await RunOneAsync(options, groups, size, proposers, batch).ConfigureAwait(false);
                        }

                        r = r with { Metrics = metrics };
                        if (options.Json)
                        {
                            Console.WriteLine(JsonSerializer.Serialize(r, JsonOptions));
                        }
                        else
                        {
                            var d = r.Disk;
                            Console.WriteLine($"{r.Groups,6} {r.ValueBytes,7} {r.Proposers,5} {r.Batch,5} {r.Metrics,7} {r.OpsPerSecond,9:0} {r.InstancesPerSecond,8:0} {r.MeanMs,8:0.00} {r.P50Ms,8:0.00} {r.P99Ms,8:0.00} {r.Failed,5} {r.CpuPercent,6:0} {r.CpuMicrosPerOp,9:0} {r.AllocatedBytesPerOp,7:0} {r.GcPausePercent,5:0.0} {r.Gen2Collections,5} {r.Threads.Sum(),7} {r.WorkingSetBytes.Sum() / 1048576.0,6:0} {r.StartSeconds,7:0.0}" +
                                (d is null ? "" : $" {d.FsyncsPerSecond,8:0} {d.FsyncMeanMs,6:0.00} {d.FsyncP99Ms,6:0.00} {d.PersistMeanMs,7:0.00} {d.PersistP99Ms,8:0.00} {d.RecordsPerFsync,6:0.0}"));
                        }
                    }
                }
            }
        }

        return 0;
    }

    /// <summary>One configuration's figures; also what <c>--json</c> writes and <see cref="ComparisonBenchmark"/> reads.</summary>
    internal sealed record Result(
        int Groups, int ValueBytes, int Proposers, string Batch, bool Sync, int Procs, double Seconds,
        double OpsPerSecond, double InstancesPerSecond, double MeanMs, double P50Ms, double P99Ms, long Failed, double CpuPercent)
    {
        public string Metrics { get; init; } = "off";

        /// <summary>CPU time of the node processes over the window per successful proposal, in microseconds.</summary>
        public double CpuMicrosPerOp { get; init; }

        /// <summary>Bytes allocated in the node processes over the window per successful proposal.</summary>
        public double AllocatedBytesPerOp { get; init; }

        /// <summary>Garbage-collection pauses of the node processes over the window, summed, as a percentage of the window.</summary>
        public double GcPausePercent { get; init; }

        /// <summary>Full (generation 2) collections in the node processes over the window.</summary>
        public int Gen2Collections { get; init; }

        /// <summary>Threads of each node process at the end of the window (node 0's process first).</summary>
        public int[] Threads { get; init; } = [];

        /// <summary>Working set of each node process at the end of the window, in bytes (node 0's process first).</summary>
        public long[] WorkingSetBytes { get; init; } = [];

        /// <summary>Seconds from starting the nodes until every node voted in every group (before the warm-up).</summary>
        public double StartSeconds { get; init; }

        /// <summary>With <c>--disk</c>: the disk's share of the time (nodes in this process).</summary>
        public DiskFigures? Disk { get; init; }
    }

    private static async Task<Result> RunOneAsync(Options o, int groups, int valueSize, int proposers, string batch)
    {
        var root = Path.Combine(o.BasePath, "paxos-bench-" + Guid.NewGuid().ToString("N"));
        var ports = Enumerable.Range(0, 3).Select(_ => LoopbackPorts.Next()).ToArray();
        var members = ports.Select(p => $"127.0.0.1:{p}").ToList();
        var nodes = new List<PaxosNode>();
        var children = new List<Process>();
        CountingStateMachine? counter = null;
        using var disk = o.Disk ? new DiskProbe() : null;
        var starting = Stopwatch.StartNew();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                if (i > 0 && o.Procs > 1)
                {
                    children.Add(StartChild(members, i, groups, o, root, batch));
                    continue;
                }

                var sm = new CountingStateMachine();
                counter ??= sm;
                var node = new PaxosNode(NodeOptions(members, i, groups, o, root, batch));
                node.AddStateMachine(sm);
                node.Start();
                nodes.Add(node);
            }

            // A new group surveys its peers before it votes; the warm-up starts once every node votes in every group.
            await WaitUntilVotingAsync(nodes, children, groups).ConfigureAwait(false);
            var startSeconds = starting.Elapsed.TotalSeconds;
            var proposer = nodes[0];
            var value = new byte[valueSize];
            Random.Shared.NextBytes(value);
            using var stop = new CancellationTokenSource();
            var measuring = 0;
            var latencies = new List<double>[proposers];
            var failed = new long[proposers];
            var workers = new Task[proposers];
            for (var p = 0; p < proposers; p++)
            {
                var index = p;
                latencies[p] = new List<double>(100_000);
                workers[p] = Task.Run(async () =>
                {
                    var group = index % groups;
                    var context = new StateMachineContext(1);
                    while (!stop.IsCancellationRequested)
                    {
                        var start = Stopwatch.GetTimestamp();
                        var result = batch is "on" or "idle"
                            ? await proposer.BatchProposeAsync(group, value, context).ConfigureAwait(false)
                            : await proposer.ProposeAsync(group, value, context).ConfigureAwait(false);
                        if (Volatile.Read(ref measuring) == 1)
                        {
                            if (result.IsOk)
                            {
                                latencies[index].Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                            }
                            else
                            {
                                failed[index]++;
                            }
                        }
                    }
                });
            }

            await Task.Delay(TimeSpan.FromSeconds(o.WarmupSeconds)).ConfigureAwait(false);
            var instancesBefore = SumNow(proposer, groups);
            var gcBefore = await GcTotalsAsync(children).ConfigureAwait(false);
            var cpuBefore = TotalCpu(children);
            using var sampler = o.AllocationTypes ? new AllocationSampler() : null;
            if (sampler is not null)
            {
                sampler.Sampling = true;
            }

            var wall = Stopwatch.StartNew();
            disk?.Begin();
            Volatile.Write(ref measuring, 1);
            await Task.Delay(TimeSpan.FromSeconds(o.Seconds)).ConfigureAwait(false);
            Volatile.Write(ref measuring, 0);
            var elapsed = wall.Elapsed.TotalSeconds;
            if (sampler is not null)
            {
                sampler.Sampling = false;
                sampler.Print(latencies.Sum(l => (long)l.Count));
            }

            var diskFigures = disk?.End(elapsed);
            var cpu = (TotalCpu(children) - cpuBefore).TotalSeconds;
            var gc = (await GcTotalsAsync(children).ConfigureAwait(false)).Since(gcBefore);
            var instances = SumNow(proposer, groups) - instancesBefore;
            var (threads, workingSets) = Snapshot(children);
            await stop.CancelAsync().ConfigureAwait(false);
            await Task.WhenAll(workers).ConfigureAwait(false);

            var all = latencies.SelectMany(l => l).ToArray();
            Array.Sort(all);
            double Pct(double q) => all.Length == 0 ? double.NaN : all[Math.Min(all.Length - 1, (int)(q * all.Length))];
            return new Result(
                groups, valueSize, proposers, batch, o.Sync, o.Procs, o.Seconds,
                all.Length / elapsed, instances / elapsed,
                all.Length == 0 ? double.NaN : all.Average(), Pct(0.50), Pct(0.99),
                failed.Sum(), 100 * cpu / elapsed)
            {
                Disk = diskFigures,
                CpuMicrosPerOp = all.Length == 0 ? double.NaN : cpu * 1e6 / all.Length,
                AllocatedBytesPerOp = all.Length == 0 ? double.NaN : (double)gc.Allocated / all.Length,
                GcPausePercent = 100 * gc.Pause.TotalSeconds / elapsed,
                Gen2Collections = gc.Gen2,
                Threads = threads,
                WorkingSetBytes = workingSets,
                StartSeconds = startSeconds,
            };
        }
        finally
        {
            foreach (var n in nodes)
            {
                n.Dispose();
            }

            foreach (var c in children)
            {
                StopChild(c);
            }

            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
                // A leftover temp folder does not change the figures.
            }
        }
    }

    private static PaxosNodeOptions NodeOptions(List<string> members, int i, int groups, Options o, string root, string batch) => new()
    {
        MyNode = members[i],
        Members = members,
        GroupCount = groups,
        StoragePath = Path.Combine(root, $"node{i}"),
        Sync = o.Sync,
        AutoBatch = batch != "off",
        BatchFlushWhenIdle = batch == "idle",
        BatchCount = o.BatchCount,
        MaxWaitingProposals = 100_000,
        LoopThreadCount = o.Loops,
        SharedLog = o.SharedLog,
        CoalesceDatagrams = o.Coalesce,
        AllowSynchronousContinuations = o.SyncContinuations,
        FlushFilesTogether = o.FlushTogether,
        BatchDatagrams = o.BatchDatagrams,
    };

    private static double SumNow(PaxosNode node, int groups)
    {
        double sum = 0;
        for (var g = 0; g < groups; g++)
        {
            sum += node.GetNowInstanceId(g);
        }

        return sum;
    }

    private static TimeSpan TotalCpu(List<Process> children)
    {
        var total = Process.GetCurrentProcess().TotalProcessorTime;
        foreach (var c in children)
        {
            c.Refresh();
            total += c.TotalProcessorTime;
        }

        return total;
    }

    /// <summary>
    /// Waits until every node votes in every group: a new group's acceptor surveys the other members first
    /// (<see cref="VotingState.Surveying"/>). Each child answers a <c>voting</c> line with its count of voting groups.
    /// </summary>
    private static async Task WaitUntilVotingAsync(List<PaxosNode> nodes, List<Process> children, int groups)
    {
        var deadline = Stopwatch.StartNew();
        var limit = TimeSpan.FromSeconds(60 + groups / 2);
        while (true)
        {
            var voting = 0;
            string? reason = null;
            foreach (var node in nodes)
            {
                for (var g = 0; g < groups; g++)
                {
                    var (state, why) = node.GetGroupVotingState(g);
                    if (state == VotingState.Voting)
                    {
                        voting++;
                    }
                    else
                    {
                        reason ??= $"node {node.MyNodeId} group {g}: {state}, {why}";
                    }
                }
            }

            for (var i = 0; i < children.Count; i++)
            {
                await children[i].StandardInput.WriteLineAsync("voting").ConfigureAwait(false);
                await children[i].StandardInput.FlushAsync().ConfigureAwait(false);
                var line = await children[i].StandardOutput.ReadLineAsync().ConfigureAwait(false);
                voting += int.TryParse(line, NumberStyles.Integer, CultureInfo.InvariantCulture, out var count)
                    ? count
                    : throw new InvalidOperationException($"node process {i + 1} answered '{line}' to voting");
                if (count < groups)
                {
                    reason ??= $"node process {i + 1}: {groups - count} of {groups} groups not voting yet";
                }
            }

            if (voting == 3 * groups)
            {
                return;
            }

            if (deadline.Elapsed > limit)
            {
                throw new InvalidOperationException($"the nodes did not all vote within {limit.TotalSeconds:0} s; {reason}");
            }

            await Task.Delay(50).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Bytes allocated, garbage-collection pause time and full collections so far in this process and the node processes
    /// together. Each child answers a <c>stats</c> line on its standard input with its <see cref="GcTotals.Line"/>.
    /// </summary>
    private static async Task<GcTotals> GcTotalsAsync(List<Process> children)
    {
        foreach (var c in children)
        {
            await c.StandardInput.WriteLineAsync("stats").ConfigureAwait(false);
            await c.StandardInput.FlushAsync().ConfigureAwait(false);
        }

        var total = GcTotals.OfThisProcess();
        for (var i = 0; i < children.Count; i++)
        {
            var line = await children[i].StandardOutput.ReadLineAsync().ConfigureAwait(false);
            total = total.Plus(GcTotals.Parse(line) ?? throw new InvalidOperationException($"node process {i + 1} answered '{line}' to stats"));
        }

        return total;
    }

    /// <summary>A process's garbage-collection figures so far: bytes allocated, pause time, full collections.</summary>
    private readonly record struct GcTotals(long Allocated, TimeSpan Pause, int Gen2)
    {
        public static GcTotals OfThisProcess() =>
            new(GC.GetTotalAllocatedBytes(precise: true), GC.GetTotalPauseDuration(), GC.CollectionCount(2));

        /// <summary>What a child prints in answer to <c>stats</c>.</summary>
        public string Line => string.Create(CultureInfo.InvariantCulture, $"{Allocated} {Pause.Ticks} {Gen2}");

        public static GcTotals? Parse(string? line)
        {
            var parts = line?.Split(' ');
            return parts is { Length: 3 }
                && long.TryParse(parts[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out var allocated)
                && long.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var pause)
                && int.TryParse(parts[2], NumberStyles.Integer, CultureInfo.InvariantCulture, out var gen2)
                ? new GcTotals(allocated, TimeSpan.FromTicks(pause), gen2)
                : null;
        }

        public GcTotals Plus(GcTotals other) => new(Allocated + other.Allocated, Pause + other.Pause, Gen2 + other.Gen2);

        public GcTotals Since(GcTotals earlier) => new(Allocated - earlier.Allocated, Pause - earlier.Pause, Gen2 - earlier.Gen2);
    }

    /// <summary>Threads and working set of this process and of each node process, this process first.</summary>
    private static (int[] Threads, long[] WorkingSets) Snapshot(List<Process> children)
    {
        var processes = new List<Process> { Process.GetCurrentProcess() };
        processes.AddRange(children);
        var threads = new int[processes.Count];
        var workingSets = new long[processes.Count];
        for (var i = 0; i < processes.Count; i++)
        {
            processes[i].Refresh();
            threads[i] = processes[i].Threads.Count;
            workingSets[i] = processes[i].WorkingSet64;
        }

        processes[0].Dispose();
        return (threads, workingSets);
    }

    private static Process StartChild(List<string> members, int i, int groups, Options o, string root, string batch)
    {
        var psi = Program.StartInfo();
        psi.RedirectStandardInput = true;
        foreach (var a in new[] { "consensus", "node", string.Join(",", members), i.ToString(CultureInfo.InvariantCulture), groups.ToString(CultureInfo.InvariantCulture), o.Sync ? "on" : "off", root, batch, o.BatchCount.ToString(CultureInfo.InvariantCulture), o.Loops.ToString(CultureInfo.InvariantCulture), o.SharedLog ? "on" : "off", o.Coalesce ? "on" : "off", o.FlushTogether ? "on" : "off", o.BatchDatagrams ? "on" : "off", o.SyncContinuations ? "on" : "off" })
        {
            psi.ArgumentList.Add(a);
        }

        var process = Process.Start(psi) ?? throw new InvalidOperationException("could not start a node process");
        var ready = process.StandardOutput.ReadLine();
        if (ready != "ready")
        {
            throw new InvalidOperationException($"node process {i} failed to start: {ready}");
        }

        return process;
    }

    private static void StopChild(Process child)
    {
        try
        {
            child.StandardInput.Close();
            if (!child.WaitForExit(10_000))
            {
                child.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }

        child.Dispose();
    }

    /// <summary>
    /// A child process running one node until its standard input closes. A <c>stats</c> line on its standard input
    /// is answered with its garbage-collection figures so far (bytes allocated, pause time, full collections), a <c>voting</c> line with the number of groups
    /// whose acceptor votes.
    /// </summary>
    private static int RunNodeProcess(string[] args)
    {
        var members = args[0].Split(',').ToList();
        var o = new Options
        {
            Sync = args[3] == "on",
            BatchCount = int.Parse(args[6], CultureInfo.InvariantCulture),
            Loops = int.Parse(args[7], CultureInfo.InvariantCulture),
            SharedLog = args[8] == "on",
            Coalesce = args[9] == "on",
            FlushTogether = args[10] == "on",
            BatchDatagrams = args[11] == "on",
            SyncContinuations = args[12] == "on",
        };
        var groups = int.Parse(args[2], CultureInfo.InvariantCulture);
        using var node = new PaxosNode(NodeOptions(members, int.Parse(args[1], CultureInfo.InvariantCulture), groups, o, args[4], args[5]));
        node.AddStateMachine(new CountingStateMachine());
        node.Start();
        Console.WriteLine("ready");
        Console.Out.Flush();
        while (Console.In.ReadLine() is { } line)
        {
            if (line == "stats")
            {
                Console.WriteLine(GcTotals.OfThisProcess().Line);
            }
            else if (line == "voting")
            {
                var voting = 0;
                for (var g = 0; g < groups; g++)
                {
                    voting += node.GetGroupVotingState(g).State == VotingState.Voting ? 1 : 0;
                }

                Console.WriteLine(voting.ToString(CultureInfo.InvariantCulture));
            }

            Console.Out.Flush();
        }

        return 0;
    }

    private static Options Parse(string[] args)
    {
        var o = new Options();
        for (var i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new FormatException($"{args[i]} needs a value");
            bool OnOff()
            {
                var option = args[i];
                return Next() switch
                {
                    "on" => true,
                    "off" => false,
                    _ => throw new FormatException($"{option} takes on or off"),
                };
            }

            int[] Ints() => [.. Next().Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture))];
            switch (args[i])
            {
                case "--groups": o.Groups = Ints(); break;
                case "--value-size": o.ValueSizes = Ints(); break;
                case "--proposers": o.Proposers = Ints(); break;
                case "--batch": o.Batch = Next().Split(','); break;
                case "--metrics":
                    o.Metrics = Next().Split(',');
                    if (o.Metrics.Any(m => m is not ("on" or "off" or "traces")))
                    {
                        throw new FormatException("--metrics takes off, on (meter provider), traces (meter and tracer providers) or a list such as off,on,traces");
                    }

                    break;
                case "--batch-count": o.BatchCount = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--sync": o.Sync = Next() != "off"; break;
                case "--seconds": o.Seconds = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--warmup": o.WarmupSeconds = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--procs": o.Procs = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--loops": o.Loops = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--shared-log": o.SharedLog = OnOff(); break;
                case "--coalesce": o.Coalesce = OnOff(); break;
                case "--sync-continuations": o.SyncContinuations = OnOff(); break;
                case "--flush-together": o.FlushTogether = OnOff(); break;
                case "--batch-datagrams": o.BatchDatagrams = OnOff(); break;
                case "--path": o.BasePath = Next(); break;
                case "--json": o.Json = true; break;
                case "--disk": o.Disk = true; break;
                case "--alloc-types": o.AllocationTypes = true; break;
                default: throw new FormatException($"unknown option {args[i]}");
            }
        }

        if (o.Batch.Any(b => b is not ("off" or "on" or "idle" or "auto")))
        {
            throw new FormatException("--batch takes off, on, idle or auto (or a list such as off,auto)");
        }

        return o;
    }
}
