using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Groups;

/// <summary>Work run on a loop thread.</summary>
internal interface ILoopWork
{
    /// <summary>Runs on the loop thread.</summary>
    void Run();
}

/// <summary>Where work offered to <see cref="GroupLoop.TryRunInline"/> comes from.</summary>
internal interface IInlineSource
{
    /// <summary>Whether the offering thread is saturated: it should hand this work over and read on.</summary>
    bool IsSaturated { get; }
}

/// <summary>Something that owns timers on a loop.</summary>
internal interface ITimerTarget
{
    /// <summary>A timer fired (on the loop thread).</summary>
    void OnTimer(int kind, long timerId);
}

/// <summary>
/// A dedicated thread that runs the Paxos logic of one or more groups (PhxPaxos <c>IOLoop</c>): it
/// drains a work queue and a timer queue. Everything a group owns is touched only by the thread that owns
/// the loop, one at a time, so the consensus state needs no locks. <see cref="Post"/>, <see cref="TryRunInline"/>
/// and <see cref="Stop"/> are thread-safe; the timer methods must be called by the loop's owner.
/// </summary>
/// <remarks>
/// <para>
/// The owner is normally the loop's thread. While that thread sleeps with nothing queued, a transport's receive
/// thread may take the loop over for one message (<see cref="TryRunInline"/>) instead of waking it, and runs what
/// that message posts to the loop too (up to 16 items): the wake-up and the sleep after it cost more CPU than
/// handling a Paxos message, and on a virtual machine a wake-up also costs tens of microseconds. Ownership passes through one
/// interlocked flag, so whatever one owner wrote the next one sees; the loop's thread waits for a borrower to
/// finish before it runs anything, and a borrower that armed a timer due before the sleeping thread's wake-up
/// wakes it.
/// </para>
/// <para>
/// A loop created for a <see cref="ManualLoopDriver"/> has no thread: the driver's caller runs it step by
/// step (<see cref="RunReady"/>) and moves the <see cref="TimeProvider"/> itself, so a whole cluster can
/// run on one thread, in an order chosen by a seed, on fake time. Nobody borrows a manual loop.
/// </para>
/// </remarks>
internal sealed partial class GroupLoop : IDisposable
{
    /// <summary>Work items a holding loop runs before it sends what it holds, even if its pass goes on.</summary>
    private const int MaxWorkBetweenSends = 64;

    /// <summary>Queued work items a borrower runs after its message before it hands the loop back (<see cref="TryRunInline"/>).</summary>
    private const int MaxBorrowedFollowUps = 16;

    private readonly ConcurrentQueue<ILoopWork> _queue = new();
    private readonly AutoResetEvent _wake = new(false);
    private readonly PriorityQueue<TimerEntry, (long Due, long Id)> _timers = new();
    private readonly HashSet<long> _liveTimers = [];
    private readonly Thread _thread;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ManualLoopDriver? _driver;
    private readonly ISendBatching? _batching;
    private readonly bool _groupsWriteWithSync;
    private Thread? _runningOn;
    private long _nextTimerId;
    private int _groupCount;
    private int _sleeping;
    private int _owned;
    private long _plannedWakeMs;
    private int _borrowerWakes;
    private int _ownershipWaits;
    private int _timedWakes;
    private volatile bool _stopping;

    public GroupLoop(string name, TimeProvider time, ILogger logger)
        : this(name, time, logger, driver: null, batching: null, groupsWriteWithSync: false)
    {
    }

    /// <summary>
    /// A loop whose thread holds the frames it sends while it runs its queued work and sends them together after
    /// (<paramref name="batching"/>). <paramref name="groupsWriteWithSync"/>: the groups fsync their acceptor
    /// writes, so a loop that serves a single group may fsync on its thread; such a loop sends at once instead, so
    /// that no frame waits for an fsync.
    /// </summary>
    public GroupLoop(string name, TimeProvider time, ILogger logger, ISendBatching? batching, bool groupsWriteWithSync)
        : this(name, time, logger, driver: null, batching, groupsWriteWithSync)
    {
    }

    private GroupLoop(string name, TimeProvider time, ILogger logger, ManualLoopDriver? driver, ISendBatching? batching, bool groupsWriteWithSync)
    {
        _time = time;
        _logger = logger;
        _driver = driver;
        _batching = batching;
        _groupsWriteWithSync = groupsWriteWithSync;
        _thread = new Thread(Run) { IsBackground = true, Name = name };
    }

    /// <summary>Creates a loop without a thread, run by whoever calls <see cref="RunReady"/> (see <see cref="ManualLoopDriver"/>).</summary>
    internal static GroupLoop CreateManual(ManualLoopDriver driver, string name, TimeProvider time, ILogger logger) => new(name, time, logger, driver, batching: null, groupsWriteWithSync: false);

    /// <summary>Number of groups served by this loop.</summary>
    public int GroupCount => Volatile.Read(ref _groupCount);

    /// <summary>The loop's clock.</summary>
    public TimeProvider Time => _time;

