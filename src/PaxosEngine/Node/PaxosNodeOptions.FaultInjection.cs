namespace Orleans.Paxos.Engine.Node;

/// <summary>Fault-injection options (testing only).</summary>
public sealed partial class PaxosNodeOptions
{
    /// <summary>Testing only, off by default. Bound from <c>Paxos:FaultInjection</c>.</summary>
    public PaxosFaultInjectionOptions FaultInjection { get; set; } = new();
}

/// <summary>
/// Testing only: hooks a fault harness uses on a real node. Leave unset in production.
/// </summary>
public sealed class PaxosFaultInjectionOptions
{
    /// <summary>
    /// A side file to which the built-in log storage appends, for every data file, how far it was made
    /// durable: a line <c>new &lt;path&gt;</c> when a data file is created and <c>sync &lt;path&gt; &lt;end&gt;</c>
    /// after each successful fsync (every byte below <c>end</c> written before the fsync is durable). A
    /// harness that kills the process can then cut each data file back to what a power loss would have kept.
    /// Null (the default): no journal.
    /// </summary>
    public string? SyncJournal { get; set; }
}
