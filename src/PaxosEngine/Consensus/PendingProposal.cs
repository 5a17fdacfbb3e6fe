using Orleans.Paxos.Engine.StateMachines;

namespace Orleans.Paxos.Engine.Consensus;

/// <summary>A value waiting to be proposed, and its caller's completion.</summary>
internal sealed class PendingProposal
{
    private readonly System.Diagnostics.Activity? _activity = System.Diagnostics.Activity.Current; // the caller's paxos.propose span
    private int _completed;

    private Action? _onCompleted;

    /// <param name="smId">The state machine that executes the value.</param>
    /// <param name="value">The value, not packed.</param>
    /// <param name="context">The caller's context, or null.</param>
    /// <param name="explicitBatch">Came through BatchProposeAsync.</param>
    /// <param name="enqueuedMs">When it was made (loop clock, ms).</param>
    /// <param name="synchronousContinuations">
    /// Code awaiting <see cref="Completion"/> runs on the thread that completes it with <see cref="ProposeStatus.Ok"/>
    /// (<see cref="Node.PaxosNodeOptions.AllowSynchronousContinuations"/>); false: through the thread pool.
    /// </param>
    public PendingProposal(int smId, ReadOnlyMemory<byte> value, StateMachineContext? context, bool explicitBatch, long enqueuedMs, bool synchronousContinuations = false)
    {
        Completion = new(synchronousContinuations ? TaskCreationOptions.None : TaskCreationOptions.RunContinuationsAsynchronously);
        SmId = smId;
        Value = value;
        Context = context;
        ExplicitBatch = explicitBatch;
        EnqueuedMs = enqueuedMs;
    }

    /// <summary>
    /// A proposal whose value is copied once, into its packed form (<c>[state machine id][value]</c>): when it
    /// goes alone into an instance, that array is the instance's value as it is.
    /// </summary>
    public static PendingProposal CopyOf(int smId, ReadOnlySpan<byte> value, StateMachineContext? context, bool explicitBatch, long enqueuedMs, long deadlineMs, bool synchronousContinuations = false)
    {
        var packed = ValueCodec.Pack(smId, value);
        return new PendingProposal(smId, packed.AsMemory(ValueCodec.SmIdLength), context, explicitBatch, enqueuedMs, synchronousContinuations)
        {
            Packed = packed,
            DeadlineMs = deadlineMs,
        };
    }

    public int SmId { get; }

    public ReadOnlyMemory<byte> Value { get; }

    /// <summary>The value packed for its state machine, when <see cref="CopyOf"/> made it; never changed.</summary>
    public byte[]? Packed { get; private init; }

    public StateMachineContext? Context { get; }

    /// <summary>Came through BatchProposeAsync: may wait for company (PhxPaxos batch count and delay).</summary>
    public bool ExplicitBatch { get; }

    public long EnqueuedMs { get; }

    /// <summary>When the caller stops waiting (loop clock, ms); <see cref="long.MaxValue"/> for never.</summary>
    public long DeadlineMs { get; init; } = long.MaxValue;

    public int Attempts { get; set; }

    public TaskCompletionSource<ProposeResult> Completion { get; }

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

        // The engine's own actions first (the group's count of waiting proposals among them): with synchronous
        // continuations, the caller's code runs inside SetResult and may propose again at once.
        try
        {
            var run = Interlocked.Exchange(ref _onCompleted, CompletedMarker);
            run?.Invoke();
        }
        finally
        {
            if (!result.IsOk && (Completion.Task.CreationOptions & TaskCreationOptions.RunContinuationsAsynchronously) == 0)
            {
                // Only a chosen value's caller continues on the completing thread. Any other outcome (a timeout or a
                // cancellation, a conflict, a stopped group or node) goes through the thread pool, as by default: a
                // caller that proposes again at once would otherwise retry on the completing thread, against a group
                // that fails it again there, for as long as it retries (or, in a cancellation, run on the thread that
                // cancelled).
                ThreadPool.UnsafeQueueUserWorkItem(static s => s.Completion.SetResult(s.Result), (Completion, Result: result), preferLocal: false);
            }
            else
            {
                Completion.SetResult(result);
            }
        }

        return true;
    }

    /// <summary>
    /// Runs <paramref name="action"/> once on completion, on the thread that completes the proposal (at once if it
    /// is already complete) and before the caller's code sees the result; several actions run in the order they
    /// were added. Thread-safe. Unlike a continuation
    /// of <see cref="Completion"/>, it does not go through the thread pool, so a group that runs on a manual loop
    /// stays deterministic.
    /// </summary>
    public void OnCompleted(Action action)
    {
        while (true)
        {
            var current = Volatile.Read(ref _onCompleted);
            if (ReferenceEquals(current, CompletedMarker))
            {
                action();
                return;
            }

            if (Interlocked.CompareExchange(ref _onCompleted, current + action, current) == current)
            {
                return;
            }
        }
    }

    private static readonly Action CompletedMarker = static () => { };
}
