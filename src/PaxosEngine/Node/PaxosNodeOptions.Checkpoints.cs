namespace Orleans.Paxos.Engine.Node;

/// <summary>Checkpoint, log-cleaning and replayer options.</summary>
public sealed partial class PaxosNodeOptions
{
    /// <summary>
    /// Instances of log the cleaner keeps before each group's checkpoint (PhxPaxos <c>SetHoldPaxosLogCount</c>),
    /// so that peers a little behind still catch up from the log instead of needing a checkpoint.
    /// Default 1,000,000; values below 300 are raised to 300, as PhxPaxos does.
    /// </summary>
    public long HoldLogCount { get; set; } = 1_000_000;

    /// <summary>
    /// Run the checkpoint replayer (PhxPaxos <c>bUseCheckpointReplayer</c>): it feeds chosen values after the
    /// state machines' checkpoint to <see cref="StateMachines.IStateMachine.ExecuteForCheckpoint"/> so that they
    /// can build a checkpoint apart from their live state. Starts paused; call
    /// <see cref="PaxosNode.ContinueCheckpointReplayer"/>. Default false.
    /// </summary>
    public bool UseCheckpointReplayer { get; set; }
}
