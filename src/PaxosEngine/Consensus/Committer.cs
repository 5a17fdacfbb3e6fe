using System.Collections.Concurrent;
using System.Diagnostics;
using Google.Protobuf;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;

namespace Orleans.Paxos.Engine.Consensus;

/// <summary>What the committer needs from its group beyond <see cref="IRoleHost"/>.</summary>
internal interface ICommitterHost : IRoleHost
{
    /// <summary>This node is not behind what it has seen of its peers (the learner's view).</summary>
    bool IsLatest { get; }

    /// <summary>The proposer works on a value.</summary>
    bool IsProposing { get; }

    /// <summary>The value that creates the group's cluster id (the membership state machine's).</summary>
    byte[] CreateGidValue();

    /// <summary>Hands <paramref name="value"/> to the proposer for the current instance.</summary>
    void Propose(ByteString value);

    /// <summary>The group's step after every message and timer: retried messages, then <see cref="Committer.CheckNewValue"/>.</summary>
    void AfterWork();
}

/// <summary>
/// The committer (PhxPaxos <c>Committer</c> and the IOLoop's value queue): callers' values wait here and go
/// out as one instance at a time; values waiting while an instance is in flight are batched into the next
/// one (as PhxPaxos BatchPropose, but without waiting for a timer when the group is idle, except briefly for the
/// callers of the instance just chosen: <see cref="StartGathering"/>).
/// </summary>
/// <remarks>
/// <see cref="TryEnqueueProposal"/> and <see cref="WaitingProposals"/> are thread-safe; everything else runs
/// on the group's loop thread and takes no lock.
/// </remarks>
internal sealed class Committer
{
    /// <summary>How often overdue proposals are completed with Timeout.</summary>
    private const int TimeoutSweepMs = 50;

    /// <summary>How long (at most) the next instance waits for the callers whose values were just chosen to come back (see <see cref="StartGathering"/>).</summary>
    internal const int GatherWindowMs = 1;

    /// <summary>Instances that start without that wait after a wait ran out (the callers did not come back in time).</summary>
    internal const int GatherPauseInstances = 64;

    private readonly ICommitterHost _host;
    private readonly GroupSettings _settings;
    private readonly ConcurrentQueue<PendingProposal> _incoming = new();
    private readonly LinkedList<PendingProposal> _ready = new();
    private readonly List<PendingProposal> _inFlight = [];
    private ByteString _inFlightValue = ByteString.Empty;
    private ulong _inFlightInstance;
    private bool _inFlightActive;
    private int _waiting;
    private int _timeoutSweepArmed;
    private long _timeoutSweepTimerId;
    private Action? _decrementWaiting;
    private long _batchDelayTimerId;
    private long _gatherTimerId;
    private int _gatherTarget;
    private int _gatherPause;
    private bool _creatingGid;

    public Committer(ICommitterHost host, GroupSettings settings)
    {
        _host = host;
        _settings = settings;
    }

    /// <summary>Number of proposals waiting or in flight. Thread-safe.</summary>
    public int WaitingProposals => Volatile.Read(ref _waiting);

    /// <summary>Nothing is in flight and nothing waits.</summary>
    public bool IsIdle => !_inFlightActive && _ready.Count == 0 && _incoming.IsEmpty;

    /// <summary>Queues a proposal from any thread; returns false (and completes it) when too many wait.</summary>
    public bool TryEnqueueProposal(PendingProposal proposal)
    {
        if (_host.IsStopped)
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
            _host.Post(() => _timeoutSweepTimerId = _host.AddTimer(TimeoutSweepMs, TimerKind.ProposalTimeouts));
        }

