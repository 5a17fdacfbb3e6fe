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
            if (small.CheckKey(Without(current, mid, current.Count - mid)).Verdict == Verdict.NotLinearizable)
            {
                hi = mid;
            }
            else
            {
                lo = mid + 1;
            }
        }

        var prefix = Without(current, hi, current.Count - hi);
        if (small.CheckKey(prefix).Verdict == Verdict.NotLinearizable)
        {
            current = prefix;
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
        var lostDelete = false;
        var lostWrite = false;
        for (var i = start; i < start + count && i < ops.Count; i++)
        {
            Remove(ops[i]);
        }

        // Cascade, so that a sub-history of a linearizable history stays linearizable: whatever observed a
        // removed value goes too (reads of it, cas expecting it, and what such a cas wrote, in turn); reads
        // of absence and cas expecting absence go with a removed delete; and cas that did not swap go with
        // any removed write, since the state at their point may now equal what they expected.
        var changed = true;
        while (changed)
        {
            changed = false;
            foreach (var op in ops)
            {
                if (removed.Contains(op))
                {
                    continue;
                }

                var observed = op.Kind switch
                {
                    OpKind.Get => op.Status == OpStatus.Ok && (op.Value is { } g ? lostValues.Contains(g) : lostDelete),
                    OpKind.Cas => (op.Expected is { } e ? lostValues.Contains(e) : lostDelete) || (op.Swapped != true && lostWrite),
                    _ => false,
                };
                if (observed)
                {
                    changed |= Remove(op);
                }
            }
        }

        return ops.Where(o => !removed.Contains(o)).ToList();

        // Returns whether removing the op removed a write (so more may have to go).
        bool Remove(HistoryOp op)
        {
            removed.Add(op);
            if (op.Kind == OpKind.Get || (op.Kind == OpKind.Cas && op.Swapped == false))
            {
                return false;
            }

            lostWrite = true;
            if (op.Kind == OpKind.Delete)
            {
                lostDelete = true;
            }
            else if (op.Value is { } v)
            {
                lostValues.Add(v);
            }

            return true;
        }
    }
}
