using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Orleans.Paxos.Engine.Checkpoints;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Groups;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Node;

/// <summary>
/// A Paxos node (PhxPaxos <c>Node</c>): one network address, one storage root and 1..N independent
/// groups, each a replicated log with its own state machines. All public members are thread-safe.
/// </summary>
/// <remarks>
/// Lifecycle: construct, mount state machines with <see cref="AddStateMachine(int, IStateMachine)"/>,
/// <see cref="Start"/>, propose, then <see cref="Dispose"/>. The group logic runs on dedicated loop
/// threads; callers of <see cref="ProposeAsync(int, ReadOnlyMemory{byte}, StateMachineContext?, CancellationToken)"/>
/// wait without blocking a thread.
/// </remarks>
public sealed partial class PaxosNode : IFrameSink, IDisposable
{
    private readonly PaxosNodeOptions _options;
    private readonly ILogger _logger;
    private readonly ILoggerFactory _loggerFactory;
    private readonly TimeProvider _time;
    private readonly ITransport _transport;
    private readonly IInlineSource? _udpInlineSource;
    private readonly ILogStorage _storage;
    private readonly bool _ownsTransport;
    private readonly bool _ownsStorage;
    private readonly GroupLoop[] _loops;
    private readonly PaxosGroup[] _groups;
    private readonly int _maxFrameLength;
    private readonly ManualLoopDriver? _driver;
    private int _state; // 0 created, 1 started, 2 disposed

