using System.Diagnostics.Metrics;

namespace Orleans.Paxos.Engine.Telemetry;

/// <summary>
/// The engine's shared <see cref="System.Diagnostics.Metrics.Meter"/>. Every component creates its
/// instruments on it so that one <c>AddMeter("Orleans.Paxos")</c> collects them all.
/// </summary>
public static class PaxosMetrics
{
    /// <summary>The meter name, <c>"Orleans.Paxos"</c>.</summary>
    public const string MeterName = "Orleans.Paxos";

    /// <summary>The process-wide meter of the engine.</summary>
    public static Meter Meter { get; } = new(MeterName, "1.0");
}