    /// <summary>Whether the caller owns this loop: runs on its thread, or borrowed it (<see cref="TryRunInline"/>), or drives it (manual loops).</summary>
    public bool IsOnLoopThread => _runningOn == Thread.CurrentThread || (_driver is null && Thread.CurrentThread == _thread);

    /// <summary>Whether the caller borrowed this loop from its sleeping thread (<see cref="TryRunInline"/>): work that would block (an fsync) keeps everything behind it waiting and runs here only where nothing else is (a follower's write in a node with a single group).</summary>
    public bool IsBorrowed => _driver is null && _runningOn == Thread.CurrentThread;

    /// <summary>Milliseconds on the loop's monotonic clock.</summary>
    public long NowMs => (long)_time.GetElapsedTime(0, _time.GetTimestamp()).TotalMilliseconds;

    public void Start()
    {
        if (_driver is null)
        {
            _thread.Start();
        }
    }

    /// <summary>Counts a group that runs on this loop.</summary>
    public void AddGroup() => Interlocked.Increment(ref _groupCount);

    /// <summary>
    /// Queues work for the loop thread. Thread-safe. Work a borrower posts (<see cref="TryRunInline"/>) does not wake
    /// the sleeping thread: the borrower runs it before it hands the loop back, or wakes the thread then.
    /// </summary>
    public void Post(ILoopWork work)
    {
        _queue.Enqueue(work);
        if (IsBorrowed)
        {
            return;
        }

        if (Interlocked.Exchange(ref _sleeping, 0) == 1)
        {
            _wake.Set();
        }
    }

    /// <summary>
    /// Runs <paramref name="work"/> on the calling thread when the loop's thread sleeps with nothing queued, and
    /// returns true; otherwise returns false and the caller posts it. Never blocks. Work queued before it always
    /// runs before it, so one sender's messages keep their order. Work it posts to this loop runs after it, on the
    /// calling thread too, unless the source has more to read or the loop's thread was woken meanwhile; what is left
    /// wakes the loop's thread. Not for manual loops (returns false).
    /// </summary>
    public bool TryRunInline(ILoopWork work, IInlineSource source)
    {
        if (_driver is not null || Volatile.Read(ref _sleeping) == 0 || _stopping || !_queue.IsEmpty || source.IsSaturated)
        {
            return false;
        }

        if (Interlocked.CompareExchange(ref _owned, 1, 0) != 0)
        {
            return false;
        }

        if (!_queue.IsEmpty || _stopping || Volatile.Read(ref _sleeping) == 0)
        {
            // Work arrived (its poster woke the thread) or the thread woke: it runs in order there.
            Volatile.Write(ref _owned, 0);
            return false;
        }

        _runningOn = Thread.CurrentThread;
        bool wake;
        try
        {
            Execute(work);

            // What the message posted to its own loop (a reply to this node, the callers' next values when their
            // code ran here) runs here too, a little of it, unless the thread was woken meanwhile or the source
            // has more to read: no wake-up of the sleeping thread for it.
            for (var ran = 0; ran < MaxBorrowedFollowUps && !_stopping && Volatile.Read(ref _sleeping) == 1 && !source.IsSaturated && _queue.TryDequeue(out var next); ran++)
            {
                Execute(next);
            }
        }
        finally
        {
            _runningOn = null;
            wake = NextTimerDueMs is { } due && due < Volatile.Read(ref _plannedWakeMs);
            Volatile.Write(ref _owned, 0);
        }

        // Work the message posted to its own loop, or a timer due before the thread's wake-up: wake it.
        if ((wake || !_queue.IsEmpty) && Interlocked.Exchange(ref _sleeping, 0) == 1)
        {
            Interlocked.Increment(ref _borrowerWakes);
            _wake.Set();
        }

        return true;
    }

    /// <summary>Arms a timer; returns its id (never 0). Loop thread only.</summary>
    public long AddTimer(int delayMs, ITimerTarget target, int kind)
    {
        Debug.Assert(IsOnLoopThread || !_thread.IsAlive, "Timers belong to the loop thread.");
        var id = ++_nextTimerId;
        _timers.Enqueue(new TimerEntry(target, kind, id), (NowMs + Math.Max(0, delayMs), id));
        _liveTimers.Add(id);
        return id;
    }

    /// <summary>Cancels a timer; 0 and unknown ids are ignored. Loop thread only.</summary>
    public void RemoveTimer(long timerId)
    {
        if (timerId != 0)
        {
            _liveTimers.Remove(timerId);
        }
    }

    /// <summary>Stops the thread after the work item it is running, and waits for it; work still queued is not run.</summary>
    public void Stop()
    {
        _stopping = true;
        if (_driver is not null)
        {
            // Nobody runs a stopped manual loop again: what it still held is dropped, as a crash would.
            _queue.Clear();
            _timers.Clear();
            _liveTimers.Clear();
            return;
        }

        _wake.Set();
        if (_thread.IsAlive && !IsOnLoopThread)
        {
            _thread.Join();
        }
    }

    public void Dispose()
    {
        Stop();
        _wake.Dispose();
    }

