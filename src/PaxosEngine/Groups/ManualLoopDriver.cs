namespace Orleans.Paxos.Engine.Groups;

/// <summary>
/// Runs the loops of one or more nodes on the caller's thread instead of on loop threads, so that a test
/// decides what runs when and moves the clock itself (etcd raft's <c>Step</c>/<c>Tick</c>, for a whole
/// node). A node built with a driver (<c>PaxosNode</c>'s internal constructor) creates manual loops and
/// starts no log cleaner; everything else (its groups, roles, storage and transport calls) is the same
/// code that runs in production.
/// </summary>
/// <remarks>
/// Not thread-safe: one thread drives. Work that storage or transport completes on that thread (a put's
/// callback, a delivered frame) is queued on the loops and runs at the next <see cref="RunOne"/>. Disposing such a node drops what its loops
/// still hold, as a crash would: its waiting proposals never complete.
/// </remarks>
internal sealed class ManualLoopDriver
{
    private readonly List<GroupLoop> _loops = [];
    private readonly List<Exception> _failures = [];

    /// <summary>Exceptions thrown by work or timers on any loop (a loop logs and goes on; a test should not).</summary>
    public IReadOnlyList<Exception> Failures => _failures;

    /// <summary>The loops created so far, in creation order.</summary>
    public IReadOnlyList<GroupLoop> Loops => _loops;

    /// <summary>Creates a loop run by this driver.</summary>
    public GroupLoop CreateLoop(string name, TimeProvider time, Microsoft.Extensions.Logging.ILogger logger)
    {
        var loop = GroupLoop.CreateManual(this, name, time, logger);
        _loops.Add(loop);
        return loop;
    }

    /// <summary>Forgets a stopped loop (a crashed or disposed node's).</summary>
    public void Remove(GroupLoop loop) => _loops.Remove(loop);

    /// <summary>
    /// Runs one loop's due timers and queued work; <paramref name="pick"/> chooses which loop among those
    /// that have something to run (e.g. from a seeded <see cref="Random"/>). Returns false when no loop had anything.
    /// </summary>
    public bool RunOne(Func<int, int> pick)
    {
        ArgumentNullException.ThrowIfNull(pick);
        Span<int> ready = _loops.Count <= 64 ? stackalloc int[_loops.Count] : new int[_loops.Count];
        var count = 0;
        for (var i = 0; i < _loops.Count; i++)
        {
            var loop = _loops[i];
            if (loop.HasQueuedWork || loop.NextTimerDueMs is { } due && due <= loop.NowMs)
            {
                ready[count++] = i;
            }
        }

        if (count == 0)
        {
            return false;
        }

        _loops[ready[pick(count)]].RunReady();
        return true;
    }

    /// <summary>Runs loops, in the order <paramref name="pick"/> chooses, until none has anything to run at the current time.</summary>
    /// <returns>How many loop steps ran.</returns>
    public int RunUntilIdle(Func<int, int> pick)
    {
        var steps = 0;
        while (RunOne(pick))
        {
            steps++;
        }

        return steps;
    }

    /// <summary>When the earliest timer of any loop is due (ms on the loops' clock), or null when none is armed.</summary>
    public long? NextTimerDueMs
    {
        get
        {
            long? next = null;
            foreach (var loop in _loops)
            {
                if (loop.NextTimerDueMs is { } due && (next is null || due < next))
                {
                    next = due;
                }
            }

            return next;
        }
    }

    internal void OnWorkFailed(Exception error) => _failures.Add(error);
}
