using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Hashing;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Checkpoints;

/// <summary>
/// Sends a group's checkpoint to one node that is too far behind (PhxPaxos <c>CheckpointSender</c>):
/// locks the state machines' checkpoints, streams their files as 1 MiB chunks between a BEGIN and an
/// END, and waits for acknowledgements (at most <see cref="AckLead"/> unacknowledged messages, and gives
/// up after <see cref="AckTimeoutMs"/> without one).
/// </summary>
/// <remarks>
/// Runs on a dedicated thread of its own (at most one per group at a time): locking a checkpoint may
/// copy a whole database and reading files blocks, neither of which may stall the group's loop or a
/// thread-pool thread. It touches no Paxos state; acknowledgements reach it through <see cref="OnAck"/>
/// from the loop thread, and it reports its end through the callback given to the constructor. Its
/// acknowledgement timeout is measured on the group loop's <see cref="TimeProvider"/>; the thread waits for
/// acknowledgements at most a second at a time and then looks at that clock again.
/// </remarks>
internal sealed partial class CheckpointSender
{
    /// <summary>Bytes per chunk (PhxPaxos: 1 MiB).</summary>
    public const int ChunkSize = 1024 * 1024;

    /// <summary>Messages that may be unacknowledged (PhxPaxos <c>Checkpoint_ACK_LEAD</c>).</summary>
    public const int AckLead = 10;

    /// <summary>The transfer fails after this long without an acknowledgement (PhxPaxos <c>Checkpoint_ACK_TIMEOUT</c>).</summary>
    public const int AckTimeoutMs = 120_000;

    private readonly int _groupIndex;
    private readonly ulong _myNodeId;
    private readonly ulong _gid;
    private readonly IReadOnlyList<IStateMachine> _machines;
    private readonly ITransport _transport;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Action<CheckpointSender> _finished;
    private readonly object _gate = new();
    private readonly Thread _thread;
    private ulong _sequence;
    private ulong _ackedSequence;
    private bool _anyAck;
    private long _lastAckMs;
    private string? _abortReason;
    private volatile bool _begun;

    public CheckpointSender(
        int groupIndex,
        ulong myNodeId,
        ulong receiver,
        ulong gid,
        ulong checkpointInstanceId,
        IReadOnlyList<IStateMachine> userMachines,
        ITransport transport,
        TimeProvider time,
        ILogger logger,
        Action<CheckpointSender> finished)
    {
        _groupIndex = groupIndex;
        _myNodeId = myNodeId;
        Receiver = receiver;
        _gid = gid;
        CheckpointInstanceId = checkpointInstanceId;
        _machines = userMachines;
        _transport = transport;
        _time = time;
        _logger = logger;
        _finished = finished;
        Uuid = unchecked((myNodeId ^ (ulong)time.GetTimestamp()) + (ulong)Random.Shared.NextInt64());
        _thread = new Thread(Run) { IsBackground = true, Name = $"paxos-cp-send-g{groupIndex}" };
    }

    /// <summary>The node being sent to.</summary>
    public ulong Receiver { get; }

    /// <summary>The transfer's uuid.</summary>
    public ulong Uuid { get; }

    /// <summary>The group's checkpoint announced in BEGIN: the receiver continues from the one after it.</summary>
    public ulong CheckpointInstanceId { get; }

    /// <summary>Whether BEGIN went out (the checkpoints are locked and the transfer is under way). Thread-safe.</summary>
    public bool HasBegun => _begun;

    /// <summary>Whether the transfer completed; valid once finished.</summary>
    public bool Succeeded { get; private set; }

    /// <summary>Bytes of file data sent.</summary>
    public long BytesSent { get; private set; }

    /// <summary>Milliseconds on the group loop's clock (the <see cref="TimeProvider"/> given to the constructor).</summary>
    private long NowMs => (long)_time.GetElapsedTime(0, _time.GetTimestamp()).TotalMilliseconds;

    public void Start() => _thread.Start();

    /// <summary>Waits for the sender's thread to end. Thread-safe.</summary>
    public bool Join(TimeSpan timeout) => !_thread.IsAlive || _thread.Join(timeout);