        _host.Post(_host.AfterWork);
        return true;
    }

    /// <summary>A timer of the committer fired.</summary>
    public void OnTimer(TimerKind kind, long timerId)
    {
        if (kind == TimerKind.BatchDelay)
        {
            OnBatchDelayTimer(timerId);
        }
        else if (kind == TimerKind.BatchGather)
        {
            OnGatherTimer(timerId);
        }
        else
        {
            OnTimeoutSweep(timerId);
        }
    }

    /// <summary>Starts the next instance with waiting values when nothing is in flight (PhxPaxos <c>CheckNewValue</c>).</summary>
    public void CheckNewValue()
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
        if (_ready.Count == 0 || !_host.IsLatest || _host.IsProposing)
        {
            return;
        }

        if (_settings.FollowToNodeId != 0)
        {
            FailAllProposals(new ProposeResult(ProposeStatus.FollowerCannotPropose));
            return;
        }

        if (!_host.IsMember(_settings.MyNodeId))
        {
            FailAllProposals(new ProposeResult(ProposeStatus.NotMember));
            return;
        }

        if (_settings.UseMembership && _host.Gid == 0 && !_creatingGid && _host.CurrentInstanceId == 0)
        {
            // The first proposal of a new managed group creates its cluster id; the values waiting go into
            // later instances. Unlike PhxPaxos, only at instance 0: a node that lost its variables later in the
            // log learns the cluster id instead of forking it.
            _creatingGid = true;
            var create = new PendingProposal(ReservedSmIds.SystemVariables, _host.CreateGidValue(), null, explicitBatch: false, _host.NowMs);
            create.OnCompleted(() => _host.Post(OnGidProposalDone));
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
            packed = only.Packed ?? ValueCodec.Pack(only.SmId, only.Value.Span);
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

        // Packed here or when the proposal was made, and never changed after: the message may share the array.
        _inFlightValue = UnsafeByteOperations.UnsafeWrap(packed);
        _inFlightInstance = _host.CurrentInstanceId;
        _inFlightActive = true;
        _host.Propose(_inFlightValue);
    }

    /// <summary>The proposers' contexts when <paramref name="value"/> is this node's value for <paramref name="instance"/>.</summary>
    public List<StateMachineContext?>? GetContextsIfMine(ulong instance, ByteString value)
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

    /// <summary><paramref name="instance"/> was executed: completes this node's values, or retries them when another value won.</summary>
    public void OnInstanceExecuted(ulong instance, bool mine)
    {
        if (!_inFlightActive || instance != _inFlightInstance)
        {
            return;
        }

        _inFlightActive = false;
        if (mine)
        {
            StartGathering();
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

    /// <summary>A state machine failed to execute <paramref name="instance"/>: this node's values there fail.</summary>
    public void OnExecuteFailed(ulong instance, bool mine)
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

    /// <summary>
    /// The group jumped past the instance in flight (a checkpoint was installed): it was decided elsewhere and
    /// is now behind the checkpoint, so its outcome is unknown here.
    /// </summary>
    public void AbandonInFlight()
    {
        if (!_inFlightActive)
        {
            return;
        }

        _inFlightActive = false;
        foreach (var p in _inFlight)
        {
            p.TryComplete(new ProposeResult(ProposeStatus.Timeout, _inFlightInstance));
        }

        _inFlight.Clear();
        _inFlightValue = ByteString.Empty;
    }

    /// <summary>Completes every proposal, waiting or in flight, with <paramref name="result"/>.</summary>
    public void FailAllProposals(ProposeResult result)
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

    /// <summary>
    /// Called with no instance in flight. Plain proposals go at once, and so do values that came through
    /// BatchProposeAsync unless the group keeps PhxPaxos's rule (<see cref="GroupSettings.BatchFlushWhenIdle"/>
    /// false): then they wait until enough are queued, their bytes reach the cap, or the oldest waited the
    /// batch delay. Either may first wait briefly for the callers of the last instance (<see cref="StartGathering"/>).
    /// </summary>
    private bool ShouldFlush()
    {
        if (IsGathering())
        {
            return false;
        }

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

        var waited = _host.NowMs - oldest;
        if (count >= _settings.BatchCount || bytes >= _settings.MaxBatchBytes || waited >= _settings.BatchDelayMs)
        {
            return true;
        }

        if (_batchDelayTimerId == 0)
        {
            _batchDelayTimerId = _host.AddTimer((int)(_settings.BatchDelayMs - waited), TimerKind.BatchDelay);
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

        var nowMs = _host.NowMs;
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
            _timeoutSweepTimerId = _host.AddTimer(TimeoutSweepMs, TimerKind.ProposalTimeouts);
        }
        else
        {
            _timeoutSweepTimerId = 0;
            Volatile.Write(ref _timeoutSweepArmed, 0);

            // A proposal that arrived between the count check and the reset must still be swept.
            if (Volatile.Read(ref _waiting) > 0 && Interlocked.Exchange(ref _timeoutSweepArmed, 1) == 0)
            {
                _timeoutSweepTimerId = _host.AddTimer(TimeoutSweepMs, TimerKind.ProposalTimeouts);
            }
        }
    }

    private void OnGidProposalDone()
    {
        _creatingGid = false;
        _host.AfterWork();
    }

    /// <summary>
    /// When an instance of this node's values was chosen: the next instance waits, for <see cref="GatherWindowMs"/> at
    /// most, until as many values are ready as were waiting or in flight just now. One instance is in flight at a
    /// time, so callers that propose again as soon as they are answered otherwise split into two halves that take
    /// turns, each instance about half full; with the wait they share one. For plain proposals with
    /// <see cref="GroupSettings.AutoBatch"/> and BatchProposeAsync values with
    /// <see cref="GroupSettings.BatchFlushWhenIdle"/> (PhxPaxos's count and delay rule waits its own way). A wait that
    /// runs out means the callers do not come back at once (each proposes when it has something to propose): the
    /// next <see cref="GatherPauseInstances"/> instances start without waiting.
    /// </summary>
    private void StartGathering()
    {
        if (_gatherPause > 0)
        {
            _gatherPause--;
            return;
        }

        // Before the values in flight complete: each completion takes its proposal off the count.
        var outstanding = Math.Min(Volatile.Read(ref _waiting), _settings.MaxBatchCount);
        if (outstanding <= 1 || !AnyMayGather(_inFlight))
        {
            return;
        }

        Debug.Assert(_gatherTimerId == 0, "An instance starts only after the wait before it ended.");
        _gatherTarget = outstanding;

        // The loop's clock counts whole milliseconds: one more, or the wait could end at once.
        _gatherTimerId = _host.AddTimer(GatherWindowMs + 1, TimerKind.BatchGather);
    }

    private bool AnyMayGather(List<PendingProposal> proposals)
    {
        foreach (var p in proposals)
        {
            if (MayGather(p))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Whether <paramref name="p"/> may wait for the callers of the last instance (see <see cref="StartGathering"/>).</summary>
    private bool MayGather(PendingProposal p) => p.ExplicitBatch ? _settings.BatchFlushWhenIdle : _settings.AutoBatch;

    /// <summary>Whether the ready values wait for more (see <see cref="StartGathering"/>); ends the wait once they need not.</summary>
    private bool IsGathering()
    {
        if (_gatherTimerId == 0)
        {
            return false;
        }

        var count = 0;
        var bytes = 0;
        foreach (var p in _ready)
        {
            if (p.IsCompleted)
            {
                continue;
            }

            bytes += p.PackedLength;
            if (!MayGather(p) || ++count >= _gatherTarget || bytes >= _settings.MaxBatchBytes)
            {
                _host.RemoveTimer(_gatherTimerId);
                _gatherTimerId = 0;
                return false;
            }
        }

        return true;
    }

    private void OnGatherTimer(long timerId)
    {
        if (timerId == _gatherTimerId)
        {
            _gatherTimerId = 0;
            _gatherPause = GatherPauseInstances;
        }
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
}
