using System.Diagnostics;
using Orleans.Paxos.Faults.History;

namespace Orleans.Paxos.Faults.Checking;

/// <summary>The verdict for one key.</summary>
public enum Verdict
{
    /// <summary>A linearization exists.</summary>
    Linearizable,

    /// <summary>No linearization exists.</summary>
    NotLinearizable,

    /// <summary>The search hit its step budget before deciding.</summary>
    Unknown,
}

/// <summary>The result of checking one key's sub-history.</summary>
/// <param name="Key">The key.</param>
/// <param name="Verdict">The verdict.</param>
/// <param name="Operations">Operations that took part (fail ops and unknown reads are left out).</param>
/// <param name="Steps">Search steps taken.</param>
/// <param name="LongestPrefix">When not linearizable: the longest sequence of operations the search could linearize.</param>
/// <param name="Minimal">When not linearizable: a small failing sub-history found by shrinking.</param>
public sealed record KeyCheck(string Key, Verdict Verdict, int Operations, long Steps, IReadOnlyList<HistoryOp> LongestPrefix, IReadOnlyList<HistoryOp> Minimal);

/// <summary>
/// Linearizability of a key-value history, one register per key (P-compositionality): a Wing–Gong
/// depth-first search with Lowe's memoization of (set of linearized operations, register state), as in
/// Porcupine. Operations of unknown outcome (<c>info</c>) get an infinite return time and may be
/// linearized at any point after their call or never; <c>fail</c> operations are left out.
/// Operations are closed intervals <c>[call, return]</c>: A precedes B only when A's <c>return</c> is
/// less than B's <c>call</c>; an operation called at the nanosecond another returns is concurrent with it.
/// </summary>
/// <remarks>Not thread-safe; create one per thread.</remarks>
public sealed class LinearizabilityChecker(long maxSteps = 20_000_000)
{
    /// <summary>The search budget per key, in steps (an op tried at a position).</summary>
    public long MaxSteps { get; } = maxSteps;

    /// <summary>Checks every key of <paramref name="history"/>; failing keys are shrunk to a minimal sub-history.</summary>
    public IReadOnlyList<KeyCheck> Check(IEnumerable<HistoryOp> history, TimeSpan? shrinkBudget = null)
    {
        ArgumentNullException.ThrowIfNull(history);
        var results = new List<KeyCheck>();
        foreach (var byKey in history.GroupBy(o => o.Key, StringComparer.Ordinal).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var ops = byKey.ToList();
            var r = CheckKey(ops);
            if (r.Verdict == Verdict.NotLinearizable)
            {
                r = r with { Minimal = HistoryShrinker.Shrink(ops, this, shrinkBudget ?? TimeSpan.FromSeconds(20)) };
            }

            results.Add(r);
        }

        return results;
    }

    /// <summary>Checks the operations of one key (all must have the same key); no shrinking.</summary>
    public KeyCheck CheckKey(IReadOnlyList<HistoryOp> keyOps)
    {
        ArgumentNullException.ThrowIfNull(keyOps);
        var key = keyOps.Count > 0 ? keyOps[0].Key : string.Empty;

        // Fail ops had no effect; reads of unknown outcome returned nothing to check.
        var original = keyOps
            .Where(o => o.Status != OpStatus.Fail && !(o.Kind == OpKind.Get && o.Status != OpStatus.Ok))
            .OrderBy(o => o.Call)
            .ToArray();
        var ops = Canonical(original);
        var n = ops.Length;
        var call = new long[n];
        var ret = new long[n];
        var required = new bool[n];
        var kind = new int[n];
        var classes = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < n; i++)
        {
            call[i] = ops[i].Call;
            required[i] = ops[i].Status == OpStatus.Ok;
            ret[i] = required[i] ? ops[i].Return!.Value : long.MaxValue;
            kind[i] = InterchangeableClass(ops[i], classes);
        }

        var requiredLeft = required.Count(r => r);
        var linearized = new Bitset(n);
        var visited = new HashSet<MemoKey>();
        var stack = new List<(int Op, string? Before)>();
        var longest = Array.Empty<int>();
        string? state = null;
        long steps = 0;
        var next = 0; // the next candidate index to try at the current depth

