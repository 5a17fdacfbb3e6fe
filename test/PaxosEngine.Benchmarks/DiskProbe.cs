using System.Diagnostics.Metrics;

namespace Orleans.Paxos.Engine.Benchmarks;

/// <summary>
/// Where a proposal's time goes on disk, read from the engine's own instruments while a configuration is
/// measured: data-file fsyncs per second and their mean and p99 duration, records per fsync (group commit),
/// and the acceptors' persist time (write until the reply may go). Covers the nodes in this process.
/// </summary>
internal sealed class DiskProbe : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly object _lock = new();
    private readonly List<double> _fsyncMs = new(100_000);
    private readonly List<double> _persistMs = new(100_000);
    private long _records;
    private long _commits;
    private volatile bool _measuring;

    public DiskProbe()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Name is "paxos.storage.fsync.duration" or "paxos.acceptor.persist.duration" or "paxos.storage.commit.batch_size")
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<double>((instrument, value, _, _) =>
        {
            if (!_measuring)
            {
                return;
            }

            lock (_lock)
            {
                (instrument.Name == "paxos.storage.fsync.duration" ? _fsyncMs : _persistMs).Add(value);
            }
        });
        _listener.SetMeasurementEventCallback<int>((_, value, _, _) =>
        {
            if (_measuring)
            {
                Interlocked.Add(ref _records, value);
                Interlocked.Increment(ref _commits);
            }
        });
        _listener.Start();
    }

    public void Begin() => _measuring = true;

    /// <summary>Stops counting and summarizes the window of <paramref name="seconds"/>.</summary>
    public DiskFigures End(double seconds)
    {
        _measuring = false;
        lock (_lock)
        {
            _fsyncMs.Sort();
            _persistMs.Sort();
            return new DiskFigures(
                _fsyncMs.Count / seconds,
                Mean(_fsyncMs),
                Percentile(_fsyncMs, 0.99),
                Mean(_persistMs),
                Percentile(_persistMs, 0.99),
                Interlocked.Read(ref _commits) == 0 ? double.NaN : (double)Interlocked.Read(ref _records) / Interlocked.Read(ref _commits));
        }
    }

    public void Dispose() => _listener.Dispose();

    private static double Mean(List<double> values) => values.Count == 0 ? double.NaN : values.Average();

    /// <summary>The <paramref name="q"/> quantile of ascending <paramref name="sorted"/> values; NaN when empty.</summary>
    internal static double Percentile(IReadOnlyList<double> sorted, double q) =>
        sorted.Count == 0 ? double.NaN : sorted[Math.Min(sorted.Count - 1, (int)(q * sorted.Count))];
}

/// <summary>Disk figures of one configuration (see <see cref="DiskProbe"/>).</summary>
internal sealed record DiskFigures(
    double FsyncsPerSecond, double FsyncMeanMs, double FsyncP99Ms, double PersistMeanMs, double PersistP99Ms, double RecordsPerFsync);
