namespace Orleans.Paxos.Engine.Groups;

/// <summary>Whether a group's acceptor takes part in votes (see <c>Consensus.VotingGate</c>).</summary>
public enum VotingState
{
    /// <summary>The acceptor promises and accepts as usual.</summary>
    Voting = 0,

    /// <summary>
    /// The group started with no log (a brand-new group, or a node whose disk was replaced): it asks every
    /// other member for its state and votes once that proves no promise or accept of it can have been lost.
    /// </summary>
    Surveying = 1,

    /// <summary>
    /// The group's durable acceptor state is known to be incomplete (lost log, rebuilt index): it learns from
    /// its peers and votes again only after an instance it proposed was chosen by a majority of the others.
    /// </summary>
    Rebuilding = 2,
}
