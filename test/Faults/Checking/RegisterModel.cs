using Orleans.Paxos.Faults.History;

namespace Orleans.Paxos.Faults.Checking;

/// <summary>
/// The sequential specification of one key: a register that holds a string or nothing (null).
/// get returns it; put and append set it; delete clears it; cas sets it only when it equals the
/// expected value (null: absent). An operation of unknown outcome that takes effect behaves as the
/// operation would have, with whatever result the state gives.
/// </summary>
public static class RegisterModel
{
    /// <summary>
    /// Applies <paramref name="op"/> to <paramref name="state"/>: whether the op's recorded result is
    /// possible in that state, and the state after it.
    /// </summary>
    public static bool Step(HistoryOp op, string? state, out string? next)
    {
        ArgumentNullException.ThrowIfNull(op);
        var known = op.Status == OpStatus.Ok;
        next = state;
        switch (op.Kind)
        {
            case OpKind.Get:
                return !known || string.Equals(state, op.Value, StringComparison.Ordinal);
            case OpKind.Put:
                next = op.Value;
                return true;
            case OpKind.Delete:
                next = null;
                return true;
            case OpKind.Append:
                next = (state ?? string.Empty) + op.Value;
                return true;
            case OpKind.Cas:
                var matches = string.Equals(state, op.Expected, StringComparison.Ordinal);
                if (known && op.Swapped != matches)
                {
                    return false;
                }

                if (matches)
                {
                    next = op.Value;
                }

                return true;
            default:
                return false;
        }
    }
}
