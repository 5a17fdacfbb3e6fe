using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Checkpoints;
using Orleans.Paxos.Engine.Groups;

namespace Orleans.Paxos.Engine.Node;

/// <summary>Checkpoint controls: the log cleaner, the replayer and checkpoint figures.</summary>
public sealed partial class PaxosNode
{
    private readonly CheckpointControl _checkpoints;
    private LogCleaner? _cleaner;

    /// <summary>Stops deleting old log in every group (PhxPaxos <c>PauseLogCleaner</c>); the log then only grows.</summary>
    public void PauseLogCleaner() => _checkpoints.CleanerPaused = true;

    /// <summary>Resumes deleting old log (PhxPaxos <c>ContinueLogCleaner</c>). The cleaner runs unless paused.</summary>
    public void ContinueLogCleaner() => _checkpoints.CleanerPaused = false;

    /// <summary>
    /// Changes how many instances of log are kept before each group's checkpoint (PhxPaxos
    /// <c>SetHoldPaxosLogCount</c>); values below 300 are raised to 300. Takes effect on the next pass.
    /// </summary>
    public void SetHoldLogCount(long count) => _checkpoints.HoldLogCount = count;

    /// <summary>
    /// Stops feeding <see cref="StateMachines.IStateMachine.ExecuteForCheckpoint"/> (PhxPaxos
    /// <c>PauseCheckpointReplayer</c>). The replayer starts paused; it runs only with
    /// <see cref="PaxosNodeOptions.UseCheckpointReplayer"/>.
    /// </summary>
    public void PauseCheckpointReplayer() => _checkpoints.ReplayerPaused = true;

    /// <summary>Starts or resumes the checkpoint replayer (PhxPaxos <c>ContinueCheckpointReplayer</c>).</summary>
    public void ContinueCheckpointReplayer() => _checkpoints.ReplayerPaused = false;

    /// <summary>A group's checkpoint as its state machines report it (PhxPaxos semantics: the largest), or <see cref="StateMachines.StateMachineCheckpoint.None"/>.</summary>
    public ulong GetCheckpointInstanceId(int groupIndex) => GetGroup(groupIndex).StateMachines.GetCheckpointInstanceId();

    /// <summary>How many checkpoints a group received from peers and installed in place since the node started.</summary>
    public long GetCheckpointsInstalled(int groupIndex) => GetGroup(groupIndex).CheckpointsInstalled;

    /// <summary>The largest frame a node sends or takes: a value, or a checkpoint chunk, plus the envelope.</summary>
    internal static int MaxFrameLength(PaxosNodeOptions options) => Math.Max(options.MaxValueSize, CheckpointSender.ChunkSize) + 4096;

    private void StartLogCleaner()
    {
        var groups = new ICleanableGroup[_groups.Length];
        for (var i = 0; i < groups.Length; i++)
        {
            groups[i] = _groups[i];
        }

        _cleaner = new LogCleaner(groups, _storage, _checkpoints, _time, $"paxos-cleaner-{MyNodeId.Port}", _loggerFactory.CreateLogger<LogCleaner>());
        _cleaner.Start();
    }

    /// <summary>Stops the cleaner and any checkpoint being sent; called while the node stops.</summary>
    private void StopCheckpointWork()
    {
        _cleaner?.Dispose();
        _cleaner = null;
        foreach (PaxosGroup group in _groups)
        {
            group.CancelCheckpointSend("the node stops");
        }
    }
}
