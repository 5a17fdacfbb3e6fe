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
/// One Paxos group on one node (PhxPaxos <c>Group</c> + <c>Instance</c>): it owns the group's roles and
/// state machines, routes messages and timers to the roles, and is the host each role reaches through
/// its own narrow interface. It keeps what ties the roles together: the current instance's checksum
/// chain, the acceptor's persist-then-reply path, the retry queue, and execution of a learned value.
/// Owned by one <see cref="GroupLoop"/> thread: every method except the ones documented as thread-safe
/// runs there, and none takes a lock.
/// </summary>
/// <remarks>
/// The roles: <see cref="Acceptor"/>, <see cref="Proposer"/>, <see cref="Learner"/> and its
/// <see cref="LearnerSender"/>, <see cref="Committer"/>, <see cref="MasterElection"/>,
/// <see cref="VotingGateKeeper"/>, and for checkpoints <see cref="CheckpointInstaller"/>,
/// <see cref="CheckpointServer"/> and <see cref="Replayer"/>. See docs/architecture.md.
/// </remarks>
internal sealed partial class PaxosGroup :
    IProposerHost,
    ICommitterHost,
    IMasterElectionHost,
    ILearnerHost,
    IVotingHost,
    ICheckpointInstallerHost,
    ICheckpointServerHost,
    IReplayerHost,
    ICleanableGroup,
    ITimerTarget
{
    private readonly GroupSettings _settings;
    private readonly ILogStorage _storage;
    private readonly ITransport _transport;
    private readonly GroupLoop _loop;
    private readonly ILogger _logger;
    private readonly Acceptor _acceptor;
    private readonly Proposer _proposer;
    private readonly Committer _committer;
    private readonly MasterElection _election;
    private readonly Learner _learner;
    private readonly LearnerSender _learnerSender;
    private readonly VotingGateKeeper _voting;
    private readonly CheckpointInstaller _installer;
    private readonly CheckpointServer _checkpointServer;
    private readonly Replayer _replayer;
    private readonly Random _random;
    private readonly Queue<PaxosMsg> _retryQueue = new();
    private List<ulong> _members;
    private uint _lastChecksum;
    private ulong _chosenByMeInstance = ulong.MaxValue;
    private ulong _acceptSkippedInstance = ulong.MaxValue;
    private ulong _executeFrom;
    private Ballot _acceptSkippedBallot;
    private int _writesSinceSync;
    private int _inboundCount;
    private long _nowPublished;
    private long _minChosenPublished;
    private volatile string? _stoppedReason;

    public PaxosGroup(GroupSettings settings, ILogStorage storage, ITransport transport, GroupLoop loop, ILogger logger)
    {
        _settings = settings;
        _storage = storage;
        _transport = transport;
        _loop = loop;
        loop.AddGroup();
        _logger = logger;
        _acceptor = new Acceptor(settings.MyNodeId);
        _proposer = new Proposer(this, settings.Timeouts);
        _committer = new Committer(this, settings);
        _random = new Random(unchecked((int)(settings.MyNodeId ^ (ulong)settings.GroupIndex ^ (ulong)loop.Time.GetTimestamp())));
        StateMachines = new StateMachineRegistry(settings.GroupIndex, logger);
        Membership = new SystemVariablesStateMachine(settings.GroupIndex, storage, settings.Members, logger);
        Master = new MasterStateMachine(settings.GroupIndex, settings.MyNodeId, storage, loop.Time, logger);
        _election = new MasterElection(this, settings, Master, _random, logger);
        _learnerSender = new LearnerSender(this, settings, logger);
        _learner = new Learner(this, settings, _acceptor, storage, _learnerSender, Membership, Master, _random, logger);
        _voting = new VotingGateKeeper(this, settings, _acceptor, storage, Membership, Master, new VotingGate(_random), logger);
        _installer = new CheckpointInstaller(this, settings, storage, StateMachines, logger);
        _checkpointServer = new CheckpointServer(this, settings, StateMachines, transport, loop.Time, logger);
        _replayer = new Replayer(this, settings.Checkpoints, StateMachines, logger);
        StateMachines.AddBuiltIn(Membership);
        StateMachines.AddBuiltIn(Master);
        _members = MemberIds(Membership.Current);
        Gid = Membership.Current.Gid;
        Membership.Changed += OnMembershipChanged;
        Master.MasterChanged += OnMasterChanged;
    }

    /// <summary>The built-in membership state machine of this group.</summary>
    public SystemVariablesStateMachine Membership { get; }

    /// <summary>The built-in master-election state machine of this group.</summary>
    public MasterStateMachine Master { get; }

    /// <summary>Whether this node is in the group's membership. Thread-safe.</summary>
    public bool IsMember => Membership.Current.Members.Contains(new NodeId(_settings.MyNodeId));

    /// <summary>The group's index.</summary>
    public int Index => _settings.GroupIndex;

    /// <summary>The state of the voting gate. Thread-safe (a snapshot).</summary>
    public VotingState VotingState => _voting.State;

    /// <summary>Why the group does not vote, or null while it votes. Thread-safe (a snapshot).</summary>
    public string? NotVotingReason => _voting.Reason;

    /// <summary>The state machines of this group.</summary>
    public StateMachineRegistry StateMachines { get; }

    /// <summary>The cluster id this group stamps on its frames (0 until membership is managed).</summary>
    public ulong Gid { get; private set; }

    /// <summary>The instance being decided; every lower one is chosen and executed here. Thread-safe.</summary>
    public ulong NowInstanceId => (ulong)Volatile.Read(ref _nowPublished);

    /// <summary>The lowest instance still in the log. Thread-safe.</summary>
    public ulong MinChosenInstanceId => (ulong)Volatile.Read(ref _minChosenPublished);

    /// <summary>Why the group stopped, or null while it runs. Thread-safe.</summary>
    public string? StoppedReason => _stoppedReason;

    /// <summary>Number of proposals waiting or in flight. Thread-safe.</summary>
    public int WaitingProposals => _committer.WaitingProposals;

    /// <summary>The highest instance id seen from a peer (learner's view); may be slightly stale. Thread-safe.</summary>
    public ulong HighestSeenInstanceId => _learner.HighestSeenInstanceId;

    /// <summary>Messages received and waiting for the loop thread. Thread-safe.</summary>
    public int InboundQueueDepth => Volatile.Read(ref _inboundCount);

    /// <summary>Checkpoints installed in place since start. Thread-safe.</summary>
    public long CheckpointsInstalled => _installer.CheckpointsInstalled;

    /// <summary>Raised on the loop thread after each instance is executed: (instance, packed value).</summary>
    public event Action<ulong, ByteString>? Chosen;

    /// <summary>Whether the log is written with fsync (PhxPaxos <c>SetLogSync</c>). Thread-safe.</summary>
    public bool Sync
    {
        get => _settings.Sync;
        set => _settings.Sync = value;
    }

    /// <inheritdoc />
    public int Quorum => (_members.Count / 2) + 1;

    /// <inheritdoc />
    public int MemberCount => _members.Count;

    /// <inheritdoc />
    public uint LastChecksum => _lastChecksum;

    private ulong Now => _acceptor.InstanceId;

    /// <summary>This node only learns: it follows a member and never proposes or votes.</summary>
    private bool IsFollower => _settings.FollowToNodeId != 0;

    /// <summary>
    /// Restores the group from its log and replays chosen values into the state machines after their
    /// checkpoint. Runs before the loop starts, on the starting thread.
    /// </summary>
    public void Initialize()
    {
        var minChosen = _storage.GetMinChosenInstanceId(Index);
        var max = _storage.GetMaxInstanceId(Index);
        if (max is { } maxInstance)
        {
            var record = ReadRecord(maxInstance)
                ?? throw new LogStorageException($"Group {Index}: the log reports instance {maxInstance} as its last but cannot read it.");
            _acceptor.Restore(record);
        }
        else
        {
            _acceptor.InstanceId = minChosen;
        }

        var checkpoint = StateMachines.GetCheckpointInstanceId();
        _voting.DecideAtStart(max, minChosen, checkpoint);
        if (_storage.WasIndexRebuilt(Index) && Membership.Current.Version == ulong.MaxValue && minChosen == 0)
        {
            RecoverSystemVariablesFromLog();
        }

        var replayFrom = checkpoint == StateMachineCheckpoint.None ? 0 : checkpoint + 1;
        if (replayFrom < Now)
        {
            if (replayFrom < minChosen)
            {
                throw new LogStorageException(
                    $"Group {Index}: the state machines need instances from {replayFrom} but the log starts at {minChosen}; " +
                    "their checkpoint is older than the cleaned log. Restore a newer checkpoint or clear this group's folder to fetch one from a peer.");
            }

            for (var i = replayFrom; i < Now; i++)
            {
                var record = ReadRecord(i)
                    ?? throw new LogStorageException($"Group {Index}: instance {i} is missing from the log; it is needed to replay the state machines up to {Now}.");
                if (!StateMachines.Execute(i, record.AcceptedValue, null))
                {
                    throw new InvalidOperationException($"Group {Index}: a state machine failed to execute instance {i} during start-up replay.");
                }
            }
        }
        else if (replayFrom > Now && max is not null)
        {
            // The state machines executed instances the log no longer holds: learned records are written without
            // waiting for an fsync (the value is chosen and held by a majority), so a crash can take them while a state
            // machine's own store kept their effect. Start where the log ends and learn those instances again, from
            // the peers or by choosing them again (accepts were durable before they were answered), without executing
            // them twice. Jumping to the checkpoint instead would strand peers that never learned them: nobody could
            // serve them, and there may be no checkpoint to send.
            if (replayFrom > max.Value + 1)
            {
                LogLogBehindCheckpoint(Index, max.Value, checkpoint);
            }

            _executeFrom = replayFrom;
        }
        else if (replayFrom > Now)
        {
            // No log at all behind the state machines' checkpoint (its install was cut short, or the log was lost):
            // continue after the checkpoint; what came before is not served from here.
            _acceptor.MoveTo(replayFrom);
            _storage.SetMinChosenInstanceId(Index, replayFrom);
            minChosen = replayFrom;
        }

        _proposer.InstanceId = Now;
        _proposer.ProposalId = _acceptor.Promised.ProposalId + 1;
        if (!_voting.IsVoting)
        {
            // This node lost (or may have lost) durable state, so it cannot know which ballots its earlier life
            // used; one of them may still be in flight or held in a peer's retry queue. Start above any of them.
            _proposer.ProposalId = Math.Max(_proposer.ProposalId, FreshProposalIdFloor(_loop.Time));
        }
        _lastChecksum = Now == 0 || Now <= minChosen ? 0 : ReadRecord(Now - 1)?.Checksum ?? 0;
        PublishProgress(minChosen);
        LogStarted(Index, Now, minChosen, checkpoint == StateMachineCheckpoint.None ? -1 : (long)checkpoint);
    }

    /// <summary>
    /// The lowest proposal id a node that lost its state may use: milliseconds since 2020 times 1024. Proposal ids
    /// grow by one per rejected or superseded round, which takes a network round trip, so no earlier life of this
    /// node can have reached this floor unless it ran 1024 rounds in one millisecond or the clock went back.
    /// PhxPaxos restarts at the last promise plus one, which a wiped disk no longer holds: the same ballot could then
    /// carry two values in one instance, and a commit naming it would teach a peer the wrong one.
    /// </summary>
    internal static ulong FreshProposalIdFloor(TimeProvider time)
    {
        var ms = (time.GetUtcNow() - new DateTimeOffset(2020, 1, 1, 0, 0, 0, TimeSpan.Zero)).TotalMilliseconds;
        return ms <= 0 ? 1 : (ulong)ms << 10;
    }

    /// <summary>Arms the group's timers; runs on the loop thread once the loop started.</summary>
    public void OnLoopStarted()
    {
        _learner.ArmAskForLearnTimer();
        _voting.OnLoopStarted();
        _replayer.OnLoopStarted();
        _election.OnLoopStarted();
    }

    private static List<ulong> MemberIds(Membership membership)
    {
        var ids = new List<ulong>(membership.Members.Count);
        foreach (var m in membership.Members)
        {
            ids.Add(m.Value);
        }

        return ids;
    }

    private void OnMembershipChanged(Membership membership)
    {
        _members = MemberIds(membership);
        Gid = membership.Gid;
        MembershipChanged?.Invoke(membership);
    }

    /// <summary>Raised on the loop thread when the master changes: (master or null, version).</summary>
    public event Action<NodeId, ulong>? MasterChanged;

    /// <summary>Gives up mastership promptly: the lease is handed back through the log. Thread-safe.</summary>
    public void DropMaster() => _election.DropMaster();

    /// <summary>Sets the lease (at least 1000 ms); a master renews with it at once. Thread-safe.</summary>
    public void SetMasterLease(int leaseMs) => _election.SetMasterLease(leaseMs);

    private void OnMasterChanged(NodeId master, ulong version)
    {
        MasterChanged?.Invoke(master, version);
        _election.OnMasterChanged(master);
    }

    /// <summary>Raised on the loop thread after the membership changed.</summary>
    public event Action<Membership>? MembershipChanged;

    /// <summary>Accepts an inbound message for the loop; drops it when the group's queue is full. Thread-safe.</summary>
    public bool TryEnqueue(PaxosMsg message, ulong headerGid) => TryEnqueue(message, headerGid, inlineSource: null);

    /// <summary>
    /// Queues a received Paxos message, or handles it at once on the calling thread when <paramref name="inlineSource"/>
    /// is given and the group's loop sleeps with nothing queued (see <see cref="GroupLoop.TryRunInline"/>).
    /// Returns false when the inbound queue is full (the message is dropped).
    /// </summary>
    internal bool TryEnqueue(PaxosMsg message, ulong headerGid, IInlineSource? inlineSource)
    {
        if (Interlocked.Increment(ref _inboundCount) > _settings.MaxInboundQueue)
        {
            Interlocked.Decrement(ref _inboundCount);
            return false;
        }

        var work = new InboundMessage(this, message, headerGid, counted: true);
        if (inlineSource is null || !_loop.TryRunInline(work, inlineSource))
        {
            _loop.Post(work);
        }

        return true;
    }

    /// <summary>Queues a proposal from any thread; returns false (and completes it) when too many wait.</summary>
    public bool TryEnqueueProposal(PendingProposal proposal) => _committer.TryEnqueueProposal(proposal);

    /// <inheritdoc />
    public void OnTimer(int kind, long timerId)
    {
        if (_stoppedReason is not null)
        {
            return;
        }

        switch ((TimerKind)kind)
        {
            case TimerKind.PrepareTimeout:
            case TimerKind.AcceptTimeout:
                _proposer.OnTimeout((TimerKind)kind, timerId);
                break;
            case TimerKind.AskForLearn:
                _learner.OnAskForLearnTimer(timerId);
                break;
            case TimerKind.LearnerSender:
                _learnerSender.OnTimer(timerId);
                break;
            case TimerKind.BatchDelay:
            case TimerKind.BatchGather:
            case TimerKind.ProposalTimeouts:
                _committer.OnTimer((TimerKind)kind, timerId);
                break;
            case TimerKind.Master:
                _election.OnTimer(timerId);
                break;
            case TimerKind.VotingGate:
                _voting.OnTimer(timerId);
                break;
            case TimerKind.CheckpointReceive:
                _installer.OnTimer(timerId);
                break;
            case TimerKind.CheckpointReplayer:
                _replayer.OnTimer(timerId);
                break;
        }

        AfterWork();
    }

    /// <inheritdoc />
    public long AddTimer(int delayMs, TimerKind kind) => _loop.AddTimer(delayMs, this, (int)kind);

    /// <inheritdoc />
    public void RemoveTimer(long timerId) => _loop.RemoveTimer(timerId);

    /// <summary>Stops the group for good: it drops messages, fails proposals and logs why. Loop thread.</summary>
    public void Stop(string reason, Exception? cause = null)
    {
        if (_stoppedReason is not null)
        {
            return;
        }

        _stoppedReason = reason;
        _proposer.Abandon();
        _committer.FailAllProposals(ProposeResult.GroupStopped);
        LogGroupStopped(Index, reason, cause);
    }

    /// <summary>Fails waiting proposals because the node is stopping. Loop thread.</summary>
    public void Shutdown()
    {
        _stoppedReason ??= "the node stopped";
        _proposer.Abandon();
        _committer.FailAllProposals(ProposeResult.NodeStopped);
    }

    /// <summary>Accepts an inbound checkpoint message for the loop. Thread-safe.</summary>
    public void EnqueueCheckpointMessage(CheckpointMsg message, ulong headerGid) =>
        _loop.Post(new LoopAction(() => OnCheckpointMessage(message, headerGid)));

    /// <summary>Ends a checkpoint transfer being sent and waits for its thread. Thread-safe; used when the node stops.</summary>
    public void CancelCheckpointSend(string reason) => _checkpointServer.CancelSend(reason);

    /// <summary>
    /// The index that held the system variables was rebuilt: executes the membership values of the log again
    /// (it starts at instance 0 here), so the cluster id and members come back without a new cluster id.
    /// </summary>
    private void RecoverSystemVariablesFromLog()
    {
        for (var i = 0UL; i < Now; i++)
        {
            var record = ReadRecord(i);
            if (record is not null)
            {
                StateMachines.ExecuteOnly(Membership, i, record.AcceptedValue);
            }
        }

        LogSystemVariablesRecovered(Index, Membership.Current.Gid, Membership.Current.Version == ulong.MaxValue ? -1 : (long)Membership.Current.Version, Now);
    }

    private AcceptorStateData? ReadRecord(ulong instanceId)
    {
        var bytes = _storage.Get(Index, instanceId);
        return bytes is null ? null : AcceptorStateData.Parser.ParseFrom(bytes);
    }

    private AcceptorStateData? TryReadRecord(ulong instanceId)
    {
        try
        {
            return ReadRecord(instanceId);
        }
        catch (LogStorageException ex)
        {
            LogReadFailed(Index, instanceId, ex);
            return null;
        }
    }

    private void PublishProgress(ulong? minChosen = null)
    {
        Volatile.Write(ref _nowPublished, (long)Now);
        if (minChosen is { } m)
        {
            Volatile.Write(ref _minChosenPublished, (long)m);
        }
    }

    /// <summary>Called after every message and timer: replays retried messages and starts waiting proposals.</summary>
    private void AfterWork()
    {
        if (_stoppedReason is not null)
        {
            return;
        }

        DealWithRetryQueue();
        _committer.CheckNewValue();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: system variables recovered from the log after the index was rebuilt: gid {Gid}, version {Version} (log up to instance {Now}).")]
    private partial void LogSystemVariablesRecovered(int group, ulong gid, long version, ulong now);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: the log ends at instance {Last} but the state machines' checkpoint is {Checkpoint}: records learned after the last fsync were lost in a crash. The group learns those instances again without executing them twice.")]
    private partial void LogLogBehindCheckpoint(int group, ulong last, ulong checkpoint);

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group} started at instance {Now}, min chosen {MinChosen}, checkpoint {Checkpoint}.")]
    private partial void LogStarted(int group, ulong now, ulong minChosen, long checkpoint);

    [LoggerMessage(Level = LogLevel.Critical, Message = "Group {Group} STOPPED: {Reason}. It no longer takes part in consensus; other groups are unaffected. Fix the cause and restart the node.")]
    private partial void LogGroupStopped(int group, string reason, Exception? cause);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group}: reading instance {Instance} failed.")]
    private partial void LogReadFailed(int group, ulong instance, Exception ex);
}

/// <summary>A delegate run on a loop thread.</summary>
internal sealed class LoopAction(Action action) : ILoopWork
{
    public void Run() => action();
}
