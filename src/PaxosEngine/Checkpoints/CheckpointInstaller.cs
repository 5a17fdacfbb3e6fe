using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Checkpoints;

/// <summary>What the checkpoint installer needs from its group beyond <see cref="IPeerHost"/>.</summary>
internal interface ICheckpointInstallerHost : IPeerHost
{
    /// <summary>Votes needed for a majority of the current membership.</summary>
    int Quorum { get; }

    /// <summary>Stops the proposer's round: nothing may write to the log the checkpoint replaces.</summary>
    void AbandonProposal();

    /// <summary>Restarts acceptor, learner and proposer at <paramref name="instance"/> with an empty log behind it.</summary>
    void ResetToInstance(ulong instance);

    /// <summary>Asks the members how far they are right away instead of at the next regular round.</summary>
    void LearnSoon();
}

/// <summary>
/// Catch-up by checkpoint of a node whose needed log was cleaned by its peers (PhxPaxos <c>Learner</c>'s
/// ask-for-checkpoint and <c>CheckpointReceiver</c>): decides when to ask, takes the transfer's chunks through a
/// <see cref="CheckpointReceiver"/>, and installs the checkpoint in place.
/// </summary>
/// <remarks>
/// Unlike PhxPaxos, which calls <c>exit(-1)</c> after installing a checkpoint, the group reloads itself in
/// place: the log is cleared, the state machines load the checkpoint, and acceptor, learner and proposer
/// restart at the instance after it. Other groups are not touched. Owned by the group's loop thread;
/// <see cref="CheckpointsInstalled"/> and <see cref="LogMaintenanceGate"/> may be used from any thread.
/// </remarks>
internal sealed partial class CheckpointInstaller
{
    /// <summary>Ask for a checkpoint this long after the first peer said it cleaned past us, even without a majority (PhxPaxos: 60 s).</summary>
    private const int AskForCheckpointWaitMs = 60_000;

    /// <summary>A requested transfer must begin within this long (the sender may be copying a large checkpoint first).</summary>
    private const int CheckpointBeginTimeoutMs = 30_000;

    /// <summary>A transfer under way is abandoned after this long without a chunk; the sender streams continuously.</summary>
    private const int CheckpointIdleTimeoutMs = 10_000;

    /// <summary>How soon an install that found the log cleaner at work tries again.</summary>
    private const int InstallRetryMs = 5;

    private readonly ICheckpointInstallerHost _host;
    private readonly GroupSettings _settings;
    private readonly ILogStorage _storage;
    private readonly StateMachineRegistry _stateMachines;
    private readonly ILogger _logger;
    private readonly HashSet<ulong> _saidCleanedPastUs = [];
    private long _firstSaidCleanedMs;
    private bool _askingForCheckpoint;
    private ulong _askedCheckpointFrom;
    private long _checkpointReceiveTimerId;
    private CheckpointReceiver? _checkpointReceiver;
    private CheckpointMsg? _installDue;
    private long _checkpointsInstalled;

    public CheckpointInstaller(ICheckpointInstallerHost host, GroupSettings settings, ILogStorage storage, StateMachineRegistry stateMachines, ILogger logger)
    {
        _host = host;
        _settings = settings;
        _storage = storage;
        _stateMachines = stateMachines;
        _logger = logger;
    }

    /// <summary>Checkpoints installed in place since start. Thread-safe.</summary>
    public long CheckpointsInstalled => Interlocked.Read(ref _checkpointsInstalled);

    /// <summary>Whether the group waits for a checkpoint and drops Paxos messages meanwhile (PhxPaxos ask-for-checkpoint mode).</summary>
    public bool IsAskingForCheckpoint => _askingForCheckpoint;

    /// <summary>Held while the log's start changes: by the cleaner for one step, by the loop while it installs a checkpoint.</summary>
    public object LogMaintenanceGate { get; } = new();

    private ulong Now => _host.CurrentInstanceId;

    private int Index => _host.GroupIndex;

