using System.Diagnostics;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;
using Orleans.Paxos.Engine.Telemetry;

namespace Orleans.Paxos.Engine.Benchmarks;

/// <summary>
/// What a silo with telemetry on attaches to the engine: an OpenTelemetry meter provider reading every
/// <c>Orleans.Paxos</c> instrument each second (as a Prometheus scrape would) and a tracer provider
/// sampling every <c>paxos.propose</c> span into a batch exporter. The exporters walk the data and drop it.
/// </summary>
internal sealed class TelemetryCollection : IDisposable
{
    private readonly MeterProvider _meters;
    private readonly TracerProvider _tracer;

    public TelemetryCollection()
    {
        _meters = Sdk.CreateMeterProviderBuilder()
            .AddMeter(PaxosMetrics.MeterName)
            .AddReader(new PeriodicExportingMetricReader(new DiscardingMetricExporter(), exportIntervalMilliseconds: 1000))
            .Build();
        _tracer = Sdk.CreateTracerProviderBuilder()
            .AddSource(PaxosTracing.SourceName)
            .SetSampler(new AlwaysOnSampler())
            .AddProcessor(new BatchActivityExportProcessor(new DiscardingSpanExporter()))
            .Build();
    }

    /// <summary>Metric points read at the last export (keeps the exporter's work observable).</summary>
    public static long PointsRead { get; private set; }

    public void Dispose()
    {
        _tracer.Dispose();
        _meters.Dispose();
    }

    private sealed class DiscardingMetricExporter : BaseExporter<Metric>
    {
        public override ExportResult Export(in Batch<Metric> batch)
        {
            long points = 0;
            foreach (var metric in batch)
            {
                foreach (ref readonly var _ in metric.GetMetricPoints())
                {
                    points++;
                }
            }

            PointsRead = points;
            return ExportResult.Success;
        }
    }

    private sealed class DiscardingSpanExporter : BaseExporter<Activity>
    {
        public override ExportResult Export(in Batch<Activity> batch) => ExportResult.Success;
    }
}