    /// <summary>Creates a node over the given transport and storage (or the built-in UDP/TCP transport and file storage when null).</summary>
    /// <param name="options">The node's options; validated here.</param>
    /// <param name="loggerFactory">Where logs go; none when null.</param>
    /// <param name="transport">A transport to use instead of the built-in one; the node does not dispose it.</param>
    /// <param name="storage">A log storage to use instead of the built-in one; the node does not dispose it.</param>
    /// <param name="timeProvider">The clock for timers; the system clock when null.</param>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    public PaxosNode(
        PaxosNodeOptions options,
        ILoggerFactory? loggerFactory = null,
        ITransport? transport = null,
        ILogStorage? storage = null,
        TimeProvider? timeProvider = null)
        : this(options, loggerFactory, transport, storage, timeProvider, driver: null)
    {
    }

    /// <summary>
    /// Creates a node whose loops are run by <paramref name="driver"/> on the caller's thread instead of on
    /// loop threads, and which starts no log cleaner: for deterministic simulation on fake time.
    /// </summary>
    internal PaxosNode(
        PaxosNodeOptions options,
        ILoggerFactory? loggerFactory,
        ITransport? transport,
        ILogStorage? storage,
        TimeProvider? timeProvider,
        ManualLoopDriver? driver)
    {
        ArgumentNullException.ThrowIfNull(options);
        _driver = driver;
        _options = options;
        var (me, members) = options.Validate();
        MyNodeId = me;
        _loggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        _logger = _loggerFactory.CreateLogger<PaxosNode>();
        _time = timeProvider ?? TimeProvider.System;
        _maxFrameLength = MaxFrameLength(options);

        _ownsStorage = storage is null;
        _storage = storage ?? DefaultComponents.CreateStorage(options, _loggerFactory);
        if (_storage.GroupCount < options.GroupCount)
        {
            throw new ArgumentException($"The log storage holds {_storage.GroupCount} groups; the node needs {options.GroupCount}.", nameof(storage));
        }

        _ownsTransport = transport is null;
        try
        {
            _transport = transport ?? DefaultComponents.CreateTransport(options, me, _loggerFactory);
            _udpInlineSource = _transport as IInlineSource;
        }
        catch
        {
            if (_ownsStorage)
            {
                _storage.Dispose();
            }

            throw;
        }

        var loopCount = options.LoopThreadCount > 0
            ? Math.Min(options.LoopThreadCount, options.GroupCount)
            : Math.Min(options.GroupCount, Math.Min(Environment.ProcessorCount, PaxosNodeOptions.DefaultMaxLoopThreads));
        _checkpoints = new CheckpointControl(options);
        _loops = new GroupLoop[loopCount];
        var sendBatching = _transport is NetworkTransport { HoldsSends: true } holding ? holding : null;
        if (_storage is FileLogStorage fileStorage)
        {
            fileStorage.CompletionBatching = sendBatching;
        }

        for (var i = 0; i < loopCount; i++)
        {
            var name = $"paxos-loop-{me.Port}-{i}";
            _loops[i] = driver is null
                ? new GroupLoop(name, _time, _loggerFactory.CreateLogger<GroupLoop>(), sendBatching, options.Sync)
                : driver.CreateLoop(name, _time, _loggerFactory.CreateLogger<GroupLoop>());
        }

        _groups = new PaxosGroup[options.GroupCount];
        var groupLogger = _loggerFactory.CreateLogger("Orleans.Paxos.Engine.Groups.PaxosGroup");
        for (var g = 0; g < options.GroupCount; g++)
        {
            var settings = new GroupSettings
            {
                GroupIndex = g,
                GroupCount = options.GroupCount,
                MyNodeId = me.Value,
                Members = members,
                UseMembership = options.UseMembership,
                FollowToNodeId = string.IsNullOrWhiteSpace(options.FollowTo) ? 0 : NodeId.Parse(options.FollowTo).Value,
                UseMaster = options.UseMaster && string.IsNullOrWhiteSpace(options.FollowTo),
                MasterLeaseMs = Math.Max(1000, (int)options.MasterLease.TotalMilliseconds),
                Sync = options.Sync,
                SyncInterval = options.SyncInterval,
                MaxValueSize = options.MaxValueSize,
                MaxWaitingProposals = options.MaxWaitingProposals,
                AutoBatch = options.AutoBatch,
                MaxBatchCount = options.MaxBatchCount,
                MaxBatchBytes = options.MaxBatchBytes,
                BatchFlushWhenIdle = options.BatchFlushWhenIdle,
                VoteWithEmptyLog = options.VoteWithEmptyLog,
                BatchCount = options.BatchCount,
                BatchDelayMs = (int)options.BatchDelay.TotalMilliseconds,
                MaxInboundQueue = (10_240 / options.GroupCount) + 1000,
                LearnerSendQps = options.LearnerSendQps,
                Checkpoints = _checkpoints,
                AskForLearnBaseMs = (int)options.AskForLearnInterval.TotalMilliseconds,
                AskForLearnJitterMs = Math.Max(1, (int)options.AskForLearnInterval.TotalMilliseconds / 5),
            };
            _groups[g] = new PaxosGroup(settings, _storage, _transport, _loops[g % loopCount], groupLogger);
        }
    }

    /// <summary>This node's id.</summary>
    public NodeId MyNodeId { get; }

    /// <summary>
    /// Builds the transport a node builds for itself when none is given (UDP and TCP on the node's port,
    /// sized from <paramref name="options"/>), with a <paramref name="peerFilter"/> for fault injection.
    /// Pass it to the constructor; the node disposes it once started.
    /// </summary>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    public static NetworkTransport CreateNetworkTransport(PaxosNodeOptions options, ILoggerFactory? loggerFactory = null, PeerFilter? peerFilter = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var (me, _) = options.Validate();
        return DefaultComponents.CreateTransport(options, me, loggerFactory ?? NullLoggerFactory.Instance, peerFilter);
    }

    /// <summary>Number of groups.</summary>
    public int GroupCount => _groups.Length;

    /// <summary>Raised by the group's loop (its thread, or the UDP receive thread while it owns the loop) after each instance is executed locally: (group, instance, packed value). Handlers must be quick and must not block.</summary>
    public event Action<int, ulong, ReadOnlyMemory<byte>>? InstanceExecuted;

    /// <summary>Mounts a state machine on one group. Call before <see cref="Start"/>. A second machine with the same id is ignored.</summary>
    public void AddStateMachine(int groupIndex, IStateMachine stateMachine)
    {
        EnsureNotStarted();
        GetGroup(groupIndex).StateMachines.Add(stateMachine);
    }

    /// <summary>Mounts a state machine on every group. Call before <see cref="Start"/>.</summary>
    public void AddStateMachine(IStateMachine stateMachine)
    {
        EnsureNotStarted();
        foreach (var g in _groups)
        {
            g.StateMachines.Add(stateMachine);
        }
    }

    /// <summary>
    /// Restores every group from its log (replaying state machines after their checkpoints), then
    /// starts the loops and the network.
    /// </summary>
    /// <exception cref="LogStorageException">A group's log cannot be restored; the message says what to do.</exception>
    public void Start()
    {
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0)
        {
            throw new InvalidOperationException("The node was already started or disposed.");
        }

        foreach (var g in _groups)
        {
            g.Initialize();
            var group = g;
            g.Chosen += (instance, value) => InstanceExecuted?.Invoke(group.Index, instance, value.Memory);
            g.MasterChanged += (master, version) => MasterChanged?.Invoke(group.Index, master, version);
            g.MembershipChanged += membership => MembershipChanged?.Invoke(group.Index, membership);
        }

        RegisterTelemetry();
        foreach (var loop in _loops)
        {
            loop.Start();
        }

        foreach (var g in _groups)
        {
            var group = g;
            _loops[g.Index % _loops.Length].Post(new LoopAction(group.OnLoopStarted));
        }

        _transport.Start(this);
        if (_driver is null)
        {
            StartLogCleaner();
        }

        LogNodeStarted(MyNodeId, _groups.Length, _loops.Length);
    }

    /// <summary>
    /// Proposes a value and waits until it is chosen and executed here, or fails. The value is packed
    /// with the context's state machine id (0 — no state machine — without a context, as PhxPaxos).
    /// </summary>
    /// <param name="groupIndex">The group.</param>
    /// <param name="value">The value; copied before this method returns.</param>
    /// <param name="context">Which state machine executes it, with input for it and room for its output.</param>
    /// <param name="cancellationToken">Stops waiting (the result is then <see cref="ProposeStatus.Timeout"/>).</param>
    /// <returns>The instance, the status and the local state machine's output.</returns>
    public Task<ProposeResult> ProposeAsync(int groupIndex, ReadOnlyMemory<byte> value, StateMachineContext? context = null, CancellationToken cancellationToken = default) =>
        Enqueue(groupIndex, context?.SmId ?? ReservedSmIds.None, value, context, explicitBatch: false, cancellationToken);

    /// <summary>Proposes a value for the state machine <paramref name="smId"/> without a context.</summary>
    public Task<ProposeResult> ProposeAsync(int groupIndex, int smId, ReadOnlyMemory<byte> value, CancellationToken cancellationToken = default) =>
        Enqueue(groupIndex, smId, value, null, explicitBatch: false, cancellationToken);

    /// <summary>
    /// Proposes a value to be merged with other callers' values into one instance, as PhxPaxos
    /// BatchPropose: the batch goes when <see cref="PaxosNodeOptions.BatchCount"/> values wait, their
    /// bytes reach <see cref="PaxosNodeOptions.MaxBatchBytes"/>, or the oldest waited
    /// <see cref="PaxosNodeOptions.BatchDelay"/>; with <see cref="PaxosNodeOptions.BatchFlushWhenIdle"/> the
    /// values go as soon as the group has no instance in flight (right after one of this node's batches was chosen,
    /// once its callers had up to a millisecond to come back). The result's <see cref="ProposeResult.BatchIndex"/> is
    /// the value's execution order within the instance.
    /// </summary>
    public Task<ProposeResult> BatchProposeAsync(int groupIndex, ReadOnlyMemory<byte> value, StateMachineContext? context = null, CancellationToken cancellationToken = default) =>
        Enqueue(groupIndex, context?.SmId ?? ReservedSmIds.None, value, context, explicitBatch: true, cancellationToken);

    /// <summary>Raised on a loop thread when a group's master changes (not on renewals): (group, master or null node, version).</summary>
    public event Action<int, NodeId, ulong>? MasterChanged;

    /// <summary>Raised on a loop thread when a group's membership changes: (group, new membership).</summary>
    public event Action<int, Membership>? MembershipChanged;

    /// <summary>The group's master whose lease has not expired on this node (null node when none), with the master version.</summary>
    public MasterInfo GetMaster(int groupIndex) => GetGroup(groupIndex).Master.Get();

    /// <summary>Whether this node holds the group's master lease.</summary>
    public bool IsMaster(int groupIndex) => GetMaster(groupIndex).Node == MyNodeId;

    /// <summary>Hands the group's master lease back at once so that another node takes over; this node stays out of the next election for one lease.</summary>
    public void DropMaster(int groupIndex) => GetGroup(groupIndex).DropMaster();

    /// <summary>Sets the group's master lease (at least 1 s; default 10 s). A current master renews with it at once.</summary>
    public void SetMasterLease(int groupIndex, TimeSpan lease) => GetGroup(groupIndex).SetMasterLease((int)lease.TotalMilliseconds);

    /// <summary>The group's membership as this node sees it.</summary>
    public Membership GetMembership(int groupIndex) => GetGroup(groupIndex).Membership.Current;

    /// <summary>Adds a member to a group through its log (requires <see cref="PaxosNodeOptions.UseMembership"/>).</summary>
    public Task<MembershipResult> AddMemberAsync(int groupIndex, NodeId node, CancellationToken cancellationToken = default)
    {
        var current = GetMembership(groupIndex);
        return current.Members.Contains(node)
            ? Task.FromResult(new MembershipResult(MembershipStatus.NodeExists, ProposeStatus.Ok, current.Version))
            : ChangeMembershipAsync(groupIndex, current, [.. current.Members, node], cancellationToken);
    }

    /// <summary>Removes a member from a group through its log; it stops counting toward majorities at the instance where the change is chosen.</summary>
    public Task<MembershipResult> RemoveMemberAsync(int groupIndex, NodeId node, CancellationToken cancellationToken = default)
    {
        var current = GetMembership(groupIndex);
        return !current.Members.Contains(node)
            ? Task.FromResult(new MembershipResult(MembershipStatus.NodeNotExists, ProposeStatus.Ok, current.Version))
            : ChangeMembershipAsync(groupIndex, current, [.. current.Members.Where(m => m != node)], cancellationToken);
    }

    /// <summary>Replaces member <paramref name="from"/> with <paramref name="to"/> in one change.</summary>
    public Task<MembershipResult> ChangeMemberAsync(int groupIndex, NodeId from, NodeId to, CancellationToken cancellationToken = default)
    {
        var current = GetMembership(groupIndex);
        if (!current.Members.Contains(from) && current.Members.Contains(to))
        {
            return Task.FromResult(new MembershipResult(MembershipStatus.NoChange, ProposeStatus.Ok, current.Version));
        }

        return ChangeMembershipAsync(groupIndex, current, [.. current.Members.Where(m => m != from && m != to), to], cancellationToken);
    }

    /// <summary>
    /// Adds (or with <paramref name="remove"/> removes) a node in every group of this node, one group
    /// after another, reporting each group's outcome as it completes.
    /// </summary>
    public async Task<IReadOnlyList<MembershipResult>> ChangeMemberInAllGroupsAsync(NodeId node, bool remove, IProgress<(int Group, MembershipResult Result)>? progress = null, CancellationToken cancellationToken = default)
    {
        var results = new List<MembershipResult>(_groups.Length);
        for (var g = 0; g < _groups.Length; g++)
        {
            var r = remove
                ? await RemoveMemberAsync(g, node, cancellationToken).ConfigureAwait(false)
                : await AddMemberAsync(g, node, cancellationToken).ConfigureAwait(false);
            results.Add(r);
            progress?.Report((g, r));
        }

        return results;
    }

    private async Task<MembershipResult> ChangeMembershipAsync(int groupIndex, Membership current, IReadOnlyList<NodeId> members, CancellationToken cancellationToken)
    {
        if (current.Gid == 0)
        {
            return new MembershipResult(MembershipStatus.NoGid, ProposeStatus.Ok, current.Version);
        }

        var group = GetGroup(groupIndex);
        var context = new StateMachineContext(ReservedSmIds.SystemVariables);
        var result = await Enqueue(groupIndex, ReservedSmIds.SystemVariables, group.Membership.ChangeValue(members), context, explicitBatch: false, cancellationToken).ConfigureAwait(false);
        var after = group.Membership.Current.Version;
        return result.IsOk
            ? new MembershipResult(context.Output is MembershipStatus s ? s : MembershipStatus.ProposeFailed, result.Status, after)
            : new MembershipResult(MembershipStatus.ProposeFailed, result.Status, after);
    }

    /// <summary>The instance being decided in a group; every lower one is chosen and executed here.</summary>
    public ulong GetNowInstanceId(int groupIndex) => GetGroup(groupIndex).NowInstanceId;

    /// <summary>The lowest instance still kept in a group's log.</summary>
    public ulong GetMinChosenInstanceId(int groupIndex) => GetGroup(groupIndex).MinChosenInstanceId;

    /// <summary>Why a group stopped (storage failure, checksum mismatch), or null while it runs.</summary>
    public string? GetGroupStoppedReason(int groupIndex) => GetGroup(groupIndex).StoppedReason;

    /// <summary>
    /// Whether a group's acceptor votes, and why not: a group that started with no log or with a rebuilt index
    /// learns from its peers and votes only once that is safe. Thread-safe.
    /// </summary>
    /// <returns>The state and, unless voting, the reason.</returns>
    public (VotingState State, string? Reason) GetGroupVotingState(int groupIndex)
    {
        var group = GetGroup(groupIndex);
        return (group.VotingState, group.NotVotingReason);
    }

    /// <summary>Turns fsync of a group's acceptor writes on or off at run time (PhxPaxos <c>SetLogSync</c>).</summary>
    public void SetLogSync(int groupIndex, bool sync) => GetGroup(groupIndex).Sync = sync;

    /// <summary>
    /// Reads the chosen value(s) of an instance: one entry, or a batch's entries, each with its state
    /// machine id (PhxPaxos <c>GetInstanceValue</c>).
    /// </summary>
    public InstanceValueResult GetInstanceValue(int groupIndex, ulong instanceId)
    {
        var group = GetGroup(groupIndex);
        if (instanceId >= group.NowInstanceId)
        {
            return new InstanceValueResult(InstanceValueStatus.NotChosenYet, []);
        }

        var bytes = instanceId < group.MinChosenInstanceId ? null : _storage.Get(groupIndex, instanceId);
        if (bytes is null)
        {
            return new InstanceValueResult(InstanceValueStatus.NotExist, []);
        }

        var record = AcceptorStateData.Parser.ParseFrom(bytes);
        return new InstanceValueResult(InstanceValueStatus.Ok, ValueCodec.Expand(record.AcceptedValue.Span));
    }

    /// <inheritdoc />
    void IFrameSink.OnFrame(ReadOnlySpan<byte> frame, TransportKind via)
    {
        var error = FrameCodec.TryDecode(frame, _maxFrameLength, out var decoded);
        if (error != FrameError.None)
        {
            CountInvalidFrame(Telemetry.EngineInstruments.FrameErrorName(error));
            LogBadFrame(MyNodeId, via, error, frame.Length);
            return;
        }

        if ((uint)decoded!.GroupIndex >= (uint)_groups.Length)
        {
            CountInvalidFrame("unknown_group");
            LogUnknownGroup(MyNodeId, decoded.GroupIndex);
            return;
        }

        // A datagram's receive thread may handle it itself when the group's loop sleeps and the thread is not saturated.
        var inlineSource = via == TransportKind.Udp ? _udpInlineSource : null;
        if (decoded.Paxos is { } paxos && !_groups[decoded.GroupIndex].TryEnqueue(paxos, decoded.Header.Gid, inlineSource))
        {
            LogQueueFull(decoded.GroupIndex);
            Telemetry.EngineInstruments.AddForGroup(Telemetry.EngineInstruments.InboundDropped, decoded.GroupIndex);
        }
        else if (decoded.Checkpoint is { } checkpoint)
        {
            _groups[decoded.GroupIndex].EnqueueCheckpointMessage(checkpoint, decoded.Header.Gid);
        }
    }

    /// <summary>Stops the network and the loops; waiting proposals complete with <see cref="ProposeStatus.NodeStopped"/>.</summary>
    public void Dispose()
    {
        var previous = Interlocked.Exchange(ref _state, 2);
        if (previous == 2)
        {
            return;
        }

        UnregisterTelemetry();
        if (_ownsTransport || previous == 1)
        {
            // The transport must stop delivering before the groups go away.
            _transport.Dispose();
        }

        if (previous == 1)
        {
            foreach (var g in _groups)
            {
                var group = g;
                _loops[g.Index % _loops.Length].Post(new LoopAction(group.Shutdown));
            }
        }

        StopCheckpointWork();
        foreach (var loop in _loops)
        {
            loop.Dispose();
            _driver?.Remove(loop);
        }

        if (previous == 1 && _driver is null)
        {
            // A loop's thread stops without running what is still queued, the Shutdown above among it: with the threads
            // gone, this thread owns the groups and fails what still waits (a second Shutdown of a group finds nothing).
            // Manual loops drop what they held, as a crash does: their proposals' outcome stays unknown.
            foreach (var g in _groups)
            {
                g.Shutdown();
            }
        }

        if (_ownsStorage)
        {
            _storage.Dispose();
        }

        LogNodeStopped(MyNodeId);
    }

    private async Task<ProposeResult> EnqueueCore(int groupIndex, int smId, ReadOnlyMemory<byte> value, StateMachineContext? context, bool explicitBatch, CancellationToken cancellationToken)
    {
        if ((uint)groupIndex >= (uint)_groups.Length)
        {
            return ProposeResult.InvalidGroup;
        }

        if (Volatile.Read(ref _state) != 1)
        {
            return ProposeResult.NodeStopped;
        }

        var group = _groups[groupIndex];
        var proposal = NewProposal(smId, value, context, explicitBatch);
        if (!group.TryEnqueueProposal(proposal) || !cancellationToken.CanBeCanceled)
        {
            // The group's loop completes overdue proposals itself: no timer per proposal.
            return await proposal.Completion.Task.ConfigureAwait(false);
        }

        await using var registration = cancellationToken.UnsafeRegister(
            static state => ((PendingProposal)state!).TryComplete(ProposeResult.Timeout), proposal).ConfigureAwait(false);
        return await proposal.Completion.Task.ConfigureAwait(false);
    }

    /// <summary>
    /// Queues a value for a group and returns its proposal, whose <see cref="PendingProposal.Completion"/> is
    /// completed by the group's loop itself: a caller that runs the loops (<see cref="ManualLoopDriver"/>) sees the
    /// outcome as soon as the step that decided it returns.
    /// </summary>
    internal PendingProposal SubmitProposal(int groupIndex, ReadOnlyMemory<byte> value, bool explicitBatch = false)
    {
        var group = GetGroup(groupIndex);
        var proposal = NewProposal(ReservedSmIds.None, value, context: null, explicitBatch);
        if (Volatile.Read(ref _state) != 1)
        {
            proposal.TryComplete(ProposeResult.NodeStopped);
        }
        else
        {
            group.TryEnqueueProposal(proposal);
        }

        return proposal;
    }

    private PendingProposal NewProposal(int smId, ReadOnlyMemory<byte> value, StateMachineContext? context, bool explicitBatch)
    {
        var nowMs = (long)_time.GetElapsedTime(0, _time.GetTimestamp()).TotalMilliseconds;
        var deadlineMs = _options.ProposeTimeout == Timeout.InfiniteTimeSpan ? long.MaxValue : nowMs + (long)_options.ProposeTimeout.TotalMilliseconds;
        return PendingProposal.CopyOf(smId, value.Span, context, explicitBatch, nowMs, deadlineMs, _options.AllowSynchronousContinuations);
    }

    /// <summary>Proposals of a group queued or in flight on this node (tests watch batches form).</summary>
    internal int GetWaitingProposals(int groupIndex) => GetGroup(groupIndex).WaitingProposals;

    private PaxosGroup GetGroup(int groupIndex)
    {
        if ((uint)groupIndex >= (uint)_groups.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(groupIndex), groupIndex, $"This node has groups 0..{_groups.Length - 1}.");
        }

        return _groups[groupIndex];
    }

    private void EnsureNotStarted()
    {
        if (Volatile.Read(ref _state) != 0)
        {
            throw new InvalidOperationException("State machines must be mounted before the node starts.");
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Paxos node {Node} started: {Groups} groups on {Loops} loop threads.")]
    private partial void LogNodeStarted(NodeId node, int groups, int loops);

    [LoggerMessage(Level = LogLevel.Information, Message = "Paxos node {Node} stopped.")]
    private partial void LogNodeStopped(NodeId node);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Node {Node}: dropped a bad {Via} frame of {Length} bytes: {Error}.")]
    private partial void LogBadFrame(NodeId node, TransportKind via, FrameError error, int length);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Node {Node}: dropped a frame for unknown group {Group}.")]
    private partial void LogUnknownGroup(NodeId node, int group);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: inbound queue full; message dropped.")]
    private partial void LogQueueFull(int group);
}

/// <summary>Outcome of <see cref="PaxosNode.GetInstanceValue"/>.</summary>
public enum InstanceValueStatus
{
    /// <summary>The value(s) are returned.</summary>
    Ok = 0,

    /// <summary>The instance is not chosen yet on this node (PhxPaxos 1006).</summary>
    NotChosenYet = 1006,

    /// <summary>The instance was cleaned from the log (PhxPaxos 1005).</summary>
    NotExist = 1005,
}

/// <summary>The chosen value(s) of one instance.</summary>
/// <param name="Status">Whether values are returned.</param>
/// <param name="Values">Each value with its state machine id; a batch gives several.</param>
public sealed record InstanceValueResult(InstanceValueStatus Status, IReadOnlyList<(int SmId, byte[] Value)> Values);
