using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;

namespace Orleans.Paxos.Engine.Consensus;

/// <summary>What master election needs from its group beyond <see cref="IRoleHost"/>.</summary>
internal interface IMasterElectionHost : IRoleHost
{
    /// <summary>Whether this node is in the group's membership. Thread-safe.</summary>
    bool IsSelfMember { get; }

    /// <summary>Queues a proposal made by the group itself; false when it was refused (and completed).</summary>
    bool TryEnqueueProposal(PendingProposal proposal);
}

/// <summary>
/// Master election (PhxPaxos <c>MasterMgr</c>), run by the group's loop timers instead of a thread:
/// the master renews its lease about four times per lease; others try to take over once it expired.
/// The lease itself is kept by <see cref="MasterStateMachine"/>, which executes the proposals made here.
/// </summary>
/// <remarks>
/// <see cref="DropMaster"/> and <see cref="SetMasterLease"/> are thread-safe (they post to the loop);
/// everything else runs on the group's loop thread.
/// </remarks>
internal sealed partial class MasterElection
{
    private readonly IMasterElectionHost _host;
    private readonly GroupSettings _settings;
    private readonly MasterStateMachine _master;
    private readonly Random _random;
    private readonly ILogger _logger;
    private long _masterTimerId;
    private long _noCandidacyUntilMs;

    public MasterElection(IMasterElectionHost host, GroupSettings settings, MasterStateMachine master, Random random, ILogger logger)
    {
        _host = host;
        _settings = settings;
        _master = master;
        _random = random;
        _logger = logger;
    }

    /// <summary>Arms the first election round when the group uses a master; loop thread, at start.</summary>
    public void OnLoopStarted()
    {
        if (_settings.UseMaster)
        {
            ArmMasterTimer(_random.Next(0, 50));
        }
    }

    /// <summary>Gives up mastership promptly: the lease is handed back through the log. Thread-safe.</summary>
    public void DropMaster() => _host.Post(() =>
    {
        if (!IsMe(_master.Get().Node))
        {
            return;
        }

        // Stay out of the next election so that another node takes over.
        _noCandidacyUntilMs = _host.NowMs + _settings.MasterLeaseMs;
        var (value, context) = _master.CreateOperation(0, _settings.MasterLeaseMs);
        EnqueueInternal(ReservedSmIds.Master, value, context);
        LogDropMaster(_host.GroupIndex);
    });

    /// <summary>Sets the lease (at least 1000 ms); a master renews with it at once. Thread-safe.</summary>
    public void SetMasterLease(int leaseMs) => _host.Post(() =>
    {
        _settings.MasterLeaseMs = Math.Max(1000, leaseMs);
        if (_settings.UseMaster && IsMe(_master.Get().Node))
        {
            ArmMasterTimer(0);
        }
    });

    /// <summary>The master timer fired: try to become (or stay) master, then arm the next round.</summary>
    public void OnTimer(long timerId)
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

    /// <summary>The master changed (after the group told its listeners).</summary>
    public void OnMasterChanged(NodeId master)
    {
        // The lease was handed back: candidates need not wait for their next renewal round.
        if (master.IsNull && _settings.UseMaster && _host.NowMs >= _noCandidacyUntilMs)
        {
            ArmMasterTimer(_random.Next(0, 50));
        }
    }

    private bool IsMe(NodeId node) => node.Value == _settings.MyNodeId;

    private void ArmMasterTimer(int delayMs)
    {
        _host.RemoveTimer(_masterTimerId);
        _masterTimerId = _host.AddTimer(delayMs, TimerKind.Master);
    }

    private void TryBeMaster()
    {
        if (!_settings.UseMaster || _host.IsStopped || !_host.IsSelfMember || _host.NowMs < _noCandidacyUntilMs)
        {
            return;
        }

        var current = _master.Get();
        if (!current.Node.IsNull && !IsMe(current.Node))
        {
            return;
        }

        var (value, context) = _master.CreateOperation(_settings.MyNodeId, _settings.MasterLeaseMs);
        EnqueueInternal(ReservedSmIds.Master, value, context);
    }

    /// <summary>Queues a proposal made by the group itself (master lease).</summary>
    private void EnqueueInternal(int smId, byte[] value, StateMachineContext context) =>
        _host.TryEnqueueProposal(new PendingProposal(smId, value, context, explicitBatch: false, _host.NowMs));

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: this node drops mastership.")]
    private partial void LogDropMaster(int group);
}
