using System.Diagnostics;
using Orleans.Paxos.Faults.History;

namespace Orleans.Paxos.Faults.Checking;

/// <summary>
/// Shrinks a non-linearizable key history by removing operations while it still fails (delta
/// debugging: halves, quarters, ..., single ops). Removing a write also removes the operations that
/// observed its value (reads of it, cas expecting it), so that the result does not fail merely because
/// a read lost its write.
/// </summary>
public static class HistoryShrinker
{
    /// <summary>A failing sub-history of <paramref name="ops"/>, as small as found within <paramref name="budget"/>.</summary>
    public static IReadOnlyList<HistoryOp> Shrink(IReadOnlyList<HistoryOp> ops, LinearizabilityChecker checker, TimeSpan budget)
    {
        ArgumentNullException.ThrowIfNull(ops);
        ArgumentNullException.ThrowIfNull(checker);
        var clock = Stopwatch.StartNew();
        var small = new LinearizabilityChecker(Math.Min(checker.MaxSteps, 2_000_000));
        var current = ops.Where(o => o.Status != OpStatus.Fail).OrderBy(o => o.Call).ToList();
        if (small.CheckKey(current).Verdict != Verdict.NotLinearizable)
        {
            return current;
        }

        // Cut the tail first: the shortest prefix (by call time) that still fails.
        int lo = 1, hi = current.Count;
        while (lo < hi && clock.Elapsed < budget)
        {
            var mid = (lo + hi) / 2;
            if (small.CheckKey(current.Take(mid).ToList()).Verdict == Verdict.NotLinearizable)
            {
                hi = mid;
            }
            else
            {
                lo = mid + 1;
            }
        }

        if (small.CheckKey(current.Take(hi).ToList()).Verdict == Verdict.NotLinearizable)
        {
            current = current.Take(hi).ToList();
        }

        for (var chunk = Math.Max(1, current.Count / 2); chunk >= 1 && clock.Elapsed < budget; chunk /= 2)
        {
            var progress = true;
            while (progress && clock.Elapsed < budget)
            {
                progress = false;
                for (var start = current.Count - chunk; start >= 0 && clock.Elapsed < budget; start -= chunk)
                {
                    var candidate = Without(current, start, chunk);
                    if (candidate.Count < current.Count && small.CheckKey(candidate).Verdict == Verdict.NotLinearizable)
                    {
                        current = candidate;
                        progress = true;
                        start = Math.Min(start, current.Count);
                    }
                }
            }

            if (chunk == 1)
            {
                break;
            }
        }

        return current;
    }

    private static List<HistoryOp> Without(List<HistoryOp> ops, int start, int count)
    {
        var removed = new HashSet<HistoryOp>(ReferenceEqualityComparer.Instance);
        var lostValues = new HashSet<string>(StringComparer.Ordinal);
        for (var i = start; i < start + count && i < ops.Count; i++)
        {
            removed.Add(ops[i]);
            if (ops[i].Kind is OpKind.Put or OpKind.Cas or OpKind.Append && ops[i].Value is { } v)
            {
                lostValues.Add(v);
            }
        }

        // Cascade: whatever observed a removed value goes too (and what that wrote, in turn).
        var changed = lostValues.Count > 0;
        while (changed)
        {
            changed = false;
            foreach (var op in ops)
            {
                if (removed.Contains(op))
                {
                    continue;
                }

                var observes = (op.Kind == OpKind.Get && op.Value is { } g && lostValues.Contains(g))
                    || (op.Kind == OpKind.Cas && op.Expected is { } e && lostValues.Contains(e));
                if (observes)
                {
                    removed.Add(op);
                    if (op.Kind == OpKind.Cas && op.Value is { } w && lostValues.Add(w))
                    {
                        changed = true;
                    }
                }
            }
        }

        return ops.Where(o => !removed.Contains(o)).ToList();
    }
}
