using System.Globalization;

namespace Orleans.Paxos.Engine.Benchmarks;

/// <summary>
/// PhxPaxos against this engine in one run. Each run starts a fresh cluster of 3 nodes in 3 processes on
/// 127.0.0.1 with every proposal made in node 0's process: PhxPaxos's benchmark driver (<c>phxbench</c>), or this
/// program's <c>consensus --procs 3</c>. Runs are interleaved (PhxPaxos, ours, PhxPaxos, ours, ...) and every row
/// is repeated; medians are reported. A round runs every selected row once before the next round starts, so a burst
/// of noise on the shared machine touches one repeat of many rows rather than every repeat of one row.
/// </summary>
/// <remarks>
/// The disk's own fsync ceiling (<see cref="DiskBenchmark"/>) is measured once at the start. A last row runs this
/// engine alone with PhxPaxos's documented maximum of groups (200 by default) and reports the node processes'
/// threads and working set.
/// </remarks>
internal static partial class ComparisonBenchmark
{
    public const string Summary = "PhxPaxos's phxbench and consensus --procs 3 interleaved in one run, medians (options: --quick --groups 1,4,16,64 --callers 8,32 --value-size 100,1024,102400 --batch off,auto,on --sync on,off --repeat 3 --seconds 3 --warmup 1 --list)";

    private const string Usage = """
        usage: compare [options]   PhxPaxos (phxbench, path in PAXOS_PHXBENCH or ../shared/peer/phxbench) against consensus --procs 3
          --quick                 groups 1,16, callers 32, 100 B values, batch off,auto,on, sync on,off (explicit lists below override)
          --groups 1,4,16,64      groups per run
          --callers 8,32          caller threads/tasks in node 0's process; caller i proposes to group i % groups (also --proposers)
          --value-size 100,1024,102400
          --batch off,auto,on     ours: off and auto are compared with PhxPaxos Propose; on and idle with BatchPropose
          --batch-count 5         BatchPropose's count on both sides (delay 20 ms, PhxPaxos's default)
          --sync on,off           fsync of acceptor writes
          --repeat 3              runs of every row; medians are reported
          --seconds 3 --warmup 1  measured window and warm-up of every run
          --scale-groups 200      the last row, ours alone: groups (0 = none), with --scale-callers 200, 100 B, batch auto
          --disk-seconds 2        the disk's fsync ceiling at the start, per configuration (0 = skip); --disk-threads 1,8,24
          --scale-only            only that row
          --opt-in none           sets of ours' opt-ins, each run as its own side: none (the defaults, PhxPaxos's formats),
                                  shared (Paxos:SharedLog, rows with fsync only), coalesce (Paxos:CoalesceDatagrams),
                                  inline (Paxos:AllowSynchronousContinuations), or several joined by '+'; e.g.
                                  none,shared+coalesce gives sides "off", "off+shared+coalesce", ...
          --shared-log off        on: the same as --opt-in shared; both: --opt-in none,shared
          --loops N               ours' loop threads per node (Paxos:LoopThreadCount); default: this machine's cores
                                  divided among the 3 nodes, at least 1 (0: the engine's default, one per core per node)
          --list                  print the configuration and the planned runs, run nothing
        The full matrix is 3 rounds of 241 runs; --quick is 3 rounds of 21. Compare figures within one run only.
        """;

    /// <summary>The opt-in that gives ours the node-wide shared log (<c>consensus --shared-log on</c>); only in rows with fsync.</summary>
    private const string SharedOptIn = "shared";

    /// <summary>The opt-in that coalesces datagrams (<c>consensus --coalesce on</c>).</summary>
    private const string CoalesceOptIn = "coalesce";

    /// <summary>The opt-in that runs callers' continuations on the engine's threads (<c>consensus --sync-continuations on</c>).</summary>
    private const string InlineOptIn = "inline";

    private sealed class Options
    {
        public int[] Groups { get; set; } = [1, 4, 16, 64];

        public int[] Callers { get; set; } = [8, 32];

        public int[] ValueSizes { get; set; } = [100, 1024, 102400];

        public string[] Batch { get; set; } = ["off", "auto", "on"];

        public bool[] Sync { get; set; } = [true, false];

        public int BatchCount { get; set; } = 5;

