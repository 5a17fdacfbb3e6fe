using System.Collections.Concurrent;
using Google.Protobuf;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;

namespace Orleans.Paxos.Engine.Groups;

/// <summary>A value waiting to be proposed, and its caller's completion.</summary>
internal sealed class PendingProposal
{
    private readonly System.Diagnostics.Activity? _activity = System.Diagnostics.Activity.Current; // the caller's paxos.propose span
    private int _completed;

    private Action? _onCompleted;

    public PendingProposal(int smId, ReadOnlyMemory<byte> value, StateMachineContext? context, bool explicitBatch, long enqueuedMs)
    {
        SmId = smId;
        Value = value;
        Context = context;
        ExplicitBatch = explicitBatch;
        EnqueuedMs = enqueuedMs;
    }

    public int SmId { get; }

    public ReadOnlyMemory<byte> Value { get; }

    public StateMachineContext? Context { get; }

    /// <summary>Came through BatchProposeAsync: may wait for company (PhxPaxos batch count and delay).</summary>
    public bool ExplicitBatch { get; }

    public long EnqueuedMs { get; }

    /// <summary>When the caller stops waiting (loop clock, ms); <see cref="long.MaxValue"/> for never.</summary>
    public long DeadlineMs { get; init; } = long.MaxValue;

    public int Attempts { get; set; }

    public TaskCompletionSource<ProposeResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public bool IsCompleted => Volatile.Read(ref _completed) != 0;

    public int PackedLength => ValueCodec.SmIdLength + Value.Length;

    /// <summary>Completes once; later calls do nothing. Thread-safe.</summary>
    public bool TryComplete(ProposeResult result)
    {
        if (Interlocked.Exchange(ref _completed, 1) != 0)
        {
            return false;
        }

        Telemetry.PaxosTracing.TagRetries(_activity, Attempts);
        Completion.SetResult(result);
        Interlocked.Exchange(ref _onCompleted, null)?.Invoke();
        return true;
    }

    /// <summary>Runs <paramref name="action"/> once on completion (at once if already complete). Thread-safe.</summary>
    public void OnCompleted(Action action)
    {
        Volatile.Write(ref _onCompleted, action);
        if (IsCompleted && Interlocked.Exchange(ref _onCompleted, null) is { } run)
        {
            run();
        }
    }
}

/// <summary>
/// The committer: callers' values wait here and go out as one instance at a time; values waiting
/// while an instance is in flight are batched into the next one (as PhxPaxos BatchPropose, but
/// without waiting for a timer when the group is idle).
/// </summary>
internal sealed partial class PaxosGroup
{
    private readonly ConcurrentQueue<PendingProposal> _incoming = new();
    private readonly LinkedList<PendingProposal> _ready = new();
    private readonly List<PendingProposal> _inFlight = [];
    private ByteString _inFlightValue = ByteString.Empty;
    private ulong _inFlightInstance;
    private bool _inFlightActive;
    /// <summary>How often overdue proposals are completed with Timeout.</summary>
    private const int TimeoutSweepMs = 50;

    private int _waiting;
    private int _timeoutSweepArmed;
    private long _timeoutSweepTimerId;
    private Action? _decrementWaiting;
    private long _batchDelayTimerId;
    private bool _creatingGid;

    /// <summary>Number of proposals waiting or in flight. Thread-safe.</summary>
    public int WaitingProposals => Volatile.Read(ref _waiting);

    /// <summary>Queues a proposal from any thread; returns false (and completes it) when too many wait.</summary>
    public bool TryEnqueueProposal(PendingProposal proposal)
    {
        if (_stoppedReason is not null)
        {
            proposal.TryComplete(ProposeResult.GroupStopped);
            return false;
        }

        if (proposal.PackedLength > _settings.MaxValueSize)
        {
            proposal.TryComplete(ProposeResult.ValueTooLarge);
            return false;
        }

        if (Interlocked.Increment(ref _waiting) > _settings.MaxWaitingProposals)
        {
            Interlocked.Decrement(ref _waiting);
            proposal.TryComplete(ProposeResult.TooManyWaiting);
            return false;
        }

        proposal.OnCompleted(_decrementWaiting ??= () => Interlocked.Decrement(ref _waiting));
        _incoming.Enqueue(proposal);
        if (proposal.DeadlineMs != long.MaxValue && Interlocked.Exchange(ref _timeoutSweepArmed, 1) == 0)
        {
            _loop.Post(new LoopAction(() => _timeoutSweepTimerId = AddTimer(TimeoutSweepMs, TimerKind.ProposalTimeouts)));
        }

        _loop.Post(new LoopAction(AfterWork));
        return true;
    }

