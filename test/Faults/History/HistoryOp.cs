namespace Orleans.Paxos.Faults.History;

/// <summary>What a history operation did (history-format.md, field <c>op</c>).</summary>
public enum OpKind
{
    /// <summary>Read.</summary>
    Get,

    /// <summary>Unconditional write.</summary>
    Put,

    /// <summary>Unconditional delete.</summary>
    Delete,

    /// <summary>Compare-and-set on the value.</summary>
    Cas,

    /// <summary>Append to the value (recorded, not produced by this harness).</summary>
    Append,
}

/// <summary>Whether an operation's outcome is known (history-format.md, field <c>status</c>).</summary>
public enum OpStatus
{
    /// <summary>Result known.</summary>
    Ok,

    /// <summary>Outcome unknown: may take effect at any time after the call, or never.</summary>
    Info,

    /// <summary>Definitely had no effect.</summary>
    Fail,
}

/// <summary>One client operation of a history; times are nanoseconds of one monotonic clock.</summary>
/// <param name="Client">Logical client id.</param>
/// <param name="Kind">The operation.</param>
/// <param name="Key">The key (an independent register).</param>
/// <param name="Value">Put/cas: the value written; get: the value returned (null: absent).</param>
/// <param name="Expected">Cas: the expected current value (null: only if absent).</param>
/// <param name="Swapped">Cas, when completed: whether the swap happened.</param>
/// <param name="Call">Taken just before the request was sent.</param>
/// <param name="Return">Taken just after the reply arrived; null when it never completed.</param>
/// <param name="Status">Whether the outcome is known.</param>
/// <param name="Id">Optional id carried into diagnostics.</param>
/// <param name="Note">Optional note carried into diagnostics.</param>
public sealed record HistoryOp(
    int Client,
    OpKind Kind,
    string Key,
    string? Value,
    string? Expected,
    bool? Swapped,
    long Call,
    long? Return,
    OpStatus Status,
    string? Id = null,
    string? Note = null)
{
    /// <summary>Whether the operation can change the register (everything but get).</summary>
    public bool IsWrite => Kind != OpKind.Get;

    /// <inheritdoc />
    public override string ToString()
    {
        var what = Kind switch
        {
            OpKind.Get => $"get {Key} -> {Show(Value)}",
            OpKind.Put => $"put {Key} = {Show(Value)}",
            OpKind.Delete => $"delete {Key}",
            OpKind.Cas => $"cas {Key} {Show(Expected)} -> {Show(Value)}" + (Swapped is { } s ? (s ? " swapped" : " not swapped") : string.Empty),
            _ => $"append {Key} += {Show(Value)}",
        };
        var ret = Return is { } r ? r.ToString(System.Globalization.CultureInfo.InvariantCulture) : "-";
        return $"c{Client} {what} [{Call}, {ret}] {Status.ToString().ToLowerInvariant()}" + (Note is null ? string.Empty : " (" + Note + ")");
    }

    private static string Show(string? v) => v is null ? "null" : "\"" + v + "\"";
}
