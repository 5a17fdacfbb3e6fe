using System.Diagnostics.Metrics;

namespace Orleans.Paxos.Engine.Telemetry;

/// <summary>The engine's single <see cref="System.Diagnostics.Metrics.Meter"/>; every instrument hangs off it.</summary>
internal static class PaxosMetrics
{
    /// <summary>The meter named <c>Orleans.Paxos</c>.</summary>
    public static readonly Meter Meter = new("Orleans.Paxos", "1.0");
}