    /// <summary>Starts the next instance with waiting values when nothing is in flight (PhxPaxos <c>CheckNewValue</c>).</summary>
    private void CheckNewValue()
    {
        if (_inFlightActive)
        {
            return;
        }

        while (_incoming.TryDequeue(out var p))
        {
            _ready.AddLast(p);
        }

        DropCompleted();
        if (_ready.Count == 0 || !IsLatest || _proposer.IsWorking)
        {
            return;
        }

        if (IsFollower)
        {
            FailAllProposals(new ProposeResult(ProposeStatus.FollowerCannotPropose));
            return;
        }

        if (!_members.Contains(_settings.MyNodeId))
        {
            FailAllProposals(new ProposeResult(ProposeStatus.NotMember));
            return;
        }

        if (_settings.UseMembership && Gid == 0 && !_creatingGid && Now == 0)
        {
            // The first proposal of a new managed group creates its cluster id; the values waiting go into
            // later instances. Unlike PhxPaxos, only at instance 0: a node that lost its variables later in the
            // log learns the cluster id instead of forking it.
            _creatingGid = true;
            var create = new PendingProposal(ReservedSmIds.SystemVariables, Membership.CreateGidValue(_settings.MyNodeId), null, explicitBatch: false, _loop.NowMs);
            _ = create.Completion.Task.ContinueWith(
                static (_, state) => ((PaxosGroup)state!)._loop.Post(new LoopAction(((PaxosGroup)state!).OnGidProposalDone)),
                this,
                CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default);
            _ready.AddFirst(create);
        }

        if (!ShouldFlush())
        {
            return;
        }

        TakeBatch();
        if (_inFlight.Count == 0)
        {
            return;
        }

        byte[] packed;
        if (_inFlight.Count == 1)
        {
            var only = _inFlight[0];
            packed = ValueCodec.Pack(only.SmId, only.Value.Span);
        }
        else
        {
            var parts = new (int, ReadOnlyMemory<byte>)[_inFlight.Count];
            for (var i = 0; i < parts.Length; i++)
            {
                parts[i] = (_inFlight[i].SmId, _inFlight[i].Value);
            }

            packed = ValueCodec.PackBatch(parts);
        }

        _inFlightValue = ByteString.CopyFrom(packed);
        _inFlightInstance = Now;
        _inFlightActive = true;
        _proposer.NewValue(_inFlightValue);
    }

    /// <summary>
    /// Called with no instance in flight. Plain proposals go at once, and so do values that came through
    /// BatchProposeAsync unless the group keeps PhxPaxos's rule (<see cref="GroupSettings.BatchFlushWhenIdle"/>
    /// false): then they wait until enough are queued, their bytes reach the cap, or the oldest waited the
    /// batch delay.
    /// </summary>
    private bool ShouldFlush()
    {
        if (_settings.BatchFlushWhenIdle)
        {
            return true;
        }

        var count = 0;
        var bytes = 0;
        long oldest = long.MaxValue;
        foreach (var p in _ready)
        {
            if (!p.ExplicitBatch)
            {
                return true;
            }

            count++;
            bytes += p.PackedLength;
            oldest = Math.Min(oldest, p.EnqueuedMs);
        }

        var waited = _loop.NowMs - oldest;
        if (count >= _settings.BatchCount || bytes >= _settings.MaxBatchBytes || waited >= _settings.BatchDelayMs)
        {
            return true;
        }

        if (_batchDelayTimerId == 0)
        {
            _batchDelayTimerId = AddTimer((int)(_settings.BatchDelayMs - waited), TimerKind.BatchDelay);
        }

        return false;
    }

