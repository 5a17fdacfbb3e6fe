namespace Orleans.Paxos.Grains.Hosting;

/// <summary>
/// Lets the silos of one process (the silo program's local cluster) stop their Paxos nodes together: each node
/// waits until every silo has finished its Orleans shutdown (whose last membership writes need a Paxos majority)
/// or until a timeout. Without it, the first silos to stop take their nodes away while the last silo still needs
/// them. Register one instance, shared by all silos, as a singleton in each silo. Thread-safe.
/// </summary>
public sealed class PaxosNodeStopBarrier
{
    private readonly int _participants;
    private readonly TaskCompletionSource _all = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _arrived;

    /// <summary>Creates a barrier for <paramref name="participants"/> silos.</summary>
    public PaxosNodeStopBarrier(int participants)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(participants, 1);
        _participants = participants;
    }

    /// <summary>How long a node waits for the others at most. Default 30 s.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Records that one silo is ready to stop its node and waits for the others (or the timeout).</summary>
    public async Task ArriveAndWaitAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Increment(ref _arrived) >= _participants)
        {
            _all.TrySetResult();
        }

        try
        {
            await _all.Task.WaitAsync(Timeout, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Stop anyway: a silo that never arrives must not hold the others forever.
        }
    }
}
