using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Logging;

namespace Orleans.Paxos.Engine.Groups;

/// <summary>Work run on a loop thread.</summary>
internal interface ILoopWork
{
    /// <summary>Runs on the loop thread.</summary>
    void Run();
}

/// <summary>Something that owns timers on a loop.</summary>
internal interface ITimerTarget
{
    /// <summary>A timer fired (on the loop thread).</summary>
    void OnTimer(int kind, long timerId);
}

/// <summary>
/// A dedicated thread that runs the Paxos logic of one or more groups (PhxPaxos <c>IOLoop</c>): it
/// drains a work queue and a timer queue. Everything a group owns is touched only here, so the
/// consensus state needs no locks. <see cref="Post"/> and <see cref="Stop"/> are thread-safe; the
/// timer methods must be called on the loop thread.
/// </summary>
/// <remarks>
/// A loop created for a <see cref="ManualLoopDriver"/> has no thread: the driver's caller runs it step by
/// step (<see cref="RunReady"/>) and moves the <see cref="TimeProvider"/> itself, so a whole cluster can
/// run on one thread, in an order chosen by a seed, on fake time.
/// </remarks>
internal sealed partial class GroupLoop : IDisposable
{
    private readonly ConcurrentQueue<ILoopWork> _queue = new();
    private readonly AutoResetEvent _wake = new(false);
    private readonly PriorityQueue<TimerEntry, (long Due, long Id)> _timers = new();
    private readonly HashSet<long> _liveTimers = [];
    private readonly Thread _thread;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ManualLoopDriver? _driver;
    private Thread? _runningOn;
    private long _nextTimerId;
    private int _groupCount;
    private int _sleeping;
    private volatile bool _stopping;

    public GroupLoop(string name, TimeProvider time, ILogger logger)
        : this(name, time, logger, driver: null)
    {
    }

    private GroupLoop(string name, TimeProvider time, ILogger logger, ManualLoopDriver? driver)
    {
        _time = time;
        _logger = logger;
        _driver = driver;
        _thread = new Thread(Run) { IsBackground = true, Name = name };
    }

    /// <summary>Creates a loop without a thread, run by whoever calls <see cref="RunReady"/> (see <see cref="ManualLoopDriver"/>).</summary>
    internal static GroupLoop CreateManual(ManualLoopDriver driver, string name, TimeProvider time, ILogger logger) => new(name, time, logger, driver);

    /// <summary>Number of groups served by this loop.</summary>
    public int GroupCount => Volatile.Read(ref _groupCount);

    /// <summary>The loop's clock.</summary>
    public TimeProvider Time => _time;

    /// <summary>Whether the caller runs on this loop's thread.</summary>
    public bool IsOnLoopThread => _driver is not null ? _runningOn == Thread.CurrentThread : Thread.CurrentThread == _thread;

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

    /// <summary>Queues work for the loop thread. Thread-safe.</summary>
    public void Post(ILoopWork work)
    {
        _queue.Enqueue(work);
        if (Interlocked.Exchange(ref _sleeping, 0) == 1)
        {
            _wake.Set();
        }
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

    /// <summary>Stops the thread after the work already queued; waits for it.</summary>
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

    /// <summary>Whether work is queued (manual loops: whether <see cref="RunReady"/> would run something now).</summary>
    internal bool HasQueuedWork => !_queue.IsEmpty;

    private void Run()
    {
        while (!_stopping)
        {
            RunDueTimers();
            var worked = false;
            while (!_stopping && _queue.TryDequeue(out var work))
            {
                worked = true;
                Execute(work);
            }

            if (worked || _stopping)
            {
                continue;
            }

            // Announce the sleep, then look once more so that a Post racing with us is not missed.
            Volatile.Write(ref _sleeping, 1);
            if (!_queue.IsEmpty)
            {
                Volatile.Write(ref _sleeping, 0);
                continue;
            }

            _wake.WaitOne(NextTimerDelayMs());
            Volatile.Write(ref _sleeping, 0);
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