    /// <summary>Completes overdue proposals with Timeout; in-flight ones keep going (their outcome is unknown to the caller).</summary>
    private void OnTimeoutSweep(long timerId)
    {
        if (timerId != _timeoutSweepTimerId)
        {
            return;
        }

        var nowMs = _loop.NowMs;
        while (_incoming.TryDequeue(out var p))
        {
            _ready.AddLast(p);
        }

        foreach (var p in _ready)
        {
            if (p.DeadlineMs <= nowMs)
            {
                p.TryComplete(ProposeResult.Timeout);
            }
        }

        foreach (var p in _inFlight)
        {
            if (p.DeadlineMs <= nowMs)
            {
                p.TryComplete(ProposeResult.Timeout);
            }
        }

        DropCompleted();
        if (Volatile.Read(ref _waiting) > 0)
        {
            _timeoutSweepTimerId = AddTimer(TimeoutSweepMs, TimerKind.ProposalTimeouts);
        }
        else
        {
            _timeoutSweepTimerId = 0;
            Volatile.Write(ref _timeoutSweepArmed, 0);

            // A proposal that arrived between the count check and the reset must still be swept.
            if (Volatile.Read(ref _waiting) > 0 && Interlocked.Exchange(ref _timeoutSweepArmed, 1) == 0)
            {
                _timeoutSweepTimerId = AddTimer(TimeoutSweepMs, TimerKind.ProposalTimeouts);
            }
        }
    }

    private void OnGidProposalDone()
    {
        _creatingGid = false;
        AfterWork();
    }

    private void OnBatchDelayTimer(long timerId)
    {
        if (timerId == _batchDelayTimerId)
        {
            _batchDelayTimerId = 0;
        }
    }

    private void TakeBatch()
    {
        _inFlight.Clear();
        var bytes = 0;
        var node = _ready.First;
        while (node is not null && _inFlight.Count < _settings.MaxBatchCount)
        {
            var next = node.Next;
            var p = node.Value;

            // Without automatic batching only BatchProposeAsync values share an instance, and only with each other.
            if (_inFlight.Count > 0 && (bytes + p.PackedLength > _settings.MaxBatchBytes || (!_settings.AutoBatch && !(p.ExplicitBatch && _inFlight[0].ExplicitBatch))))
            {
                break;
            }

            _ready.Remove(node);
            if (!p.IsCompleted)
            {
                _inFlight.Add(p);
                bytes += p.PackedLength;
            }

            node = next;
        }
    }

    private void DropCompleted()
    {
        var node = _ready.First;
        while (node is not null)
        {
            var next = node.Next;
            if (node.Value.IsCompleted)
            {
                _ready.Remove(node);
            }

            node = next;
        }
    }

    /// <summary>The proposers' contexts when <paramref name="value"/> is this node's value for <paramref name="instance"/>.</summary>
    private List<StateMachineContext?>? GetContextsIfMine(ulong instance, ByteString value)
    {
        if (!_inFlightActive || instance != _inFlightInstance || !value.Equals(_inFlightValue))
        {
            return null;
        }

        var contexts = new List<StateMachineContext?>(_inFlight.Count);
        foreach (var p in _inFlight)
        {
            contexts.Add(p.Context);
        }

        return contexts;
    }

    private void OnInstanceExecuted(ulong instance, ByteString value, bool mine)
    {
        if (!_inFlightActive || instance != _inFlightInstance)
        {
            return;
        }

        _inFlightActive = false;
        if (mine)
        {
            for (var i = 0; i < _inFlight.Count; i++)
            {
                var p = _inFlight[i];
                p.TryComplete(new ProposeResult(ProposeStatus.Ok, instance, _inFlight.Count > 1 ? i : 0, p.Context?.Output));
            }
        }
        else
        {
            // Another value was chosen here: try again in a later instance, at most three times (as PhxPaxos).
            for (var i = _inFlight.Count - 1; i >= 0; i--)
            {
                var p = _inFlight[i];
                if (++p.Attempts >= 3 || p.SmId == ReservedSmIds.Master)
                {
                    p.TryComplete(new ProposeResult(ProposeStatus.Conflict, instance));
                }
                else if (!p.IsCompleted)
                {
                    _ready.AddFirst(p);
                }
            }
        }

        _inFlight.Clear();
        _inFlightValue = ByteString.Empty;
    }

    private void OnExecuteFailed(ulong instance, bool mine)
    {
        if (!mine || !_inFlightActive || instance != _inFlightInstance)
        {
            return;
        }

        _inFlightActive = false;
        foreach (var p in _inFlight)
        {
            p.TryComplete(new ProposeResult(ProposeStatus.ExecuteFailed, instance));
        }

        _inFlight.Clear();
        _inFlightValue = ByteString.Empty;
    }

    private void FailAllProposals(ProposeResult result)
    {
        foreach (var p in _inFlight)
        {
            p.TryComplete(result);
        }

        _inFlight.Clear();
        _inFlightActive = false;
        foreach (var p in _ready)
        {
            p.TryComplete(result);
        }

        _ready.Clear();
        while (_incoming.TryDequeue(out var p))
        {
            p.TryComplete(result);
        }
    }
}
