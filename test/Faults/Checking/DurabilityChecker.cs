using Orleans.Paxos.Faults.History;

namespace Orleans.Paxos.Faults.Checking;

/// <summary>An acknowledged write that the final read of its key does not reflect.</summary>
/// <param name="Key">The key.</param>
/// <param name="FinalRead">The final read.</param>
/// <param name="Lost">The acknowledged write that was lost.</param>
/// <param name="Reason">Why the final value cannot follow it.</param>
public sealed record LostWrite(string Key, HistoryOp FinalRead, HistoryOp Lost, string Reason);

/// <summary>
/// No acknowledged write lost: the final read of a key (a completed get called after every other
/// operation on the key returned or was abandoned) must show a value that could be the last write. An
/// acknowledged write w is lost when the final value was written by an operation that returned before
/// w was called (w must be linearized after it, and values are unique), or when the final value is
/// absent and no delete could have been linearized after w. Intervals are closed: an operation
/// precedes another only when its <c>return</c> is less than the other's <c>call</c>.
/// </summary>
public static class DurabilityChecker
{
    /// <summary>Lost writes, judged from each key's last completed read.</summary>
    public static IReadOnlyList<LostWrite> Check(IEnumerable<HistoryOp> history)
    {
        ArgumentNullException.ThrowIfNull(history);
        var lost = new List<LostWrite>();
        foreach (var byKey in history.GroupBy(o => o.Key, StringComparer.Ordinal))
        {
            var ops = byKey.Where(o => o.Status != OpStatus.Fail).ToList();
            var final = ops.Where(o => o.Kind == OpKind.Get && o.Status == OpStatus.Ok).MaxBy(o => o.Call);
            if (final is null || ops.Any(o => o != final && o.Status == OpStatus.Ok && o.Return >= final.Call))
            {
                continue; // no read after everything else on this key
            }

            var acknowledged = ops.Where(o => o.Status == OpStatus.Ok && IsEffectiveWrite(o)).ToList();
            if (final.Value is { } value)
            {
                var writer = ops.FirstOrDefault(o => o.Kind is OpKind.Put or OpKind.Cas && o.Value == value);
                if (writer?.Return is not { } writerReturn)
                {
                    continue; // unknown writer or one that never returned: anything after it may precede it
                }

                foreach (var w in acknowledged.Where(w => w != writer && w.Call > writerReturn))
                {
                    lost.Add(new LostWrite(byKey.Key, final, w, $"the final value \"{value}\" was written by an operation that returned before this acknowledged write was called"));
                }
            }
            else
            {
                var deletes = ops.Where(o => o.Kind == OpKind.Delete).ToList();
                foreach (var w in acknowledged.Where(w => w.Kind != OpKind.Delete))
                {
                    if (!deletes.Any(d => d.Return is null || d.Return >= w.Call))
                    {
                        lost.Add(new LostWrite(byKey.Key, final, w, "the key is absent at the end but no delete could follow this acknowledged write"));
                    }
                }
            }
        }

        return lost;
    }

    private static bool IsEffectiveWrite(HistoryOp o) => o.Kind switch
    {
        OpKind.Put or OpKind.Delete or OpKind.Append => true,
        OpKind.Cas => o.Swapped == true,
        _ => false,
    };
}