    /// <summary>
    /// A peer answered our ask-for-learn with a log that starts after our current instance (PhxPaxos
    /// <c>PrepareForAskforCheckpoint</c>): once a majority said so, or 60 s after the first one did,
    /// ask that peer for a checkpoint.
    /// </summary>
    public void OnPeerCleanedPastUs(PaxosMsg message)
    {
        if (_askingForCheckpoint)
        {
            return;
        }

        var nowMs = _host.NowMs;
        if (_saidCleanedPastUs.Count == 0)
        {
            _firstSaidCleanedMs = nowMs;
        }

        _saidCleanedPastUs.Add(message.NodeID);
        if (_saidCleanedPastUs.Count < _host.Quorum && nowMs - _firstSaidCleanedMs < AskForCheckpointWaitMs)
        {
            return;
        }

        _saidCleanedPastUs.Clear();
        _askingForCheckpoint = true;

        // Nothing may write to the log that the checkpoint replaces (PhxPaxos issue #196): stop the
        // proposer's round; new rounds do not start while this node is behind (not IsLatest).
        _host.AbandonProposal();
        _askedCheckpointFrom = message.NodeID;
        _checkpointReceiver ??= new CheckpointReceiver(_storage.GetGroupDirectory(Index));
        TryResetReceiver();
        ArmCheckpointReceiveTimer(CheckpointBeginTimeoutMs);
        LogAskingForCheckpoint(Index, Now, new NodeId(message.NodeID), message.MinChosenInstanceID);
        _host.Send(message.NodeID, new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.AskForCheckpoint,
            InstanceID = Now,
            NodeID = _settings.MyNodeId,
        }, TransportKind.Tcp);
    }

    /// <summary>
    /// A chunk (or the BEGIN or END) of a checkpoint transfer from a member. Returns whether it was taken
    /// into a transfer (the group then runs its after-work step); a message for no transfer is refused at once.
    /// </summary>
    public bool OnSendFile(CheckpointMsg message)
    {
        if (!_askingForCheckpoint || _checkpointReceiver is null)
        {
            // Unlike PhxPaxos (which ignores it), refuse at once, so that a sender whose receiver
            // restarted or gave up stops now instead of after its two-minute acknowledgement timeout.
            AckCheckpoint(message, ok: false);
            return false;
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
                InstallOrRetry(message);
                break;
        }

        return true;
    }

    /// <summary>The receive timer fired: the transfer did not begin, or went quiet.</summary>
    public void OnTimer(long timerId)
    {
        if (timerId != _checkpointReceiveTimerId)
        {
            return;
        }

        _checkpointReceiveTimerId = 0;
        if (_installDue is { } end)
        {
            _installDue = null;
            InstallOrRetry(end);
            return;
        }

        AbandonCheckpointReceive(_checkpointReceiver is { IsActive: true }
            ? $"no chunk for {CheckpointIdleTimeoutMs} ms"
            : $"node {new NodeId(_askedCheckpointFrom)} did not begin a transfer within {CheckpointBeginTimeoutMs} ms");
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
        _host.SendFrame(message.NodeID, FrameCodec.Encode(Index, _host.Gid, ack), TransportKind.Tcp);
    }

    private void ArmCheckpointReceiveTimer(int delayMs)
    {
        _host.RemoveTimer(_checkpointReceiveTimerId);
        _checkpointReceiveTimerId = _host.AddTimer(delayMs, TimerKind.CheckpointReceive);
    }

    /// <summary>
    /// Installs the received checkpoint and acknowledges its end, unless the log cleaner holds the group's
    /// log-maintenance gate: it holds it across an fsync and file deletions, so the loop comes back a few
    /// milliseconds later instead of waiting for it (the sender waits for the acknowledgement).
    /// </summary>
    private void InstallOrRetry(CheckpointMsg end)
    {
        if (!Monitor.TryEnter(LogMaintenanceGate))
        {
            _installDue = end;
            ArmCheckpointReceiveTimer(InstallRetryMs);
            return;
        }

        bool installed;
        try
        {
            installed = InstallCheckpoint();
        }
        finally
        {
            Monitor.Exit(LogMaintenanceGate);
        }

        AckCheckpoint(end, installed);
    }

    /// <summary>Gives the transfer up; the next ask-for-learn round finds the gap again and asks anew.</summary>
    private void AbandonCheckpointReceive(string reason)
    {
        _installDue = null;
        LogCheckpointReceiveAbandoned(Index, new NodeId(_checkpointReceiver?.Sender ?? _askedCheckpointFrom), reason);
        _host.RemoveTimer(_checkpointReceiveTimerId);
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
        var started = _host.NowMs;
        if (receiver.Files.Count == 0)
        {
            // Moving past instances that no state machine took in would silently lose them.
            AbandonCheckpointReceive($"the checkpoint from node {new NodeId(receiver.Sender)} holds no files");
            return false;
        }

        ulong start;
        string? failure = null;
        var loadedMachines = 0;
        // The caller holds the log-maintenance gate: the cleaner deletes nothing meanwhile.
        try
        {
            _storage.ClearAllLog(Index);
        }
        catch (Exception ex) when (ex is LogStorageException or IOException or UnauthorizedAccessException)
        {
            _host.Stop($"clearing the log to install checkpoint {announced} from node {new NodeId(receiver.Sender)} failed", ex);
            return false;
        }

        foreach (var (smId, files) in receiver.Files)
        {
            var machine = _stateMachines.Find(smId);
            if (machine is null || StateMachineRegistry.IsBuiltIn(smId))
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
            _host.Stop($"installing checkpoint {announced} from node {new NodeId(receiver.Sender)} failed half-way ({failure}); " +
                "the state machines now disagree. Clear this group's folder and the state machines' data and restart to fetch a checkpoint again");
            return false;
        }

        // Continue after what the state machines now hold. A checkpoint may cover more than BEGIN
        // announced (it was taken after), and start-up computes the same value, so both agree.
        var loaded = _stateMachines.GetCheckpointInstanceId();
        start = failure is null
            ? (loaded == StateMachineCheckpoint.None ? announced : Math.Max(announced, loaded)) + 1
            : (loaded == StateMachineCheckpoint.None ? 0 : loaded + 1);
        try
        {
            _storage.SetMinChosenInstanceId(Index, start);
        }
        catch (Exception ex) when (ex is LogStorageException or IOException)
        {
            _host.Stop($"recording the log start {start} after checkpoint {announced} failed", ex);
            return false;
        }

        var from = receiver.Sender;
        var bytes = receiver.Bytes;
        _host.ResetToInstance(start);
        _saidCleanedPastUs.Clear();
        _host.RemoveTimer(_checkpointReceiveTimerId);
        _checkpointReceiveTimerId = 0;
        _askingForCheckpoint = false;
        TryResetReceiver();

        // Learn what follows the checkpoint right away instead of at the next regular round.
        _host.LearnSoon();
        if (failure is not null)
        {
            LogCheckpointInstallFailed(Index, new NodeId(from), announced, failure, start);
            Telemetry.EngineInstruments.RecordCheckpointTransfer(Telemetry.EngineInstruments.CheckpointsInstalled, Index, ok: false, 0);
            return false;
        }

        Interlocked.Increment(ref _checkpointsInstalled);
        LogCheckpointInstalled(Index, new NodeId(from), announced, start, bytes, _host.NowMs - started);
        Telemetry.EngineInstruments.RecordCheckpointTransfer(Telemetry.EngineInstruments.CheckpointsInstalled, Index, ok: true, bytes);
        return true;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: at instance {Now}, asking node {Peer} for a checkpoint; its log starts at {MinChosen}. Paxos messages are dropped until it is installed.")]
    private partial void LogAskingForCheckpoint(int group, ulong now, NodeId peer, ulong minChosen);

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: receiving checkpoint {Checkpoint} from node {Peer} (uuid {Uuid}).")]
    private partial void LogCheckpointReceiveBegun(int group, NodeId peer, ulong uuid, ulong checkpoint);

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: refused a checkpoint message from node {Peer} (uuid {Uuid}): {Problem}.")]
    private partial void LogCheckpointChunkRefused(int group, NodeId peer, ulong uuid, string? problem);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: checkpoint transfer from node {Peer} abandoned: {Reason}. It is asked for again.")]
    private partial void LogCheckpointReceiveAbandoned(int group, NodeId peer, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: deleting temporary checkpoint files failed.")]
    private partial void LogTempCleanupFailed(int group, Exception ex);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: the checkpoint holds files for state machine {SmId}, which is not mounted here; skipped.")]
    private partial void LogCheckpointForUnknownMachine(int group, int smId);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group}: installing checkpoint {Checkpoint} from node {Peer} failed: {Failure}. The group continues at instance {Start} from its own state and asks again.")]
    private partial void LogCheckpointInstallFailed(int group, NodeId peer, ulong checkpoint, string failure, ulong start);

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: installed checkpoint {Checkpoint} from node {Peer} in place ({Bytes} bytes, {ElapsedMs} ms); continuing at instance {Start}.")]
    private partial void LogCheckpointInstalled(int group, NodeId peer, ulong checkpoint, ulong start, long bytes, long elapsedMs);
}
