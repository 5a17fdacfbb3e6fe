using System.Diagnostics;
using System.Text;
using Orleans.Paxos.Faults.History;

namespace Orleans.Paxos.Faults.Checking;

/// <summary>All checks of one history and a printable report.</summary>
/// <param name="Keys">Linearizability per key.</param>
/// <param name="LostWrites">Acknowledged writes that the final reads do not reflect.</param>
/// <param name="Operations">Operations in the history.</param>
/// <param name="CheckTime">Time spent checking.</param>
public sealed record HistoryReport(IReadOnlyList<KeyCheck> Keys, IReadOnlyList<LostWrite> LostWrites, int Operations, TimeSpan CheckTime)
{
    /// <summary>Whether every key is linearizable and no acknowledged write was lost (an undecided key fails too).</summary>
    public bool Passed => LostWrites.Count == 0 && Keys.All(k => k.Verdict == Verdict.Linearizable);

    /// <summary>Runs every check on <paramref name="history"/>.</summary>
    public static HistoryReport Check(IReadOnlyList<HistoryOp> history, long maxSteps = 20_000_000)
    {
        ArgumentNullException.ThrowIfNull(history);
        var clock = Stopwatch.StartNew();
        var keys = new LinearizabilityChecker(maxSteps).Check(history);
        var lost = DurabilityChecker.Check(history);
        return new HistoryReport(keys, lost, history.Count, clock.Elapsed);
    }

    /// <summary>A human-readable report; a failure lists the minimal offending sub-history.</summary>
    public string Describe(string? seed = null)
    {
        var sb = new StringBuilder();
        var counts = $"{Operations} ops, {Keys.Count} keys, checked in {CheckTime.TotalMilliseconds:0} ms";
        sb.AppendLine(Passed ? $"history OK: linearizable, no acknowledged write lost ({counts})" : $"history FAILED ({counts}){(seed is null ? string.Empty : ", seed " + seed)}");
        foreach (var k in Keys.Where(k => k.Verdict != Verdict.Linearizable))
        {
            sb.AppendLine($"  key {k.Key}: {k.Verdict} after {k.Steps} steps over {k.Operations} ops");
            if (k.Minimal.Count > 0)
            {
                sb.AppendLine($"  minimal offending sub-history ({k.Minimal.Count} ops):");
                foreach (var op in k.Minimal.OrderBy(o => o.Call))
                {
                    sb.AppendLine("    " + HistoryFile.ToJsonLine(op));
                }
            }
        }

        foreach (var l in LostWrites)
        {
            sb.AppendLine($"  key {l.Key}: acknowledged write lost: {l.Lost}; final read {l.FinalRead}: {l.Reason}");
        }

        return sb.ToString();
    }
}