        public int Repeat { get; set; } = 3;

        public double Seconds { get; set; } = 3;

        public double WarmupSeconds { get; set; } = 1;

        public int ScaleGroups { get; set; } = 200;

        public int ScaleCallers { get; set; } = 200;

        public double DiskSeconds { get; set; } = 2;

        public int[] DiskThreads { get; set; } = [1, 8, 24];

        public bool Quick { get; set; }

        public bool List { get; set; }

        /// <summary>Only the scale row: this engine alone with <see cref="ScaleGroups"/> groups.</summary>
        public bool ScaleOnly { get; set; }

        /// <summary>
        /// Sets of opt-ins ours runs with, each a side of its own named "&lt;batch&gt;+&lt;set&gt;" ("none": the defaults,
        /// named by the batch mode alone). A set is <see cref="SharedOptIn"/>, <see cref="CoalesceOptIn"/>,
        /// <see cref="InlineOptIn"/> or several joined by '+'; the shared log is left out of rows without fsync (where it is not fsynced either).
        /// </summary>
        public string[] OptIns { get; set; } = ["none"];

        /// <summary>
        /// Loop threads per node of ours (<c>consensus --loops</c>). The engine's default is one per core, for a node
        /// that has its machine to itself; here three nodes share the machine, so by default each gets its share of
        /// the cores (at least one). 0 leaves the engine's default.
        /// </summary>
        public int Loops { get; set; } = Math.Max(1, Environment.ProcessorCount / 3);
    }

    /// <summary>
    /// One row of the comparison: a configuration run by PhxPaxos (unless <see cref="WithPhxPaxos"/> is false) and by
    /// each of this engine's batch modes in <see cref="Ours"/>, with every run's figures by side.
    /// </summary>
    private sealed class Row(bool sync, int valueBytes, int groups, int callers, bool phxBatch, string[] ours, bool withPhxPaxos = true)
    {
        public const string PhxPaxos = "PhxPaxos";

        public bool Sync { get; } = sync;

        public int ValueBytes { get; } = valueBytes;

        public int Groups { get; } = groups;

        public int Callers { get; } = callers;

        /// <summary>PhxPaxos's call: <c>BatchPropose</c> when true, <c>Propose</c> otherwise.</summary>
        public bool PhxBatch { get; } = phxBatch;

        /// <summary>This engine's batch modes (consensus <c>--batch</c>) measured beside PhxPaxos.</summary>
        public string[] Ours { get; } = ours;

        public bool WithPhxPaxos { get; } = withPhxPaxos;

        /// <summary>Successful runs by side (<see cref="PhxPaxos"/> or one of <see cref="Ours"/>).</summary>
        public Dictionary<string, List<Figures>> Runs { get; } = [];

        /// <summary>Runs that produced no figures, by side.</summary>
        public Dictionary<string, int> Errors { get; } = [];

        public IEnumerable<string> Sides => WithPhxPaxos ? [PhxPaxos, .. Ours] : Ours;

        public string Label => $"{Groups} group{(Groups == 1 ? "" : "s")}, {Callers} caller{(Callers == 1 ? "" : "s")}, {ValueBytes} B, sync {(Sync ? "on" : "off")}";

        public string SideName(string side) => side == PhxPaxos ? $"PhxPaxos {(PhxBatch ? "BatchPropose" : "Propose")}" : $"ours {side}";
    }

    /// <summary>One run's figures, from either side; NaN where a side has no such figure.</summary>
    private sealed record Figures(
        double OpsPerSecond, double MeanMs, double P50Ms, double P99Ms, long Failed, double CpuPercent, double CpuMicrosPerOp, double AllocatedBytesPerOp)
    {
        /// <summary>Threads of each node process at the end of the window (ours only).</summary>
        public int[] Threads { get; init; } = [];

        /// <summary>Working set of each node process at the end of the window, bytes (ours only).</summary>
        public long[] WorkingSetBytes { get; init; } = [];

        /// <summary>Seconds until every node voted in every group, before the warm-up (ours only).</summary>
        public double StartSeconds { get; init; } = double.NaN;

        /// <summary>
        /// The machine's disks during the run's busiest stretch as long as the window (<see cref="DiskActivity"/>): MB
        /// written and cache flushes per second, both sides and anything else on the machine together.
        /// </summary>
        public (double WriteMBPerSecond, double FlushesPerSecond) Disk { get; init; } = (double.NaN, double.NaN);
    }

