namespace Orleans.Paxos.Engine.Consensus;

/// <summary>The timers of a group; the loop hands each to the role that armed it.</summary>
internal enum TimerKind
{
    /// <summary>The proposer's prepare round timed out (or a retry is due).</summary>
    PrepareTimeout = 1,

    /// <summary>The proposer's accept round timed out (or a retry is due).</summary>
    AcceptTimeout = 2,

    /// <summary>Time for the learner to ask peers how far they are.</summary>
    AskForLearn = 3,

    /// <summary>The catch-up sender checks progress and acknowledgements.</summary>
    LearnerSender = 4,

    /// <summary>Batched proposals waited long enough for company.</summary>
    BatchDelay = 5,

    /// <summary>Time to try to become (or stay) master.</summary>
    Master = 6,

    /// <summary>Time to complete overdue proposals with Timeout.</summary>
    ProposalTimeouts = 7,

    /// <summary>A group that does not vote yet surveys its members (see <c>VotingGate</c>).</summary>
    VotingGate = 8,

    /// <summary>The next batch waited long enough for the callers of the last one (see <c>Committer</c>).</summary>
    BatchGather = 9,

    /// <summary>A checkpoint transfer being received went quiet for too long.</summary>
    CheckpointReceive = 20,

    /// <summary>The checkpoint replayer's next step is due.</summary>
    CheckpointReplayer = 21,
}
