namespace Orleans.Paxos.Engine.StateMachines;

/// <summary>
/// A replicated state machine mounted on a group (PhxPaxos <c>StateMachine</c>). Every node executes
/// the group's chosen values in instance order, each exactly once, by the group's loop.
/// </summary>
/// <remarks>
/// Only <see cref="SmId"/> and <see cref="Execute"/> are required; the checkpoint hooks have
/// PhxPaxos's defaults (no checkpoint). Implementations are called by one thread at a time, the owner of
/// the group's loop: its loop thread, or the node's UDP receive thread while it handles a message for a
/// sleeping loop. Calls never overlap and each sees what the previous one wrote; a slow call delays the other
/// groups of that loop (and, on the receive thread, the node's other datagrams), so keep them quick. The
/// exception is <see cref="GetCheckpointInstanceId"/>, which may be called from other threads.
/// </remarks>
public interface IStateMachine
{
    /// <summary>The state machine id, unique within a group; values proposed with it are executed here. 0 and 100000000–100000002 are reserved.</summary>
    int SmId { get; }

    /// <summary>
    /// Applies a chosen value. Return true when done (including deterministic logical failures, reported
    /// through <see cref="StateMachineContext.Output"/>); false for a system failure, which leaves the
    /// instance unexecuted so that it is retried, and fails the proposer's call with
    /// <see cref="Consensus.ProposeStatus.ExecuteFailed"/>.
    /// </summary>
    /// <param name="groupIndex">The group.</param>
    /// <param name="instanceId">The instance the value was chosen in.</param>
    /// <param name="value">The value as proposed (without the state machine id prefix).</param>
    /// <param name="context">The proposer's context on the node that proposed this value; null elsewhere and during replay.</param>
    bool Execute(int groupIndex, ulong instanceId, ReadOnlySpan<byte> value, StateMachineContext? context);

    /// <summary>
    /// The largest instance id whose effect is durably contained in this state machine's own
    /// checkpoint, or <see cref="StateMachineCheckpoint.None"/>. Start-up replays the log after it.
    /// </summary>
    ulong GetCheckpointInstanceId(int groupIndex) => StateMachineCheckpoint.None;

    /// <summary>Builds a separate checkpoint from the log (called by the checkpoint replayer). Default: true.</summary>
    bool ExecuteForCheckpoint(int groupIndex, ulong instanceId, ReadOnlySpan<byte> value) => true;

    /// <summary>Freezes the files of the current checkpoint until <see cref="UnlockCheckpointState"/>.</summary>
    /// <returns>False when there is no checkpoint to send.</returns>
    bool LockCheckpointState() => false;

    /// <summary>The folder and the files (relative to it) of the locked checkpoint; null folder when none.</summary>
    CheckpointState? GetCheckpointState(int groupIndex) => null;

    /// <summary>Releases the checkpoint locked by <see cref="LockCheckpointState"/>.</summary>
    void UnlockCheckpointState()
    {
    }

    /// <summary>
    /// Installs a checkpoint received from another node; afterwards <see cref="GetCheckpointInstanceId"/>
    /// must report <paramref name="checkpointInstanceId"/>. Unlike PhxPaxos, the process keeps running:
    /// the state machine must load the state in place.
    /// </summary>
    /// <returns>True when installed.</returns>
    bool LoadCheckpointState(int groupIndex, string directory, IReadOnlyList<string> files, ulong checkpointInstanceId) => false;

    /// <summary>Whether <see cref="BeforePropose"/> must be called.</summary>
    bool NeedCallBeforePropose => false;

    /// <summary>May rewrite a value right before this node proposes it (on the loop thread, with the state machine up to date).</summary>
    byte[] BeforePropose(int groupIndex, byte[] value) => value;
}

/// <summary>Checkpoint constants.</summary>
public static class StateMachineCheckpoint
{
    /// <summary>No checkpoint (PhxPaxos <c>NoCheckpoint</c> = (uint64)-1).</summary>
    public const ulong None = ulong.MaxValue;
}

/// <summary>The files of a locked checkpoint.</summary>
/// <param name="Directory">Root folder of the checkpoint.</param>
/// <param name="Files">File paths relative to <paramref name="Directory"/>.</param>
public sealed record CheckpointState(string Directory, IReadOnlyList<string> Files);

/// <summary>
/// The proposer's context for one value (PhxPaxos <c>SMCtx</c>): handed to
/// <see cref="IStateMachine.Execute"/> only on the proposing node, which may set <see cref="Output"/>
/// for the caller of ProposeAsync.
/// </summary>
public sealed class StateMachineContext
{
    /// <summary>Creates a context for a state machine.</summary>
    public StateMachineContext(int smId, object? input = null)
    {
        SmId = smId;
        Input = input;
    }

    /// <summary>The state machine the value is for.</summary>
    public int SmId { get; }

    /// <summary>Caller-supplied data for the state machine (never replicated).</summary>
    public object? Input { get; }

    /// <summary>The state machine's result for the proposer, set during Execute.</summary>
    public object? Output { get; set; }
}
