using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Checkpoints;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Groups;

/// <summary>
/// Checkpoints: catch-up by checkpoint of a node whose needed log was cleaned (ask, receive, install in
/// place), serving checkpoints to such nodes, the optional replayer, and the group's side of log cleaning.
/// </summary>
/// <remarks>
/// Unlike PhxPaxos, which calls <c>exit(-1)</c> after installing a checkpoint, the group reloads itself in
/// place: the log is cleared, the state machines load the checkpoint, and acceptor, learner and proposer
/// restart at the instance after it. Other groups are not touched.
/// </remarks>
internal sealed partial class PaxosGroup : ICleanableGroup
{
    /// <summary>Ask for a checkpoint this long after the first peer said it cleaned past us, even without a majority (PhxPaxos: 60 s).</summary>
    private const int AskForCheckpointWaitMs = 60_000;

    /// <summary>A requested transfer must begin within this long (the sender may be copying a large checkpoint first).</summary>
    private const int CheckpointBeginTimeoutMs = 30_000;

    /// <summary>A transfer under way is abandoned after this long without a chunk; the sender streams continuously.</summary>
    private const int CheckpointIdleTimeoutMs = 10_000;

    /// <summary>After sending a checkpoint the log is kept this long, so that the receiver can learn what follows it.</summary>
    private const int CleanerGraceAfterSendMs = 30_000;

    /// <summary>Values the replayer feeds per step; it yields the loop between steps.</summary>
    private const int ReplayerStepCount = 500;

    private readonly object _logMaintenanceGate = new();
    private readonly HashSet<ulong> _saidCleanedPastUs = [];
    private long _firstSaidCleanedMs;
    private bool _askingForCheckpoint;
    private ulong _askedCheckpointFrom;
    private long _checkpointReceiveTimerId;
    private CheckpointReceiver? _checkpointReceiver;
    private CheckpointSender? _checkpointSender;
    private PaxosMsg? _pendingCheckpointAsk;
    private long _cleanerResumeAtMs;
    private int _checkpointSending;
    private long _replayerTimerId;
    private ulong? _replayerNext;
    private long _checkpointsInstalled;

    /// <summary>Checkpoints installed in place since start. Thread-safe.</summary>
    public long CheckpointsInstalled => Interlocked.Read(ref _checkpointsInstalled);

    /// <summary>Whether the group waits for a checkpoint and drops Paxos messages meanwhile (PhxPaxos ask-for-checkpoint mode). Loop thread.</summary>
    public bool IsAskingForCheckpoint => _askingForCheckpoint;

    /// <summary>The next instance the replayer will feed, or null before it ran. Loop thread.</summary>
    public ulong? ReplayerNextInstanceId => _replayerNext;

    /// <inheritdoc />
    ulong ICleanableGroup.CheckpointInstanceIdForCleaner => StateMachines.GetCheckpointInstanceId();

    /// <inheritdoc />
    bool ICleanableGroup.MayCleanLog =>
        Volatile.Read(ref _checkpointSending) == 0 && _loop.NowMs >= Interlocked.Read(ref _cleanerResumeAtMs);

    /// <inheritdoc />
    object ICleanableGroup.LogMaintenanceGate => _logMaintenanceGate;

    /// <inheritdoc />
    void ICleanableGroup.OnLogCleaned(ulong minChosen) => _loop.Post(new LoopAction(() =>
    {
        // A checkpoint installed meanwhile moved the log start further; never go back.
        if (minChosen > MinChosenInstanceId)
        {
            PublishProgress(minChosen);
        }
    }));

    /// <summary>Accepts an inbound checkpoint message for the loop. Thread-safe.</summary>
    public void EnqueueCheckpointMessage(CheckpointMsg message, ulong headerGid) =>
        _loop.Post(new LoopAction(() => OnCheckpointMessage(message, headerGid)));

    /// <summary>Ends a checkpoint transfer being sent and waits for its thread. Thread-safe; used when the node stops.</summary>
    public void CancelCheckpointSend(string reason)
    {
        var sender = Volatile.Read(ref _checkpointSender);
        if (sender is not null)
        {
            sender.Cancel(reason);
            sender.Join(TimeSpan.FromSeconds(10));
        }
    }

    /// <summary>Arms the replayer when it is configured; loop thread, at start.</summary>
    private void OnCheckpointLoopStarted()
    {
        if (_settings.Checkpoints.UseReplayer)
        {
            _replayerTimerId = AddTimer(1000, TimerKind.CheckpointReplayer);
        }
    }

