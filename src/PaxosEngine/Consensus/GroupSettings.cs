using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Consensus;

/// <summary>Settings one group and its roles run with, resolved from the node's options.</summary>
internal sealed record GroupSettings
{
    public required int GroupIndex { get; init; }

    public required int GroupCount { get; init; }

    public required ulong MyNodeId { get; init; }

    public required IReadOnlyList<NodeId> Members { get; init; }

    public bool Sync { get; set; } = true;

    public int SyncInterval { get; init; }

    public int MaxValueSize { get; init; } = 10 * 1024 * 1024;

    public ProposerTimeouts Timeouts { get; init; } = ProposerTimeouts.Default;

    public int MaxWaitingProposals { get; init; } = 10_000;

    public bool AutoBatch { get; init; } = true;

    public int MaxBatchCount { get; init; } = 1000;

    public int MaxBatchBytes { get; init; } = 512_000;

    public bool BatchFlushWhenIdle { get; init; }

    /// <summary>A group that starts with no log votes at once (PhxPaxos's behaviour); see <see cref="VotingGate"/>.</summary>
    public bool VoteWithEmptyLog { get; init; }

    public int BatchCount { get; init; } = 5;

    public int BatchDelayMs { get; init; } = 20;

    public int MaxInboundQueue { get; init; } = 10_240;

    public int AskForLearnBaseMs { get; init; } = 2500;

    public int AskForLearnJitterMs { get; init; } = 500;

    public int LearnerSendQps { get; init; } = 100_000;

    public bool UseMembership { get; init; }

    /// <summary>The member this node follows, or 0 when it is not a follower.</summary>
    public ulong FollowToNodeId { get; init; }

    public bool UseMaster { get; init; }

    public int MasterLeaseMs { get; set; } = 10_000;

    public Checkpoints.CheckpointControl Checkpoints { get; init; } = new();
}