    /// <summary>
    /// Manual loops only: runs the timers that are due on the loop's clock, then the queued work, including
    /// work queued meanwhile. Returns whether anything ran. Call from one thread at a time.
    /// </summary>
    internal bool RunReady()
    {
        Debug.Assert(_driver is not null, "Only a manual loop is run by its caller.");
        if (_stopping)
        {
            return false;
        }

        _runningOn = Thread.CurrentThread;
        try
        {
            var ran = RunDueTimers();
            while (!_stopping && _queue.TryDequeue(out var work))
            {
                ran = true;
                Execute(work);
            }

            return ran;
        }
        finally
        {
            _runningOn = null;
        }
    }

    /// <summary>When the next live timer is due on the loop's clock (ms), or null when none is armed; drops cancelled entries. Loop thread (or the manual driver) only.</summary>
    internal long? NextTimerDueMs
    {
        get
        {
            while (_timers.TryPeek(out var entry, out var key))
            {
                if (_liveTimers.Contains(entry.Id))
                {
                    return key.Due;
                }

                _timers.Dequeue();
            }

            return null;
        }
    }

    /// <summary>Whether the loop's thread has announced that it sleeps (tests).</summary>
    internal bool IsSleeping => Volatile.Read(ref _sleeping) == 1;

    /// <summary>Times the loop's thread found the loop borrowed and waited for it (tests).</summary>
    internal int OwnershipWaits => Volatile.Read(ref _ownershipWaits);

    /// <summary>Times a borrower woke the sleeping thread after its message (tests).</summary>
    internal int BorrowerWakes => Volatile.Read(ref _borrowerWakes);

    /// <summary>Times the loop's thread woke because its sleep ran out (at least once a second), not because it was woken.</summary>
    internal int TimedWakes => Volatile.Read(ref _timedWakes);

    /// <summary>Whether work is queued (manual loops: whether <see cref="RunReady"/> would run something now).</summary>
    internal bool HasQueuedWork => !_queue.IsEmpty;

    private void Run()
    {
        while (!_stopping)
        {
            TakeOwnership();
            var holding = _batching is not null && (!_groupsWriteWithSync || GroupCount > 1);
            if (holding)
            {
                _batching!.HoldSends();
            }

            RunDueTimers();
            var worked = false;
            var sinceSent = 0;
            while (!_stopping && _queue.TryDequeue(out var work))
            {
                worked = true;
                Execute(work);
                if (holding && ++sinceSent == MaxWorkBetweenSends)
                {
                    // A queue that never empties must not hold a quiet peer's frames for as long as the load lasts.
                    _batching!.FlushHeld();
                    sinceSent = 0;
                }
            }

            if (holding)
            {
                // Everything this pass sent to one peer leaves in one datagram, before the loop looks again or sleeps.
                _batching!.SendHeld();
            }

            if (worked || _stopping)
            {
                Volatile.Write(ref _owned, 0);
                continue;
            }

            // Announce the sleep and when it ends, hand the loop over, then look once more so that a Post
            // racing with us is not missed.
            var delayMs = NextTimerDelayMs();
            Volatile.Write(ref _plannedWakeMs, NowMs + delayMs);
            Volatile.Write(ref _sleeping, 1);
            Volatile.Write(ref _owned, 0);
            if (!_queue.IsEmpty)
            {
                Volatile.Write(ref _sleeping, 0);
                continue;
            }

            if (!_wake.WaitOne(delayMs))
            {
                Interlocked.Increment(ref _timedWakes);
            }

            Volatile.Write(ref _sleeping, 0);
        }
    }

    /// <summary>The loop's thread takes the loop back, waiting for a borrower to finish its one message.</summary>
    private void TakeOwnership()
    {
        if (Interlocked.CompareExchange(ref _owned, 1, 0) == 0)
        {
            return;
        }

        Interlocked.Increment(ref _ownershipWaits);
        var spinner = default(SpinWait);
        while (Interlocked.CompareExchange(ref _owned, 1, 0) != 0)
        {
            spinner.SpinOnce();
        }
    }

    private void Execute(ILoopWork work)
    {
        try
        {
            work.Run();
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A bug in one group's handling must not take down the loop, and with it other groups.
            LogWorkFailed(_thread.Name, ex);
            _driver?.OnWorkFailed(ex);
        }
    }

    private bool RunDueTimers()
    {
        var ran = false;
        var now = NowMs;
        while (_timers.TryPeek(out var entry, out var key) && key.Due <= now)
        {
            _timers.Dequeue();
            if (!_liveTimers.Remove(entry.Id))
            {
                continue;
            }

            ran = true;
            try
            {
                entry.Target.OnTimer(entry.Kind, entry.Id);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                LogWorkFailed(_thread.Name, ex);
                _driver?.OnWorkFailed(ex);
            }
        }

        return ran;
    }

    private int NextTimerDelayMs() => NextTimerDueMs is { } due ? (int)Math.Clamp(due - NowMs, 0, 1000) : 1000;

    [LoggerMessage(Level = LogLevel.Error, Message = "Loop {Loop}: unexpected error while handling work; the loop continues.")]
    private partial void LogWorkFailed(string? loop, Exception ex);

    private readonly record struct TimerEntry(ITimerTarget Target, int Kind, long Id);
}
