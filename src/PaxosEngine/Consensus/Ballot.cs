namespace Orleans.Paxos.Engine.Consensus;

/// <summary>A Paxos ballot: proposal id, then node id, compared in that order (PhxPaxos <c>BallotNumber</c>).</summary>
/// <param name="ProposalId">The proposal number.</param>
/// <param name="NodeId">The proposing node; breaks ties between equal proposal numbers.</param>
public readonly record struct Ballot(ulong ProposalId, ulong NodeId) : IComparable<Ballot>
{
    /// <summary>The null ballot (0, 0), lower than any real ballot.</summary>
    public static readonly Ballot Null;

    /// <summary>Whether this is the null ballot (proposal id 0).</summary>
    public bool IsNull => ProposalId == 0;

    /// <inheritdoc />
    public int CompareTo(Ballot other)
    {
        var c = ProposalId.CompareTo(other.ProposalId);
        return c != 0 ? c : NodeId.CompareTo(other.NodeId);
    }

    /// <summary>Compares ballots.</summary>
    public static bool operator >(Ballot left, Ballot right) => left.CompareTo(right) > 0;

    /// <summary>Compares ballots.</summary>
    public static bool operator <(Ballot left, Ballot right) => left.CompareTo(right) < 0;

    /// <summary>Compares ballots.</summary>
    public static bool operator >=(Ballot left, Ballot right) => left.CompareTo(right) >= 0;

    /// <summary>Compares ballots.</summary>
    public static bool operator <=(Ballot left, Ballot right) => left.CompareTo(right) <= 0;

    /// <inheritdoc />
    public override string ToString() => $"({ProposalId},{NodeId})";
}