    public static async Task<int> RunAsync(string[] args)
    {
        if (args.Any(a => a is "--help" or "-h"))
        {
            Console.WriteLine(Usage);
            return 0;
        }

        Options options;
        try
        {
            options = Parse(args);
        }
        catch (FormatException ex)
        {
            Console.Error.WriteLine(ex.Message);
            Console.Error.WriteLine(Usage);
            return 2;
        }

        string phxbench;
        try
        {
            phxbench = LocatePhxbench();
        }
        catch (FileNotFoundException ex)
        {
            Console.Error.WriteLine(ex.Message);
            return 2;
        }

        var rows = options.ScaleOnly ? [] : Plan(options);
        var scale = options.ScaleGroups > 0
            ? new Row(options.Sync[0], 100, options.ScaleGroups, options.ScaleCallers, phxBatch: false, WithOptIns(["auto"], options.Sync[0], options), withPhxPaxos: false)
            : null;
        var all = scale is null ? rows : [.. rows, scale];
        var runsPerRound = all.Sum(r => r.Sides.Count());
        await PrintConfigurationAsync(options, phxbench, runsPerRound).ConfigureAwait(false);
        if (options.List)
        {
            Console.WriteLine("planned runs of one round, in order:");
            foreach (var row in all)
            {
                Console.WriteLine($"  {row.Label}: {string.Join(", ", row.Sides.Select(row.SideName))}");
            }

            return 0;
        }

        if (options.DiskSeconds > 0)
        {
            DiskBenchmark.Run(
            [
                "--threads", Join(options.DiskThreads),
                "--value-size", Join(all.Select(r => r.ValueBytes).Distinct().Order()),
                "--seconds", options.DiskSeconds.ToString(CultureInfo.InvariantCulture),
            ]);
            Console.WriteLine();
        }

        Console.WriteLine("runs, in order:");
        var done = 0;
        var total = runsPerRound * options.Repeat;
        for (var round = 1; round <= options.Repeat; round++)
        {
            foreach (var row in all)
            {
                foreach (var side in row.Sides)
                {
                    done++;
                    var prefix = $"  [{done}/{total}] round {round}  {row.Label,-40} {row.SideName(side),-21}";
                    try
                    {
                        var figures = side == Row.PhxPaxos
                            ? await RunPhxPaxosAsync(phxbench, row, options).ConfigureAwait(false)
                            : await RunOursAsync(row, side, options).ConfigureAwait(false);
                        (row.Runs.TryGetValue(side, out var list) ? list : row.Runs[side] = []).Add(figures);
                        Console.WriteLine($"{prefix} {Progress(figures)}");
                    }
                    catch (Exception ex) when (ex is InvalidOperationException or TimeoutException or FormatException or System.ComponentModel.Win32Exception or System.Text.Json.JsonException)
                    {
                        row.Errors[side] = row.Errors.GetValueOrDefault(side) + 1;
                        Console.WriteLine($"{prefix} no figures: {ex.Message}");
                    }
                }
            }
        }

        Console.WriteLine();
        PrintSummary(options, rows);
        if (scale is not null)
        {
            if (rows.Count > 0)
            {
                Console.WriteLine();
            }

            PrintScale(scale);
        }

        Console.WriteLine();
        Console.WriteLine($"finished {DateTime.UtcNow:yyyy-MM-dd HH:mm:ss} UTC; load average {LoadAverage()}");
        return 0;
    }

    /// <summary>The rows of one round, in order: sync, value size, groups, callers, then Propose before BatchPropose.</summary>
    private static List<Row> Plan(Options o)
    {
        var propose = o.Batch.Where(b => b is "off" or "auto").ToArray();
        var batch = o.Batch.Where(b => b is "on" or "idle").ToArray();
        var rows = new List<Row>();
        foreach (var sync in o.Sync)
        {
            foreach (var size in o.ValueSizes)
            {
                foreach (var groups in o.Groups)
                {
                    foreach (var callers in o.Callers)
                    {
                        if (propose.Length > 0)
                        {
                            rows.Add(new Row(sync, size, groups, callers, phxBatch: false, WithOptIns(propose, sync, o)));
                        }

                        if (batch.Length > 0)
                        {
                            rows.Add(new Row(sync, size, groups, callers, phxBatch: true, WithOptIns(batch, sync, o)));
                        }
                    }
                }
            }
        }

        return rows;
    }

