using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Engine.Checkpoints;

/// <summary>What the cleaner needs from a group. Every member is thread-safe.</summary>
internal interface ICleanableGroup
{
    /// <summary>The group's index.</summary>
    int Index { get; }

    /// <summary>The instance being decided (published by the loop).</summary>
    ulong NowInstanceId { get; }

    /// <summary>The group's checkpoint (state machines allow this call from any thread), or <see cref="StateMachineCheckpoint.None"/>.</summary>
    ulong CheckpointInstanceIdForCleaner { get; }

    /// <summary>False while the group must keep its log, e.g. while it sends a checkpoint whose followers need the log after it.</summary>
    bool MayCleanLog { get; }

    /// <summary>Held while the log's start changes: by the cleaner for one step, by the loop while it installs a checkpoint.</summary>
    object LogMaintenanceGate { get; }

    /// <summary>Tells the group's loop that the log now starts at <paramref name="minChosen"/>.</summary>
    void OnLogCleaned(ulong minChosen);
}

/// <summary>
/// Deletes old log of every group of a node (PhxPaxos <c>Cleaner</c>): keeps at least
/// <see cref="CheckpointControl.HoldLogCount"/> instances before each group's checkpoint and never an
/// instance at or above the group's current one.
/// </summary>
/// <remarks>
/// Runs on one dedicated below-normal-priority thread for the whole node, not on the groups' loops:
/// each step writes the durable min-chosen mark (an fsync, milliseconds on this disk) and deletes index
/// rows and whole data files, and that latency must not be added to the proposals of every group
/// sharing a loop. It touches no Paxos state: it reads the values groups publish, calls the
/// thread-safe storage, and posts the new log start to the group's loop. One thread for all groups
/// rather than PhxPaxos's one per group, so that hundreds of groups do not mean hundreds of threads.
/// The deletion budget is paced by the node's <see cref="TimeProvider"/>; the pause between passes is a
/// real wait of the thread.
/// </remarks>
internal sealed partial class LogCleaner : IDisposable
{
    /// <summary>Instances deleted per second, shared by all groups (PhxPaxos <c>Cleaner_DELETE_QPS</c>).</summary>
    public const int DeleteQps = 300_000;

    private readonly IReadOnlyList<ICleanableGroup> _groups;
    private readonly ILogStorage _storage;
    private readonly CheckpointControl _control;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Thread _thread;
    private readonly ManualResetEventSlim _stop = new(false);
    private readonly long[] _lastPassMs;
    private readonly bool[] _failing;
    private readonly Random _random = new();

    public LogCleaner(IReadOnlyList<ICleanableGroup> groups, ILogStorage storage, CheckpointControl control, TimeProvider time, string name, ILogger logger)
    {
        _groups = groups;
        _storage = storage;
        _control = control;
        _time = time;
        _logger = logger;
        _lastPassMs = new long[groups.Count];
        _failing = new bool[groups.Count];
        _thread = new Thread(Run) { IsBackground = true, Name = name, Priority = ThreadPriority.BelowNormal };
    }

    /// <summary>Milliseconds on the node's clock: deletion is paced by it, as the groups' timers are.</summary>
    private long NowMs => (long)_time.GetElapsedTime(0, _time.GetTimestamp()).TotalMilliseconds;

    public void Start()
    {
        var now = NowMs;
        Array.Fill(_lastPassMs, now);
        _thread.Start();
    }

    /// <summary>
    /// Cleans one group once, within <paramref name="budget"/> instances. Returns the new log start, or null
    /// when nothing was deleted. Public so that tests can drive the cleaner without its thread.
    /// </summary>
    public ulong? CleanGroup(ICleanableGroup group, long budget)
    {
        if (budget <= 0 || !group.MayCleanLog)
        {
            return null;
        }

        ulong target;
        lock (group.LogMaintenanceGate)
        {
            var checkpoint = group.CheckpointInstanceIdForCleaner;
            if (checkpoint == StateMachineCheckpoint.None)
            {
                return null;
            }

            // PhxPaxos deletes instance i while i + hold < checkpoint + 1 and i + hold < max chosen.
            var limit = Math.Min(checkpoint + 1, group.NowInstanceId);
            var hold = (ulong)_control.HoldLogCount;
            if (limit <= hold)
            {
                return null;
            }

            var minChosen = _storage.GetMinChosenInstanceId(group.Index);
            target = Math.Min(limit - hold, minChosen + (ulong)budget);
            if (target <= minChosen)
            {
                return null;
            }

            // Mark first, delete second: after a crash in between, the mark never points below a
            // deleted record, so no peer is offered an instance that is gone; leftovers go next time.
            _storage.SetMinChosenInstanceId(group.Index, target);
            group.OnLogCleaned(target);
            _storage.DeleteBefore(group.Index, target);
        }

        LogCleaned(group.Index, target);
        return target;
    }

    public void Dispose()
    {
        _stop.Set();
        if (_thread.IsAlive)
        {
            _thread.Join();
        }

        _stop.Dispose();
    }

    private void Run()
    {
        // PhxPaxos cleans every 500–999 ms.
        while (!_stop.Wait(_random.Next(500, 1000)))
        {
            if (!_control.CleanerPaused)
            {
                RunPass();
            }
        }
    }

    /// <summary>
    /// Cleans every group once, within the budget the time since its last pass allows. A group whose cleaning
    /// fails is reported once, when it starts failing (a storage stopped by a failed write refuses every pass, and
    /// a warning per group every second would bury the failure itself), and again once it succeeds. Internal so
    /// that tests can run passes without the thread.
    /// </summary>
    internal void RunPass()
    {
        var perGroupQps = Math.Max(1, DeleteQps / Math.Max(1, _control.GroupCount));
        for (var i = 0; i < _groups.Count && !_stop.IsSet; i++)
        {
            var now = NowMs;
            var budget = Math.Min(perGroupQps, (now - _lastPassMs[i]) * perGroupQps / 1000);
            _lastPassMs[i] = now;
            try
            {
                CleanGroup(_groups[i], budget);
            }
            catch (Exception ex) when (ex is LogStorageException or IOException or UnauthorizedAccessException)
            {
                // Cleaning is best effort: the log only grows until the next successful pass.
                if (_failing[i])
                {
                    LogCleanStillFailing(_groups[i].Index, ex);
                }
                else
                {
                    _failing[i] = true;
                    LogCleanFailed(_groups[i].Index, ex);
                }

                continue;
            }

            if (_failing[i])
            {
                _failing[i] = false;
                LogCleanRecovered(_groups[i].Index);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Group {Group}: log cleaned; it now starts at instance {MinChosen}.")]
    private partial void LogCleaned(int group, ulong minChosen);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: cleaning the log failed; retrying on every pass (further failures are logged at Debug until one succeeds).")]
    private partial void LogCleanFailed(int group, Exception ex);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Group {Group}: cleaning the log failed again.")]
    private partial void LogCleanStillFailing(int group, Exception ex);

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: cleaning the log works again after failing.")]
    private partial void LogCleanRecovered(int group);
}
