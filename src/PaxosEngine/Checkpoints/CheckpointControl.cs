using Orleans.Paxos.Engine.Node;

namespace Orleans.Paxos.Engine.Checkpoints;

/// <summary>
/// Node-wide switches of the checkpoint subsystem (PhxPaxos's pause/continue calls and the hold count),
/// shared by the node, its groups and the cleaner. Thread-safe: plain volatile values.
/// </summary>
internal sealed class CheckpointControl
{
    /// <summary>The smallest hold count PhxPaxos accepts; smaller values are raised to it.</summary>
    public const long MinHoldLogCount = 300;

    private long _holdLogCount;
    private volatile bool _cleanerPaused;
    private volatile bool _replayerPaused = true;

    /// <summary>Creates the switches with the default options.</summary>
    public CheckpointControl()
        : this(new PaxosNodeOptions())
    {
    }

    public CheckpointControl(PaxosNodeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        HoldLogCount = options.HoldLogCount;
        UseReplayer = options.UseCheckpointReplayer;
        GroupCount = options.GroupCount;
    }

    /// <summary>Number of groups of the node; the cleaner's rate is shared among them.</summary>
    public int GroupCount { get; }

    /// <summary>Whether the replayer runs at all (it still starts paused).</summary>
    public bool UseReplayer { get; }

    /// <summary>Instances kept before the checkpoint; at least <see cref="MinHoldLogCount"/>.</summary>
    public long HoldLogCount
    {
        get => Interlocked.Read(ref _holdLogCount);
        set => Interlocked.Exchange(ref _holdLogCount, Math.Max(MinHoldLogCount, value));
    }

    /// <summary>Whether log cleaning is paused (PhxPaxos <c>PauseLogCleaner</c>).</summary>
    public bool CleanerPaused
    {
        get => _cleanerPaused;
        set => _cleanerPaused = value;
    }

    /// <summary>Whether the replayer is paused (PhxPaxos <c>PauseCheckpointReplayer</c>); paused at start as PhxPaxos.</summary>
    public bool ReplayerPaused
    {
        get => _replayerPaused;
        set => _replayerPaused = value;
    }
}
