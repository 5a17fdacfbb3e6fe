using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;

namespace Orleans.Paxos.Engine.Groups;

/// <summary>
/// Master election (PhxPaxos <c>MasterMgr</c>), run by the group's loop timers instead of a thread:
/// the master renews its lease about four times per lease; others try to take over once it expired.
/// </summary>
internal sealed partial class PaxosGroup
{
    private long _masterTimerId;
    private long _noCandidacyUntilMs;

    /// <summary>Raised on the loop thread when the master changes: (master or null, version).</summary>
    public event Action<NodeId, ulong>? MasterChanged;

    /// <summary>Gives up mastership promptly: the lease is handed back through the log. Thread-safe.</summary>
    public void DropMaster() => _loop.Post(new LoopAction(() =>
    {
        if (!IsMe(Master.Get().Node))
        {
            return;
        }

        // Stay out of the next election so that another node takes over.
        _noCandidacyUntilMs = _loop.NowMs + _settings.MasterLeaseMs;
        var (value, context) = Master.CreateOperation(0, _settings.MasterLeaseMs);
        EnqueueInternal(ReservedSmIds.Master, value, context);
        LogDropMaster(Index);
    }));

    /// <summary>Sets the lease (at least 1000 ms); a master renews with it at once. Thread-safe.</summary>
    public void SetMasterLease(int leaseMs) => _loop.Post(new LoopAction(() =>
    {
        _settings.MasterLeaseMs = Math.Max(1000, leaseMs);
        if (_settings.UseMaster && IsMe(Master.Get().Node))
        {
            ArmMasterTimer(0);
        }
    }));

    private bool IsMe(NodeId node) => node.Value == _settings.MyNodeId;

    private void ArmMasterTimer(int delayMs)
    {
        RemoveTimer(_masterTimerId);
        _masterTimerId = AddTimer(delayMs, TimerKind.Master);
    }

    private void OnMasterTimer(long timerId)
    {
        if (timerId != _masterTimerId)
        {
            return;
        }

        _masterTimerId = 0;
        TryBeMaster();

        // As PhxPaxos: renew at a random point around a quarter of the lease.
        var x = Math.Max(2, (_settings.MasterLeaseMs - 100) / 4);
        ArmMasterTimer((x / 2) + _random.Next(x));
    }

    private void TryBeMaster()
    {
        if (!_settings.UseMaster || _stoppedReason is not null || !IsMember || _loop.NowMs < _noCandidacyUntilMs)
        {
            return;
        }

        var current = Master.Get();
        if (!current.Node.IsNull && !IsMe(current.Node))
        {
            return;
        }

        var (value, context) = Master.CreateOperation(_settings.MyNodeId, _settings.MasterLeaseMs);
        EnqueueInternal(ReservedSmIds.Master, value, context);
    }

    private void OnMasterChanged(NodeId master, ulong version)
    {
        MasterChanged?.Invoke(master, version);

        // The lease was handed back: candidates need not wait for their next renewal round.
        if (master.IsNull && _settings.UseMaster && _loop.NowMs >= _noCandidacyUntilMs)
        {
            ArmMasterTimer(_random.Next(0, 50));
        }
    }

    /// <summary>Queues a proposal made by the group itself (master lease, cluster id).</summary>
    private void EnqueueInternal(int smId, byte[] value, StateMachineContext context) =>
        TryEnqueueProposal(new PendingProposal(smId, value, context, explicitBatch: false, _loop.NowMs));

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: this node drops mastership.")]
    private partial void LogDropMaster(int group);
}
