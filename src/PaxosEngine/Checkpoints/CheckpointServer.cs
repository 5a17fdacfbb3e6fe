using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Checkpoints;

/// <summary>What the checkpoint server needs from its group beyond <see cref="IRoleHost"/>.</summary>
internal interface ICheckpointServerHost : IRoleHost
{
    /// <summary>Whether a message from <paramref name="nodeId"/> may be taken (a member, or any node while the cluster id is unknown).</summary>
    bool IsValidSender(ulong nodeId);
}

/// <summary>
/// Serves this group's checkpoint to a node whose needed log was cleaned (PhxPaxos <c>Learner</c>'s
/// <c>OnAskforCheckpoint</c>): starts one <see cref="CheckpointSender"/> thread at a time, and keeps the log
/// cleaner away while it sends and for a grace period after, so that the receiver can learn what follows.
/// </summary>
/// <remarks>
/// Owned by the group's loop thread; <see cref="IsSending"/>, <see cref="MayCleanLog"/> and
/// <see cref="CancelSend"/> may be used from any thread (the cleaner's, the node's).
/// </remarks>
internal sealed partial class CheckpointServer
{
    /// <summary>After sending a checkpoint the log is kept this long, so that the receiver can learn what follows it.</summary>
    private const int CleanerGraceAfterSendMs = 30_000;

    private readonly ICheckpointServerHost _host;
    private readonly GroupSettings _settings;
    private readonly StateMachineRegistry _stateMachines;
    private readonly ITransport _transport;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private CheckpointSender? _checkpointSender;
    private PaxosMsg? _pendingCheckpointAsk;
    private long _cleanerResumeAtMs;
    private int _checkpointSending;

    public CheckpointServer(ICheckpointServerHost host, GroupSettings settings, StateMachineRegistry stateMachines, ITransport transport, TimeProvider time, ILogger logger)
    {
        _host = host;
        _settings = settings;
        _stateMachines = stateMachines;
        _transport = transport;
        _time = time;
        _logger = logger;
    }

    /// <summary>A checkpoint is being sent. Thread-safe.</summary>
    public bool IsSending => Volatile.Read(ref _checkpointSending) != 0;

    /// <summary>False while a checkpoint is sent and for a grace period after. Thread-safe.</summary>
    public bool MayCleanLog =>
        Volatile.Read(ref _checkpointSending) == 0 && _host.NowMs >= Interlocked.Read(ref _cleanerResumeAtMs);

    /// <summary>A node asks for this group's checkpoint.</summary>
    public void OnAskForCheckpoint(PaxosMsg message)
    {
        if (!_host.IsValidSender(message.NodeID) || message.NodeID == _settings.MyNodeId)
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

        var checkpoint = _stateMachines.GetCheckpointInstanceId();
        var machines = UserMachines();
        if (checkpoint == StateMachineCheckpoint.None || machines.Count == 0)
        {
            LogNoCheckpointToSend(_host.GroupIndex, new NodeId(message.NodeID));
            return;
        }

        // The checkpoint id is read before the state machines lock theirs, so the files hold at least
        // everything up to it; the receiver continues after what it actually loaded.
        Volatile.Write(ref _checkpointSending, 1);
        var sender = new CheckpointSender(_host.GroupIndex, _settings.MyNodeId, message.NodeID, _host.Gid, checkpoint, machines, _transport, _time, _logger, OnCheckpointSenderFinished);
        _checkpointSender = sender;
        sender.Start();
    }

    /// <summary>An acknowledgement of the transfer being sent.</summary>
    public void OnAck(CheckpointMsg message) => _checkpointSender?.OnAck(message);

    /// <summary>Ends a checkpoint transfer being sent and waits for its thread. Thread-safe; used when the node stops.</summary>
    public void CancelSend(string reason)
    {
        var sender = Volatile.Read(ref _checkpointSender);
        if (sender is not null)
        {
            sender.Cancel(reason);
            sender.Join(TimeSpan.FromSeconds(10));
        }
    }

    /// <summary>Runs on the sender's thread when it ends.</summary>
    private void OnCheckpointSenderFinished(CheckpointSender sender)
    {
        if (sender.HasBegun)
        {
            Interlocked.Exchange(ref _cleanerResumeAtMs, _host.NowMs + CleanerGraceAfterSendMs);
        }

        Volatile.Write(ref _checkpointSending, 0);
        try
        {
            _host.Post(() => ForgetCheckpointSender(sender));
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
        if (_pendingCheckpointAsk is { } ask && !_host.IsStopped)
        {
            _pendingCheckpointAsk = null;
            OnAskForCheckpoint(ask);
        }
    }

    private List<IStateMachine> UserMachines()
    {
        var list = new List<IStateMachine>();
        foreach (var m in _stateMachines.Machines)
        {
            if (!StateMachineRegistry.IsBuiltIn(m.SmId))
            {
                list.Add(m);
            }
        }

        return list;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: node {Peer} asked for a checkpoint but no state machine here has one.")]
    private partial void LogNoCheckpointToSend(int group, NodeId peer);
}