    private void OnCheckpointTimer(TimerKind kind, long timerId)
    {
        switch (kind)
        {
            case TimerKind.CheckpointReceive when timerId == _checkpointReceiveTimerId:
                _checkpointReceiveTimerId = 0;
                AbandonCheckpointReceive(_checkpointReceiver is { IsActive: true }
                    ? $"no chunk for {CheckpointIdleTimeoutMs} ms"
                    : $"node {new NodeId(_askedCheckpointFrom)} did not begin a transfer within {CheckpointBeginTimeoutMs} ms");
                break;
            case TimerKind.CheckpointReplayer when timerId == _replayerTimerId:
                _replayerTimerId = AddTimer(ReplayStep() ? 10 : 1000, TimerKind.CheckpointReplayer);
                break;
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Receiving side.

    /// <summary>
    /// A peer answered our ask-for-learn with a log that starts after our current instance (PhxPaxos
    /// <c>PrepareForAskforCheckpoint</c>): once a majority said so, or 60 s after the first one did,
    /// ask that peer for a checkpoint.
    /// </summary>
    private void OnPeerCleanedPastUs(PaxosMsg message)
    {
        if (_askingForCheckpoint)
        {
            return;
        }

        var nowMs = _loop.NowMs;
        if (_saidCleanedPastUs.Count == 0)
        {
            _firstSaidCleanedMs = nowMs;
        }

        _saidCleanedPastUs.Add(message.NodeID);
        if (_saidCleanedPastUs.Count < Quorum && nowMs - _firstSaidCleanedMs < AskForCheckpointWaitMs)
        {
            return;
        }

        _saidCleanedPastUs.Clear();
        _askingForCheckpoint = true;

        // Nothing may write to the log that the checkpoint replaces (PhxPaxos issue #196): stop the
        // proposer's round; new rounds do not start while this node is behind (not IsLatest).
        _proposer.Abandon();
        _askedCheckpointFrom = message.NodeID;
        _checkpointReceiver ??= new CheckpointReceiver(_storage.GetGroupDirectory(Index));
        TryResetReceiver();
        ArmCheckpointReceiveTimer(CheckpointBeginTimeoutMs);
        LogAskingForCheckpoint(Index, Now, new NodeId(message.NodeID), message.MinChosenInstanceID);
        Send(message.NodeID, new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.AskForCheckpoint,
            InstanceID = Now,
            NodeID = _settings.MyNodeId,
        }, TransportKind.Tcp);
    }

    private void OnCheckpointMessage(CheckpointMsg message, ulong headerGid)
    {
        if (_stoppedReason is not null)
        {
            return;
        }

        if ((Gid != 0 && headerGid != 0 && headerGid != Gid) || !IsValidSender(message.NodeID))
        {
            LogCheckpointMessageRefused(Index, new NodeId(message.NodeID), headerGid);
            return;
        }

        if (message.MsgType == (int)CheckpointMsgType.SendFileAck)
        {
            _checkpointSender?.OnAck(message);
            return;
        }

        if (message.MsgType != (int)CheckpointMsgType.SendFile)
        {
            return;
        }

        if (!_askingForCheckpoint || _checkpointReceiver is null)
        {
            // Unlike PhxPaxos (which ignores it), refuse at once, so that a sender whose receiver
            // restarted or gave up stops now instead of after its two-minute acknowledgement timeout.
            AckCheckpoint(message, ok: false);
            return;
        }

        var outcome = _checkpointReceiver.Receive(message, out var problem);
        switch (outcome)
        {
            case ReceiveOutcome.Begun:
                LogCheckpointReceiveBegun(Index, new NodeId(message.NodeID), message.UUID, message.CheckpointInstanceID);
                goto case ReceiveOutcome.Written;
            case ReceiveOutcome.Written:
            case ReceiveOutcome.Duplicate:
                ArmCheckpointReceiveTimer(CheckpointIdleTimeoutMs);
                AckCheckpoint(message, ok: true);
                break;
            case ReceiveOutcome.Refused:
                LogCheckpointChunkRefused(Index, new NodeId(message.NodeID), message.UUID, problem);
                AckCheckpoint(message, ok: false);
                break;
            case ReceiveOutcome.Broken:
                AckCheckpoint(message, ok: false);
                AbandonCheckpointReceive(problem ?? "the transfer broke");
                break;
            case ReceiveOutcome.Ended:
                AckCheckpoint(message, InstallCheckpoint());
                break;
        }

        AfterWork();
    }

    private void AckCheckpoint(CheckpointMsg message, bool ok)
    {
        var ack = new CheckpointMsg
        {
            MsgType = (int)CheckpointMsgType.SendFileAck,
            NodeID = _settings.MyNodeId,
            UUID = message.UUID,
            Sequence = message.Sequence,
            Flag = (int)(ok ? CheckpointSendFileAckFlag.Ok : CheckpointSendFileAckFlag.Fail),
        };
        _transport.Send(new NodeId(message.NodeID), FrameCodec.Encode(Index, Gid, ack), TransportKind.Tcp);
    }

    private void ArmCheckpointReceiveTimer(int delayMs)
    {
        RemoveTimer(_checkpointReceiveTimerId);
        _checkpointReceiveTimerId = AddTimer(delayMs, TimerKind.CheckpointReceive);
    }

    /// <summary>Gives the transfer up; the next ask-for-learn round finds the gap again and asks anew.</summary>
    private void AbandonCheckpointReceive(string reason)
    {
        LogCheckpointReceiveAbandoned(Index, new NodeId(_checkpointReceiver?.Sender ?? _askedCheckpointFrom), reason);
        RemoveTimer(_checkpointReceiveTimerId);
        _checkpointReceiveTimerId = 0;
        _askingForCheckpoint = false;
        TryResetReceiver();
    }

    private void TryResetReceiver()
    {
        try
        {
            _checkpointReceiver?.Reset();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Leftover temporary files are deleted by the next transfer's BEGIN.
            LogTempCleanupFailed(Index, ex);
        }
    }

    /// <summary>
    /// Installs the received checkpoint and reloads the group in place. Order matters for crashes: the log
    /// is cleared first, so that a crash before the state machines loaded leaves an empty log behind their
    /// old checkpoint (start-up then asks for a checkpoint again), never a log that contradicts them.
    /// </summary>
    /// <returns>True when installed.</returns>
    private bool InstallCheckpoint()
    {
        var receiver = _checkpointReceiver!;
        var announced = receiver.CheckpointInstanceId;
        var started = _loop.NowMs;
        if (receiver.Files.Count == 0)
        {
            // Moving past instances that no state machine took in would silently lose them.
            AbandonCheckpointReceive($"the checkpoint from node {new NodeId(receiver.Sender)} holds no files");
            return false;
        }

        ulong start;
        string? failure = null;
        var loadedMachines = 0;
        lock (_logMaintenanceGate)
        {
            try
            {
                _storage.ClearAllLog(Index);
            }
            catch (Exception ex) when (ex is LogStorageException or IOException or UnauthorizedAccessException)
            {
                Stop($"clearing the log to install checkpoint {announced} from node {new NodeId(receiver.Sender)} failed", ex);
                return false;
            }

            foreach (var (smId, files) in receiver.Files)
            {
                var machine = StateMachines.Find(smId);
                if (machine is null || IsBuiltIn(smId))
                {
                    LogCheckpointForUnknownMachine(Index, smId);
                    continue;
                }

                try
                {
                    if (!machine.LoadCheckpointState(Index, receiver.TempDirectory(smId), files, announced))
                    {
                        failure = $"state machine {smId} refused the checkpoint";
                        break;
                    }

                    loadedMachines++;
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    failure = $"state machine {smId} failed to load the checkpoint: {ex.Message}";
                    break;
                }
            }

            if (failure is not null && loadedMachines > 0)
            {
                // Some state machines hold the new state and some the old: no single instance fits both.
                Stop($"installing checkpoint {announced} from node {new NodeId(receiver.Sender)} failed half-way ({failure}); " +
                    "the state machines now disagree. Clear this group's folder and the state machines' data and restart to fetch a checkpoint again");
                return false;
            }

            // Continue after what the state machines now hold. A checkpoint may cover more than BEGIN
            // announced (it was taken after), and start-up computes the same value, so both agree.
            var loaded = StateMachines.GetCheckpointInstanceId();
            start = failure is null
                ? (loaded == StateMachineCheckpoint.None ? announced : Math.Max(announced, loaded)) + 1
                : (loaded == StateMachineCheckpoint.None ? 0 : loaded + 1);
            try
            {
                _storage.SetMinChosenInstanceId(Index, start);
            }
            catch (Exception ex) when (ex is LogStorageException or IOException)
            {
                Stop($"recording the log start {start} after checkpoint {announced} failed", ex);
                return false;
            }
        }

        var from = receiver.Sender;
        var bytes = receiver.Bytes;
        ResetToInstance(start);
        RemoveTimer(_checkpointReceiveTimerId);
        _checkpointReceiveTimerId = 0;
        _askingForCheckpoint = false;
        TryResetReceiver();

        // Learn what follows the checkpoint right away instead of at the next regular round.
        _learner.ArmAskForLearnTimer(1);
        if (failure is not null)
        {
            LogCheckpointInstallFailed(Index, new NodeId(from), announced, failure, start);
            Telemetry.EngineInstruments.RecordCheckpointTransfer(Telemetry.EngineInstruments.CheckpointsInstalled, Index, ok: false, 0);
            return false;
        }

        Interlocked.Increment(ref _checkpointsInstalled);
        LogCheckpointInstalled(Index, new NodeId(from), announced, start, bytes, _loop.NowMs - started);
        Telemetry.EngineInstruments.RecordCheckpointTransfer(Telemetry.EngineInstruments.CheckpointsInstalled, Index, ok: true, bytes);
        return true;
    }

    /// <summary>Restarts acceptor, learner and proposer at <paramref name="instance"/> with an empty log behind it.</summary>
    private void ResetToInstance(ulong instance)
    {
        // The promise is kept (as across instances); nothing is accepted at the new instance yet.
        _acceptor.Restore(new AcceptorStateData
        {
            InstanceID = instance,
            PromiseID = _acceptor.Promised.ProposalId,
            PromiseNodeID = _acceptor.Promised.NodeId,
            AcceptedID = 0,
            AcceptedNodeID = 0,
            AcceptedValue = ByteString.Empty,
            Checksum = 0,
        });
        _proposer.Abandon();
        _proposer.InstanceId = instance;
        _proposer.OnChosenElsewhere();
        _committer.AbandonInFlight();

        _learner.Reset();
        _retryQueue.Clear();
        _chosenByMeInstance = ulong.MaxValue;
        _lastChecksum = 0; // history before the checkpoint is unknown here; adopted from the next peer message
        _learnerSender.Stop();
        _replayerNext = null;
        _saidCleanedPastUs.Clear();
        PublishProgress(instance);
    }

    // ---------------------------------------------------------------------------------------------
    // Sending side.

    private void OnAskForCheckpoint(PaxosMsg message)
    {
        if (!IsValidSender(message.NodeID) || message.NodeID == _settings.MyNodeId)
        {
            return;
        }

        if (_checkpointSender is { } running)
        {
            if (running.Receiver != message.NodeID || !running.HasBegun)
            {
                return; // one transfer at a time, as PhxPaxos
            }

            // The receiver asks again, so it gave the running transfer up: end it and start afresh once
            // its thread has released the state machines' checkpoints.
            running.Cancel("the receiver asked again");
            _pendingCheckpointAsk = message;
            return;
        }

        var checkpoint = StateMachines.GetCheckpointInstanceId();
        var machines = UserMachines();
        if (checkpoint == StateMachineCheckpoint.None || machines.Count == 0)
        {
            LogNoCheckpointToSend(Index, new NodeId(message.NodeID));
            return;
        }

        // The checkpoint id is read before the state machines lock theirs, so the files hold at least
        // everything up to it; the receiver continues after what it actually loaded.
        Volatile.Write(ref _checkpointSending, 1);
        var sender = new CheckpointSender(Index, _settings.MyNodeId, message.NodeID, Gid, checkpoint, machines, _transport, _loop.Time, _logger, OnCheckpointSenderFinished);
        _checkpointSender = sender;
        sender.Start();
    }

    /// <summary>Runs on the sender's thread when it ends.</summary>
    private void OnCheckpointSenderFinished(CheckpointSender sender)
    {
        if (sender.HasBegun)
        {
            Interlocked.Exchange(ref _cleanerResumeAtMs, _loop.NowMs + CleanerGraceAfterSendMs);
        }

        Volatile.Write(ref _checkpointSending, 0);
        try
        {
            _loop.Post(new LoopAction(() => ForgetCheckpointSender(sender)));
        }
        catch (ObjectDisposedException)
        {
            // The node stopped meanwhile; nobody needs to hear of it.
        }
    }

    private void ForgetCheckpointSender(CheckpointSender sender)
    {
        if (!ReferenceEquals(_checkpointSender, sender))
        {
            return;
        }

        _checkpointSender = null;
        if (_pendingCheckpointAsk is { } ask && _stoppedReason is null)
        {
            _pendingCheckpointAsk = null;
            OnAskForCheckpoint(ask);
        }
    }

    private List<IStateMachine> UserMachines()
    {
        var list = new List<IStateMachine>();
        foreach (var m in StateMachines.Machines)
        {
            if (!IsBuiltIn(m.SmId))
            {
                list.Add(m);
            }
        }

        return list;
    }

    private static bool IsBuiltIn(int smId) => smId is ReservedSmIds.SystemVariables or ReservedSmIds.Master;

    // ---------------------------------------------------------------------------------------------
    // Replayer.

    /// <summary>
    /// Feeds chosen values after the state machines' checkpoint to <see cref="IStateMachine.ExecuteForCheckpoint"/>
    /// in instance order (PhxPaxos <c>Replayer</c>). Runs on the loop in small steps, because state machines
    /// are called from their group's loop only; pauses while a checkpoint is being sent.
    /// </summary>
    /// <returns>True when there is more to do right away.</returns>
    private bool ReplayStep()
    {
        if (_settings.Checkpoints.ReplayerPaused || Volatile.Read(ref _checkpointSending) != 0 || _askingForCheckpoint)
        {
            return false;
        }

        if (_replayerNext is null)
        {
            var checkpoint = StateMachines.GetCheckpointInstanceId();
            _replayerNext = checkpoint == StateMachineCheckpoint.None ? 0 : checkpoint + 1;
        }

        for (var n = 0; n < ReplayerStepCount && _replayerNext < Now; n++)
        {
            var instance = _replayerNext.Value;
            var record = TryReadRecord(instance);
            if (record is null)
            {
                LogReplayerMissingRecord(Index, instance, MinChosenInstanceId);
                return false;
            }

            if (!ExecuteForCheckpoint(instance, record.AcceptedValue))
            {
                // Retried on a later step (PhxPaxos retries every 500 ms).
                return false;
            }

            _replayerNext = instance + 1;
        }

        return _replayerNext < Now;
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

        BatchPaxosValues batch;
        try
        {
            batch = BatchPaxosValues.Parser.ParseFrom(body);
        }
        catch (InvalidProtocolBufferException)
        {
            return true; // execution proper reported it; nothing to replay
        }

        foreach (var entry in batch.Values)
        {
            if (!ExecuteOneForCheckpoint(instance, entry.SMID, entry.Value.Span))
            {
                return false;
            }
        }

        return true;
    }

    private bool ExecuteOneForCheckpoint(ulong instance, int smId, ReadOnlySpan<byte> body)
    {
        if (smId == ReservedSmIds.None || IsBuiltIn(smId) || StateMachines.Find(smId) is not { } machine)
        {
            return true;
        }

        if (machine.ExecuteForCheckpoint(Index, instance, body))
        {
            return true;
        }

        LogReplayerExecuteFailed(Index, instance, smId);
        return false;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: at instance {Now}, asking node {Peer} for a checkpoint; its log starts at {MinChosen}. Paxos messages are dropped until it is installed.")]
    private partial void LogAskingForCheckpoint(int group, ulong now, NodeId peer, ulong minChosen);

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: receiving checkpoint {Checkpoint} from node {Peer} (uuid {Uuid}).")]
    private partial void LogCheckpointReceiveBegun(int group, NodeId peer, ulong uuid, ulong checkpoint);

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: refused a checkpoint message from node {Peer} (uuid {Uuid}): {Problem}.")]
    private partial void LogCheckpointChunkRefused(int group, NodeId peer, ulong uuid, string? problem);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: checkpoint transfer from node {Peer} abandoned: {Reason}. It is asked for again.")]
    private partial void LogCheckpointReceiveAbandoned(int group, NodeId peer, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: refused a checkpoint message from node {Peer} (gid {HeaderGid}): not a member of this cluster.")]
    private partial void LogCheckpointMessageRefused(int group, NodeId peer, ulong headerGid);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: deleting temporary checkpoint files failed.")]
    private partial void LogTempCleanupFailed(int group, Exception ex);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: the checkpoint holds files for state machine {SmId}, which is not mounted here; skipped.")]
    private partial void LogCheckpointForUnknownMachine(int group, int smId);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group}: installing checkpoint {Checkpoint} from node {Peer} failed: {Failure}. The group continues at instance {Start} from its own state and asks again.")]
    private partial void LogCheckpointInstallFailed(int group, NodeId peer, ulong checkpoint, string failure, ulong start);

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: installed checkpoint {Checkpoint} from node {Peer} in place ({Bytes} bytes, {ElapsedMs} ms); continuing at instance {Start}.")]
    private partial void LogCheckpointInstalled(int group, NodeId peer, ulong checkpoint, ulong start, long bytes, long elapsedMs);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: node {Peer} asked for a checkpoint but no state machine here has one.")]
    private partial void LogNoCheckpointToSend(int group, NodeId peer);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group}: the checkpoint replayer needs instance {Instance}, which is not in the log (it starts at {MinChosen}).")]
    private partial void LogReplayerMissingRecord(int group, ulong instance, ulong minChosen);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: state machine {SmId} failed ExecuteForCheckpoint at instance {Instance}; retrying.")]
    private partial void LogReplayerExecuteFailed(int group, ulong instance, int smId);
}
