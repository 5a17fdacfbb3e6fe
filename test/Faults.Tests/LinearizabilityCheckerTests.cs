using Orleans.Paxos.Faults.Checking;
using Orleans.Paxos.Faults.History;

namespace Orleans.Paxos.Faults.Tests;

public sealed class LinearizabilityCheckerTests
{
    private static Verdict Check(params string[] lines)
    {
        var ops = lines.Select((l, i) => HistoryFile.Parse(l, i + 1)).ToList();
        var results = new LinearizabilityChecker().Check(ops);
        return results.Any(r => r.Verdict == Verdict.NotLinearizable) ? Verdict.NotLinearizable
            : results.Any(r => r.Verdict == Verdict.Unknown) ? Verdict.Unknown : Verdict.Linearizable;
    }

    [Fact]
    public void The_example_of_the_history_format_is_linearizable()
    {
        Assert.Equal(Verdict.Linearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"c0-1","call":1000,"return":2000}""",
            """{"client":1,"op":"get","key":"x","value":"c0-1","call":1500,"return":2600}""",
            """{"client":2,"op":"get","key":"y","value":null,"call":1600,"return":1700}""",
            """{"client":2,"op":"cas","key":"x","expected":"c0-1","value":"c2-1","swapped":true,"call":3000,"return":3900}""",
            """{"client":3,"op":"cas","key":"x","expected":"c0-1","value":"c3-1","swapped":false,"call":3100,"return":4000}""",
            """{"client":0,"op":"put","key":"x","value":"c0-2","call":4000,"status":"info"}""",
            """{"client":4,"op":"delete","key":"x","call":5000,"return":5100,"status":"fail","note":"NotMember"}"""));
    }

    [Fact]
    public void Operations_that_touch_at_one_nanosecond_are_concurrent()
    {
        // Closed intervals: the read is called at the nanosecond the put returns, so it overlaps the put
        // and may be linearized before it (seeing the key absent).
        Assert.Equal(Verdict.Linearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":1,"op":"get","key":"x","value":null,"call":10,"return":20}"""));

        // One nanosecond later the put precedes it.
        Assert.Equal(Verdict.NotLinearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":1,"op":"get","key":"x","value":null,"call":11,"return":20}"""));
    }

    [Fact]
    public void A_final_read_that_touches_a_write_does_not_prove_it_lost()
    {
        // The final read is called at the nanosecond put b returns: b may be linearized after it, so
        // seeing "a" neither breaks linearizability nor loses b.
        var touching = new[]
        {
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":1,"op":"put","key":"x","value":"b","call":20,"return":30}""",
            """{"client":2,"op":"get","key":"x","value":"a","call":30,"return":40}""",
        }.Select((l, i) => HistoryFile.Parse(l, i + 1)).ToList();
        var report = HistoryReport.Check(touching);
        Assert.True(report.Passed, report.Describe());

        // A delete that returns at the nanosecond a put is called may follow it.
        var deleted = new[]
        {
            """{"client":0,"op":"put","key":"x","value":"a","call":10,"return":20}""",
            """{"client":1,"op":"delete","key":"x","call":0,"return":10}""",
            """{"client":2,"op":"get","key":"x","value":null,"call":30,"return":40}""",
        }.Select((l, i) => HistoryFile.Parse(l, i + 1)).ToList();
        Assert.Empty(DurabilityChecker.Check(deleted));

        // Strictly after: the read must see b.
        var after = touching.Select(o => o.Kind == OpKind.Get ? o with { Call = 31 } : o).ToList();
        Assert.False(HistoryReport.Check(after).Passed);
    }

    [Fact]
    public void A_stale_read_after_a_completed_write_is_not_linearizable()
    {
        Assert.Equal(Verdict.NotLinearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":0,"op":"put","key":"x","value":"b","call":20,"return":30}""",
            """{"client":1,"op":"get","key":"x","value":"a","call":40,"return":50}"""));
    }

    [Fact]
    public void Concurrent_reads_may_see_either_value_but_not_go_back()
    {
        // Both reads overlap the write: old then new is fine.
        Assert.Equal(Verdict.Linearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":0,"op":"put","key":"x","value":"b","call":20,"return":100}""",
            """{"client":1,"op":"get","key":"x","value":"a","call":30,"return":40}""",
            """{"client":2,"op":"get","key":"x","value":"b","call":50,"return":60}"""));

        // New then old, one read after the other: not linearizable.
        Assert.Equal(Verdict.NotLinearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":0,"op":"put","key":"x","value":"b","call":20,"return":100}""",
            """{"client":1,"op":"get","key":"x","value":"b","call":30,"return":40}""",
            """{"client":2,"op":"get","key":"x","value":"a","call":50,"return":60}"""));
    }

    [Fact]
    public void Two_swapped_cas_from_the_same_value_are_not_linearizable()
    {
        Assert.Equal(Verdict.NotLinearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":1,"op":"cas","key":"x","expected":"a","value":"b","swapped":true,"call":20,"return":40}""",
            """{"client":2,"op":"cas","key":"x","expected":"a","value":"c","swapped":true,"call":21,"return":41}"""));
    }

    [Fact]
    public void A_failed_cas_needs_a_different_value_at_its_point()
    {
        Assert.Equal(Verdict.NotLinearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":1,"op":"cas","key":"x","expected":"a","value":"b","swapped":false,"call":20,"return":40}"""));

        // With a concurrent write of another value, the failure is explained.
        Assert.Equal(Verdict.Linearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":2,"op":"put","key":"x","value":"z","call":15,"return":50}""",
            """{"client":1,"op":"cas","key":"x","expected":"a","value":"b","swapped":false,"call":20,"return":40}"""));
    }

    [Fact]
    public void A_cas_expecting_absence_creates_only_once()
    {
        Assert.Equal(Verdict.Linearizable, Check(
            """{"client":0,"op":"cas","key":"x","expected":null,"value":"a","swapped":true,"call":0,"return":10}""",
            """{"client":1,"op":"cas","key":"x","expected":null,"value":"b","swapped":false,"call":5,"return":15}""",
            """{"client":1,"op":"get","key":"x","value":"a","call":20,"return":25}"""));
        Assert.Equal(Verdict.NotLinearizable, Check(
            """{"client":0,"op":"cas","key":"x","expected":null,"value":"a","swapped":true,"call":0,"return":10}""",
            """{"client":1,"op":"cas","key":"x","expected":null,"value":"b","swapped":true,"call":20,"return":25}"""));
    }

    [Fact]
    public void An_info_write_may_take_effect_late_or_never()
    {
        // Took effect after its client gave up: seen by a later read.
        Assert.Equal(Verdict.Linearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":1,"op":"put","key":"x","value":"b","call":20,"status":"info"}""",
            """{"client":2,"op":"get","key":"x","value":"a","call":100,"return":110}""",
            """{"client":2,"op":"get","key":"x","value":"b","call":200,"return":210}"""));

        // Never took effect.
        Assert.Equal(Verdict.Linearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":1,"op":"put","key":"x","value":"b","call":20,"status":"info"}""",
            """{"client":2,"op":"get","key":"x","value":"a","call":300,"return":310}"""));

        // But it cannot take effect twice, nor before it was called.
        Assert.Equal(Verdict.NotLinearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":1,"op":"put","key":"x","value":"b","call":20,"status":"info"}""",
            """{"client":2,"op":"get","key":"x","value":"b","call":100,"return":110}""",
            """{"client":2,"op":"get","key":"x","value":"a","call":200,"return":210}"""));
        Assert.Equal(Verdict.NotLinearizable, Check(
            """{"client":2,"op":"get","key":"x","value":"b","call":0,"return":10}""",
            """{"client":1,"op":"put","key":"x","value":"b","call":20,"status":"info"}"""));
    }

    [Fact]
    public void An_info_cas_swaps_only_when_it_matched()
    {
        Assert.Equal(Verdict.Linearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":1,"op":"cas","key":"x","expected":"a","value":"b","call":20,"status":"info"}""",
            """{"client":2,"op":"get","key":"x","value":"b","call":100,"return":110}"""));
        Assert.Equal(Verdict.NotLinearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"q","call":0,"return":10}""",
            """{"client":1,"op":"cas","key":"x","expected":"a","value":"b","call":20,"status":"info"}""",
            """{"client":2,"op":"get","key":"x","value":"b","call":100,"return":110}"""));
    }

    [Fact]
    public void Fail_ops_had_no_effect_and_deletes_clear()
    {
        Assert.Equal(Verdict.NotLinearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10,"status":"fail"}""",
            """{"client":2,"op":"get","key":"x","value":"a","call":100,"return":110}"""));
        Assert.Equal(Verdict.Linearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":0,"op":"delete","key":"x","call":20,"return":30}""",
            """{"client":2,"op":"get","key":"x","value":null,"call":100,"return":110}"""));
        Assert.Equal(Verdict.NotLinearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":0,"op":"delete","key":"x","call":20,"return":30}""",
            """{"client":2,"op":"get","key":"x","value":"a","call":100,"return":110}"""));
    }

    [Fact]
    public void Keys_are_independent()
    {
        Assert.Equal(Verdict.Linearizable, Check(
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":0,"op":"put","key":"y","value":"b","call":20,"return":30}""",
            """{"client":1,"op":"get","key":"x","value":"a","call":40,"return":50}""",
            """{"client":1,"op":"get","key":"y","value":"b","call":40,"return":50}"""));
    }

    [Fact]
    public void A_random_sequential_history_with_overlaps_is_linearizable_and_a_corrupted_one_is_shrunk()
    {
        const int seed = 4711;
        var random = new Random(seed);
        var ops = SimulatedHistory(random, clients: 6, operations: 600);
        var checker = new LinearizabilityChecker();
        var ok = checker.Check(ops);
        Assert.All(ok, r => Assert.True(r.Verdict == Verdict.Linearizable, $"seed {seed}: key {r.Key} {r.Verdict}"));

        // Corrupt one completed read in the middle to return a value that was overwritten long ago.
        var reads = ops.Select((o, i) => (o, i)).Where(p => p.o.Kind == OpKind.Get && p.o.Status == OpStatus.Ok && p.o.Key == "k0").ToList();
        var firstPut = ops.First(o => o.Kind == OpKind.Put && o.Key == "k0" && o.Status == OpStatus.Ok);
        var victim = reads.Last(p => p.o.Call > firstPut.Return + 50_000 && p.o.Value != firstPut.Value);
        ops[victim.i] = victim.o with { Value = firstPut.Value };
        var bad = checker.Check(ops).Single(r => r.Key == "k0");
        Assert.Equal(Verdict.NotLinearizable, bad.Verdict);
        Assert.NotEmpty(bad.Minimal);
        Assert.True(bad.Minimal.Count < 10, $"minimal history has {bad.Minimal.Count} ops:\n{string.Join("\n", bad.Minimal)}");
        Assert.Equal(Verdict.NotLinearizable, checker.CheckKey(bad.Minimal).Verdict);
    }

    [Fact]
    public void A_history_with_many_unknown_outcomes_is_decided_quickly()
    {
        const int seed = 99;
        var random = new Random(seed);
        var ops = SimulatedHistory(random, clients: 8, operations: 1500);

        // A third of the writes lose their reply (they did take effect), and 200 writes that never took
        // effect are added: the search must not explode over which of them happened.
        for (var i = 0; i < ops.Count; i++)
        {
            if (ops[i].Kind != OpKind.Get && random.Next(3) == 0)
            {
                ops[i] = ops[i] with { Return = null, Status = OpStatus.Info, Swapped = null };
            }
        }

        for (var i = 0; i < 200; i++)
        {
            var at = ops[random.Next(ops.Count)].Call;
            ops.Add(random.Next(3) switch
            {
                0 => new HistoryOp(100 + i, OpKind.Put, "k" + (i % 2).ToString(System.Globalization.CultureInfo.InvariantCulture), $"lost-{i}", null, null, at, null, OpStatus.Info),
                1 => new HistoryOp(100 + i, OpKind.Delete, "k" + (i % 2).ToString(System.Globalization.CultureInfo.InvariantCulture), null, null, null, at, null, OpStatus.Info),
                _ => new HistoryOp(100 + i, OpKind.Cas, "k" + (i % 2).ToString(System.Globalization.CultureInfo.InvariantCulture), $"lost-{i}", null, null, at, null, OpStatus.Info),
            });
        }

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var results = new LinearizabilityChecker(maxSteps: 2_000_000).Check(ops);
        Assert.All(results, r => Assert.True(r.Verdict == Verdict.Linearizable, $"seed {seed}: key {r.Key} {r.Verdict} after {r.Steps} steps"));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed}");
    }

    [Fact]
    public void Lost_acknowledged_writes_are_named()
    {
        var ops = new[]
        {
            """{"client":0,"op":"put","key":"x","value":"a","call":0,"return":10}""",
            """{"client":1,"op":"put","key":"x","value":"b","call":20,"return":30}""",
            """{"client":9,"op":"get","key":"x","value":"a","call":100,"return":110}""",
            """{"client":0,"op":"put","key":"y","value":"c","call":0,"return":10}""",
            """{"client":9,"op":"get","key":"y","value":null,"call":100,"return":110}""",
            """{"client":0,"op":"put","key":"z","value":"d","call":0,"return":10}""",
            """{"client":1,"op":"put","key":"z","value":"e","call":5,"status":"info"}""",
            """{"client":9,"op":"get","key":"z","value":"e","call":100,"return":110}""",
        }.Select((l, i) => HistoryFile.Parse(l, i + 1)).ToList();
        var lost = DurabilityChecker.Check(ops);
        Assert.Equal(2, lost.Count);
        Assert.Contains(lost, l => l.Key == "x" && l.Lost.Value == "b");
        Assert.Contains(lost, l => l.Key == "y" && l.Lost.Value == "c");
    }

    [Fact]
    public void History_lines_round_trip()
    {
        var op = new HistoryOp(3, OpKind.Cas, "k", "v2", null, true, 10, 20, OpStatus.Ok, Note: "n");
        Assert.Equal(op, HistoryFile.Parse(HistoryFile.ToJsonLine(op)));
        var info = new HistoryOp(1, OpKind.Put, "k", "v", null, null, 10, null, OpStatus.Info);
        Assert.Equal("""{"client":1,"op":"put","key":"k","value":"v","call":10}""", HistoryFile.ToJsonLine(info));
        Assert.Throws<FormatException>(() => HistoryFile.Parse("""{"client":1,"op":"put","key":"k","call":10,"extra":1}"""));
    }

    /// <summary>A history of an atomic register with random latencies: each op takes effect at a random point within [call, return].</summary>
    internal static List<HistoryOp> SimulatedHistory(Random random, int clients, int operations)
    {
        var state = new Dictionary<string, string?>();
        var clientFree = new long[clients];
        var events = new List<(long At, HistoryOp Op)>();
        var seq = 0;
        var points = new SortedSet<long>();
        var ops = new List<HistoryOp>();
        for (var i = 0; i < operations; i++)
        {
            var c = random.Next(clients);
            var key = "k" + random.Next(2).ToString(System.Globalization.CultureInfo.InvariantCulture);
            var call = clientFree[c] + random.Next(1, 1000);
            var at = call + random.Next(1, 5000);
            while (!points.Add(at))
            {
                at++;
            }

            var ret = at + random.Next(1, 5000);
            clientFree[c] = ret;
            events.Add((at, new HistoryOp(c, (OpKind)random.Next(4), key, null, null, null, call, ret, OpStatus.Ok)));
        }

        // Apply in effect order to fill in results.
        foreach (var (_, op) in events.OrderBy(e => e.At))
        {
            state.TryGetValue(op.Key, out var current);
            var value = $"c{op.Client}-{++seq}";
            switch (op.Kind)
            {
                case OpKind.Get: ops.Add(op with { Value = current }); break;
                case OpKind.Put: state[op.Key] = value; ops.Add(op with { Value = value }); break;
                case OpKind.Delete: state[op.Key] = null; ops.Add(op); break;
                default:
                    var expected = random.Next(2) == 0 ? current : (random.Next(2) == 0 ? null : "never");
                    var swapped = string.Equals(expected, current, StringComparison.Ordinal);
                    if (swapped)
                    {
                        state[op.Key] = value;
                    }

                    ops.Add(op with { Value = value, Expected = expected, Swapped = swapped });
                    break;
            }
        }

        return ops.OrderBy(o => o.Call).ToList();
    }
}
