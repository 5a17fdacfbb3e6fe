using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;

namespace Orleans.Paxos.Engine.Checkpoints;

/// <summary>What the replayer needs from its group beyond <see cref="IRoleHost"/>.</summary>
internal interface IReplayerHost : IRoleHost
{
    /// <summary>The lowest instance still in the log.</summary>
    ulong MinChosenInstanceId { get; }

    /// <summary>A checkpoint is being sent (the state machines' checkpoints are locked).</summary>
    bool IsSendingCheckpoint { get; }

    /// <summary>The group waits for a checkpoint; its log is about to be replaced.</summary>
    bool IsAskingForCheckpoint { get; }

    /// <summary>Reads the log record of <paramref name="instanceId"/>; null when it is not there or cannot be read (logged).</summary>
    AcceptorStateData? TryReadRecord(ulong instanceId);
}

/// <summary>
/// Feeds chosen values after the state machines' checkpoint to <see cref="IStateMachine.ExecuteForCheckpoint"/>
/// in instance order (PhxPaxos <c>Replayer</c>). Runs on the group's loop in small steps driven by a timer,
/// because state machines are called from their group's loop only; pauses while a checkpoint is being sent.
/// </summary>
internal sealed partial class Replayer
{
    /// <summary>Values the replayer feeds per step; it yields the loop between steps.</summary>
    private const int ReplayerStepCount = 500;

    private readonly IReplayerHost _host;
    private readonly CheckpointControl _control;
    private readonly StateMachineRegistry _stateMachines;
    private readonly ILogger _logger;
    private readonly BatchEntries _batch = new();
    private long _replayerTimerId;
    private ulong? _replayerNext;

    public Replayer(IReplayerHost host, CheckpointControl control, StateMachineRegistry stateMachines, ILogger logger)
    {
        _host = host;
        _control = control;
        _stateMachines = stateMachines;
        _logger = logger;
    }

    /// <summary>The next instance the replayer will feed, or null before it ran.</summary>
    public ulong? NextInstanceId => _replayerNext;

    /// <summary>Arms the replayer when it is configured; loop thread, at start.</summary>
    public void OnLoopStarted()
    {
        if (_control.UseReplayer)
        {
            _replayerTimerId = _host.AddTimer(1000, TimerKind.CheckpointReplayer);
        }
    }

    /// <summary>The replayer's timer: one step, then the next one soon (more to do) or in a second.</summary>
    public void OnTimer(long timerId)
    {
        if (timerId == _replayerTimerId)
        {
            _replayerTimerId = _host.AddTimer(ReplayStep() ? 10 : 1000, TimerKind.CheckpointReplayer);
        }
    }

    /// <summary>The group restarted at a new instance (a checkpoint was installed): start again from the state machines' checkpoint.</summary>
    public void Reset() => _replayerNext = null;

    /// <summary>Feeds up to <see cref="ReplayerStepCount"/> values.</summary>
    /// <returns>True when there is more to do right away.</returns>
    private bool ReplayStep()
    {
        if (_control.ReplayerPaused || _host.IsSendingCheckpoint || _host.IsAskingForCheckpoint)
        {
            return false;
        }

        if (_replayerNext is null)
        {
            var checkpoint = _stateMachines.GetCheckpointInstanceId();
            _replayerNext = checkpoint == StateMachineCheckpoint.None ? 0 : checkpoint + 1;
        }

        for (var n = 0; n < ReplayerStepCount && _replayerNext < _host.CurrentInstanceId; n++)
        {
            var instance = _replayerNext.Value;
            var record = _host.TryReadRecord(instance);
            if (record is null)
            {
                LogReplayerMissingRecord(_host.GroupIndex, instance, _host.MinChosenInstanceId);
                return false;
            }

            if (!ExecuteForCheckpoint(instance, record.AcceptedValue))
            {
                // Retried on a later step (PhxPaxos retries every 500 ms).
                return false;
            }

            _replayerNext = instance + 1;
        }

        return _replayerNext < _host.CurrentInstanceId;
    }

    private bool ExecuteForCheckpoint(ulong instance, ByteString packed)
    {
        if (!ValueCodec.TryUnpack(packed.Span, out var smId, out var body))
        {
            return true;
        }

        if (smId != ReservedSmIds.Batch)
        {
            return ExecuteOneForCheckpoint(instance, smId, body);
        }

        var batch = _batch;
        try
        {
            batch.Read(body);
        }
        catch (InvalidProtocolBufferException)
        {
            return true; // execution proper reported it; nothing to replay
        }

        for (var i = 0; i < batch.Count; i++)
        {
            if (!ExecuteOneForCheckpoint(instance, batch.SmIdAt(i), batch.ValueAt(body, i)))
            {
                return false;
            }
        }

        return true;
    }

    private bool ExecuteOneForCheckpoint(ulong instance, int smId, ReadOnlySpan<byte> body)
    {
        if (smId == ReservedSmIds.None || StateMachineRegistry.IsBuiltIn(smId) || _stateMachines.Find(smId) is not { } machine)
        {
            return true;
        }

        if (machine.ExecuteForCheckpoint(_host.GroupIndex, instance, body))
        {
            return true;
        }

        LogReplayerExecuteFailed(_host.GroupIndex, instance, smId);
        return false;
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group}: the checkpoint replayer needs instance {Instance}, which is not in the log (it starts at {MinChosen}).")]
    private partial void LogReplayerMissingRecord(int group, ulong instance, ulong minChosen);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: state machine {SmId} failed ExecuteForCheckpoint at instance {Instance}; retrying.")]
    private partial void LogReplayerExecuteFailed(int group, ulong instance, int smId);
}