        while (true)
        {
            if (requiredLeft == 0)
            {
                return new KeyCheck(key, Verdict.Linearizable, n, steps, [], []);
            }

            // Every op called before or at the earliest return of a pending required op may go next:
            // intervals are closed, so an op called at the very nanosecond another returns overlaps it.
            var minReturn = long.MaxValue;
            var firstOfClass = new int[classes.Count + 1];
            Array.Fill(firstOfClass, -1);
            for (var i = 0; i < n; i++)
            {
                if (linearized[i])
                {
                    continue;
                }

                if (required[i] && ret[i] < minReturn)
                {
                    minReturn = ret[i];
                }

                if (kind[i] != Other && firstOfClass[kind[i]] < 0)
                {
                    firstOfClass[kind[i]] = i;
                }
            }

            var chosen = -1;
            string? after = null;
            for (var i = next; i < n && call[i] <= minReturn; i++)
            {
                // Unknown-outcome writes with the same effect are interchangeable: try only the earliest called.
                if (linearized[i] || (kind[i] != Other && firstOfClass[kind[i]] != i))
                {
                    continue;
                }

                if (++steps > MaxSteps)
                {
                    return new KeyCheck(key, Verdict.Unknown, n, steps, [], []);
                }

                // An unknown-outcome op that would not change the state may as well never have happened.
                if (!RegisterModel.Step(ops[i], state, out var s) || (!required[i] && string.Equals(s, state, StringComparison.Ordinal)))
                {
                    continue;
                }

                linearized[i] = true;
                if (visited.Add(new MemoKey(linearized.Clone(), s)))
                {
                    chosen = i;
                    after = s;
                    break;
                }

                linearized[i] = false;
            }

            if (chosen >= 0)
            {
                stack.Add((chosen, state));
                state = after;
                if (required[chosen])
                {
                    requiredLeft--;
                }

                if (stack.Count > longest.Length)
                {
                    longest = [.. stack.Select(f => f.Op)];
                }

                next = 0;
                continue;
            }

            if (stack.Count == 0)
            {
                return new KeyCheck(key, Verdict.NotLinearizable, n, steps, [.. longest.Select(i => original[i])], []);
            }

            var (op, before) = stack[^1];
            stack.RemoveAt(stack.Count - 1);
            linearized[op] = false;
            if (required[op])
            {
                requiredLeft++;
            }

            state = before;
            next = op + 1;
        }
    }

    private const int Other = 0;

    /// <summary>Stands for every written value that no read and no cas ever observed.</summary>
    private const string Unobserved = "\u0000unobserved";

    /// <summary>
    /// Values nobody observed (no read returned them, no cas expected them) are indistinguishable to the
    /// model, so they are all replaced by one marker; this merges search states. Not done when the key has
    /// appends, whose values compose.
    /// </summary>
    private static HistoryOp[] Canonical(HistoryOp[] ops)
    {
        if (ops.Any(o => o.Kind == OpKind.Append))
        {
            return ops;
        }

        var observed = new HashSet<string>(StringComparer.Ordinal);
        foreach (var o in ops)
        {
            if (o.Kind == OpKind.Get && o.Value is { } v)
            {
                observed.Add(v);
            }
            else if (o.Kind == OpKind.Cas && o.Expected is { } e)
            {
                observed.Add(e);
            }
        }

        return ops.Select(o => o.Kind is OpKind.Put or OpKind.Cas && o.Value is { } v && !observed.Contains(v) ? o with { Value = Unobserved } : o).ToArray();
    }

    /// <summary>
    /// Unknown-outcome writes with the same effect on every state (same kind, expected value and written
    /// value — unobserved values are one marker) share a class; known ops are <see cref="Other"/>.
    /// </summary>
    private static int InterchangeableClass(HistoryOp op, Dictionary<string, int> classes)
    {
        if (op.Status == OpStatus.Ok || op.Kind == OpKind.Get)
        {
            return Other;
        }

        var name = $"{op.Kind}\u0001{op.Expected ?? "\u0002"}\u0001{op.Value ?? "\u0002"}";
        if (!classes.TryGetValue(name, out var id))
        {
            id = classes.Count + 1;
            classes[name] = id;
        }

        return id;
    }

    private readonly struct MemoKey(Bitset set, string? state) : IEquatable<MemoKey>
    {
        public Bitset Set { get; } = set;

        public string? State { get; } = state;

        public bool Equals(MemoKey other) => string.Equals(State, other.State, StringComparison.Ordinal) && Set.Equals(other.Set);

        public override bool Equals(object? obj) => obj is MemoKey k && Equals(k);

        public override int GetHashCode() => HashCode.Combine(Set.GetHashCode(), State is null ? 0 : StringComparer.Ordinal.GetHashCode(State));
    }

    [DebuggerDisplay("{Count} bits")]
    private sealed class Bitset : IEquatable<Bitset>
    {
        private readonly ulong[] _words;

        public Bitset(int bits) => _words = new ulong[(bits + 63) / 64];

        private Bitset(ulong[] words) => _words = words;

        public bool this[int i]
        {
            get => (_words[i >> 6] & (1UL << (i & 63))) != 0;
            set
            {
                if (value)
                {
                    _words[i >> 6] |= 1UL << (i & 63);
                }
                else
                {
                    _words[i >> 6] &= ~(1UL << (i & 63));
                }
            }
        }

        public Bitset Clone() => new((ulong[])_words.Clone());

        public bool Equals(Bitset? other) => other is not null && _words.AsSpan().SequenceEqual(other._words);

        public override bool Equals(object? obj) => Equals(obj as Bitset);

        public override int GetHashCode()
        {
            var h = new HashCode();
            foreach (var w in _words)
            {
                h.Add(w);
            }

            return h.ToHashCode();
        }
    }
}