    /// <summary>Takes an acknowledgement (loop thread). A Fail ends the transfer.</summary>
    public void OnAck(CheckpointMsg ack)
    {
        if (ack.UUID != Uuid || ack.NodeID != Receiver)
        {
            return;
        }

        lock (_gate)
        {
            if (ack.Flag == (int)CheckpointSendFileAckFlag.Fail)
            {
                _abortReason ??= $"the receiver refused sequence {ack.Sequence}";
            }
            else if (!_anyAck || ack.Sequence > _ackedSequence)
            {
                // The receiver takes messages in order, so an acknowledgement covers every earlier one.
                _ackedSequence = ack.Sequence;
                _anyAck = true;
                _lastAckMs = NowMs;
            }

            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Ends the transfer early (e.g. the receiver asked again, so it dropped this one). Thread-safe.</summary>
    public void Cancel(string reason)
    {
        lock (_gate)
        {
            _abortReason ??= reason;
            Monitor.PulseAll(_gate);
        }
    }

    private void Run()
    {
        var locked = new List<IStateMachine>();
        var started = NowMs;
        try
        {
            foreach (var machine in _machines)
            {
                if (machine.LockCheckpointState())
                {
                    locked.Add(machine);
                }
            }

            if (locked.Count == 0)
            {
                LogNothingToSend(_groupIndex, new NodeId(Receiver));
                return;
            }

            _lastAckMs = NowMs;
            if (!Send(new CheckpointMsg { Flag = (int)CheckpointSendFileFlag.Begin, CheckpointInstanceID = CheckpointInstanceId }))
            {
                return;
            }

            _begun = true;
            LogSendStarted(_groupIndex, new NodeId(Receiver), Uuid, CheckpointInstanceId);
            foreach (var machine in locked)
            {
                if (!SendMachine(machine))
                {
                    return;
                }
            }

            if (!Send(new CheckpointMsg { Flag = (int)CheckpointSendFileFlag.End, CheckpointInstanceID = CheckpointInstanceId }) || !WaitForAcks(0))
            {
                return;
            }

            Succeeded = true;
            LogSendDone(_groupIndex, new NodeId(Receiver), Uuid, BytesSent, NowMs - started);
            Telemetry.EngineInstruments.RecordCheckpointTransfer(Telemetry.EngineInstruments.CheckpointsSent, _groupIndex, ok: true, BytesSent);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // Any failure of a state machine's checkpoint hooks or of reading its files ends this transfer
            // only; the thread must not take the process down.
            Cancel($"{ex.GetType().Name}: {ex.Message}");
        }
        finally
        {
            foreach (var machine in locked)
            {
                try
                {
                    machine.UnlockCheckpointState();
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    LogUnlockFailed(_groupIndex, machine.SmId, ex);
                }
            }

            if (!Succeeded && _abortReason is { } reason)
            {
                LogSendFailed(_groupIndex, new NodeId(Receiver), Uuid, reason);
                Telemetry.EngineInstruments.RecordCheckpointTransfer(Telemetry.EngineInstruments.CheckpointsSent, _groupIndex, ok: false, BytesSent);
            }

            _finished(this);
        }
    }

    private bool SendMachine(IStateMachine machine)
    {
        var state = machine.GetCheckpointState(_groupIndex);
        if (state is null || string.IsNullOrEmpty(state.Directory))
        {
            return true;
        }

        var machineCheckpoint = machine.GetCheckpointInstanceId(_groupIndex);
        var buffer = new byte[ChunkSize];
        foreach (var relative in state.Files)
        {
            var path = Path.Combine(state.Directory, relative);
            using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
            ulong offset = 0;
            do
            {
                var read = file.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
                var chunk = buffer.AsSpan(0, read);
                var message = new CheckpointMsg
                {
                    Flag = (int)CheckpointSendFileFlag.Ing,
                    CheckpointInstanceID = machineCheckpoint,
                    Checksum = SkipCrc32.Compute(0, chunk, SkipCrc32.ValueSkip),
                    FilePath = relative.Replace('\\', '/'),
                    SMID = machine.SmId,
                    Offset = offset,
                    Buffer = ByteString.CopyFrom(chunk),
                };
                if (!Send(message))
                {
                    return false;
                }

                offset += (ulong)read;
                BytesSent += read;
            }
            while (file.Position < file.Length);
        }

        return true;
    }

    /// <summary>Sends the next message once the window allows it.</summary>
    private bool Send(CheckpointMsg message)
    {
        if (!WaitForAcks(AckLead))
        {
            return false;
        }

        message.MsgType = (int)CheckpointMsgType.SendFile;
        message.NodeID = _myNodeId;
        message.UUID = Uuid;
        message.Sequence = _sequence;
        if (!_transport.Send(new NodeId(Receiver), FrameCodec.Encode(_groupIndex, _gid, message), TransportKind.Tcp))
        {
            Cancel("the transport refused the message (queue full or stopped)");
            return false;
        }

        _sequence++;
        return true;
    }

    /// <summary>Waits until at most <paramref name="lead"/> sent messages are unacknowledged.</summary>
    private bool WaitForAcks(int lead)
    {
        lock (_gate)
        {
            while (true)
            {
                if (_abortReason is not null)
                {
                    return false;
                }

                var unacked = (long)_sequence - (_anyAck ? (long)_ackedSequence + 1 : 0);
                if (unacked <= lead)
                {
                    return true;
                }

                var left = _lastAckMs + AckTimeoutMs - NowMs;
                if (left <= 0)
                {
                    _abortReason = $"no acknowledgement for {AckTimeoutMs} ms";
                    return false;
                }

                Monitor.Wait(_gate, (int)Math.Min(left, 1000));
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group}: state machine {SmId} failed to unlock its checkpoint.")]
    private partial void LogUnlockFailed(int group, int smId, Exception ex);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: node {Peer} asked for a checkpoint but no state machine could lock one.")]
    private partial void LogNothingToSend(int group, NodeId peer);

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: sending checkpoint {Checkpoint} to node {Peer} (uuid {Uuid}).")]
    private partial void LogSendStarted(int group, NodeId peer, ulong uuid, ulong checkpoint);

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: checkpoint sent to node {Peer} (uuid {Uuid}): {Bytes} bytes in {ElapsedMs} ms.")]
    private partial void LogSendDone(int group, NodeId peer, ulong uuid, long bytes, long elapsedMs);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: checkpoint transfer to node {Peer} (uuid {Uuid}) abandoned: {Reason}. The node asks again.")]
    private partial void LogSendFailed(int group, NodeId peer, ulong uuid, string reason);
}