    /// <summary>Ours' sides of a row: each batch mode with each set of opt-ins (the shared log only with fsync), without repeats.</summary>
    private static string[] WithOptIns(string[] batchModes, bool sync, Options o)
    {
        var sides = new List<string>();
        foreach (var set in o.OptIns)
        {
            var parts = set.Split('+').Where(p => p != "none" && (sync || p != SharedOptIn)).ToArray();
            foreach (var mode in batchModes)
            {
                var side = parts.Length == 0 ? mode : $"{mode}+{string.Join('+', parts)}";
                if (!sides.Contains(side))
                {
                    sides.Add(side);
                }
            }
        }

        return [.. sides];
    }

    private static Options Parse(string[] args)
    {
        var o = new Options();
        if (args.Contains("--quick"))
        {
            // Explicit options below override these, wherever they stand on the command line.
            o.Quick = true;
            o.Groups = [1, 16];
            o.Callers = [32];
            o.ValueSizes = [100];
        }

        for (var i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new FormatException($"{args[i]} needs a value");
            int[] Ints() => [.. Next().Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture))];
            double Number() => double.Parse(Next(), CultureInfo.InvariantCulture);
            switch (args[i])
            {
                case "--quick": break;
                case "--groups": o.Groups = Ints(); break;
                case "--callers" or "--proposers": o.Callers = Ints(); break;
                case "--value-size": o.ValueSizes = Ints(); break;
                case "--batch": o.Batch = Next().Split(','); break;
                case "--batch-count": o.BatchCount = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--sync":
                    o.Sync = [.. Next().Split(',').Select(s => s switch
                    {
                        "on" => true,
                        "off" => false,
                        _ => throw new FormatException("--sync takes on, off or on,off"),
                    })];
                    break;
                case "--repeat": o.Repeat = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--seconds": o.Seconds = Number(); break;
                case "--warmup": o.WarmupSeconds = Number(); break;
                case "--scale-groups": o.ScaleGroups = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--scale-callers": o.ScaleCallers = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--disk-seconds": o.DiskSeconds = Number(); break;
                case "--disk-threads": o.DiskThreads = Ints(); break;
                case "--list": o.List = true; break;
                case "--scale-only": o.ScaleOnly = true; break;
                case "--loops": o.Loops = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--shared-log":
                    o.OptIns = Next() switch
                    {
                        "off" => ["none"],
                        "on" => [SharedOptIn],
                        "both" => ["none", SharedOptIn],
                        _ => throw new FormatException("--shared-log takes off, on or both"),
                    };
                    break;
                case "--opt-in":
                    o.OptIns = Next().Split(',');
                    if (o.OptIns.Any(set => set != "none" && set.Split('+').Any(p => p is not (SharedOptIn or CoalesceOptIn or InlineOptIn))))
                    {
                        throw new FormatException("--opt-in takes sets of shared, coalesce and inline joined by '+', or none, separated by commas");
                    }

                    break;
                default: throw new FormatException($"unknown option {args[i]}");
            }
        }

        if (o.Batch.Any(b => b is not ("off" or "auto" or "on" or "idle")))
        {
            throw new FormatException("--batch takes off, auto, on, idle or a list such as off,auto,on");
        }

        if (o.Repeat < 1 || o.Seconds <= 0 || o.WarmupSeconds < 0 || o.Sync.Length == 0
            || o.Groups.Concat(o.Callers).Any(n => n < 1) || o.ValueSizes.Any(n => n < 0) || o.BatchCount < 1 || o.Loops < 0)
        {
            throw new FormatException("--repeat, --seconds, --groups, --callers and --batch-count must be positive, --warmup, --value-size and --loops not negative");
        }

        if (o.ScaleOnly && o.ScaleGroups < 1)
        {
            throw new FormatException("--scale-only needs --scale-groups of 1 or more");
        }

        return o;
    }

    private static string Join<T>(IEnumerable<T> values) => string.Join(",", values);
}
