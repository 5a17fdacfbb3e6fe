using System.Diagnostics.Metrics;

namespace Orleans.Paxos.Engine.Telemetry;

/// <summary>
/// The engine's shared <see cref="System.Diagnostics.Metrics.Meter"/>. Every component creates its
/// instruments on it so that one <c>AddMeter("Orleans.Paxos")</c> collects them all. The instruments
/// are listed with units and meanings in <c>docs/metrics.md</c>.
/// </summary>
public static class PaxosMetrics
{
    /// <summary>The meter name, <c>"Orleans.Paxos"</c>.</summary>
    public const string MeterName = "Orleans.Paxos";

    /// <summary>Tag on per-node instruments: the node id (<c>ip:port</c>); one value per node in the process.</summary>
    public const string NodeTag = "paxos.node";

    /// <summary>Tag on per-group instruments: the group index.</summary>
    public const string GroupTag = "paxos.group";

    /// <summary>Tag on proposal instruments: the <c>ProposeStatus</c> in snake case.</summary>
    public const string ResultTag = "paxos.result";

    /// <summary>The process-wide meter of the engine.</summary>
    public static Meter Meter { get; } = new(MeterName, "1.0");
}
