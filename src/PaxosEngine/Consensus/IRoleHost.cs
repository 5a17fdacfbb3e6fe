namespace Orleans.Paxos.Engine.Consensus;

/// <summary>
/// What every role of a group needs from the group that hosts it: who it is, where the group stands, timers,
/// the loop and the stop switch. Each role has a narrower host interface on top of this one; the group
/// (<c>PaxosGroup</c>) implements them all. Every member is called on the group's loop thread unless its
/// summary says otherwise.
/// </summary>
internal interface IRoleHost
{
    /// <summary>The group's index.</summary>
    int GroupIndex { get; }

    /// <summary>This node.</summary>
    ulong MyNodeId { get; }

    /// <summary>The cluster id the group stamps on its frames (0 until membership is managed).</summary>
    ulong Gid { get; }

    /// <summary>The instance being decided (the acceptor's); every lower one is chosen and executed here.</summary>
    ulong CurrentInstanceId { get; }

    /// <summary>Milliseconds on the loop's clock (its <see cref="TimeProvider"/>). Thread-safe.</summary>
    long NowMs { get; }

    /// <summary>Whether the group stopped for good. Thread-safe.</summary>
    bool IsStopped { get; }

    /// <summary>Whether <paramref name="nodeId"/> is in the group's current membership.</summary>
    bool IsMember(ulong nodeId);

    /// <summary>Arms a timer of <paramref name="kind"/>; returns its id (never 0).</summary>
    long AddTimer(int delayMs, TimerKind kind);

    /// <summary>Cancels a timer (0 is ignored).</summary>
    void RemoveTimer(long timerId);

    /// <summary>Runs <paramref name="action"/> on the group's loop thread later. Thread-safe.</summary>
    void Post(Action action);

    /// <summary>Stops the group for good: it drops messages, fails proposals and logs why.</summary>
    void Stop(string reason, Exception? cause = null);
}
