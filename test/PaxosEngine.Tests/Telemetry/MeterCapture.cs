using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Orleans.Paxos.Engine.Telemetry;

namespace Orleans.Paxos.Engine.Tests.Telemetry;

/// <summary>
/// Listens to every instrument of the engine's meter: sums counters, counts and sums histogram
/// records, and keeps the last observed value of gauges, per instrument and tag set.
/// </summary>
public sealed class MeterCapture : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<string, double> _sums = new();
    private readonly ConcurrentDictionary<string, long> _counts = new();
    private readonly ConcurrentDictionary<string, double> _gauges = new();
    private readonly ConcurrentDictionary<string, byte> _published = new();

    public MeterCapture()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == PaxosMetrics.MeterName)
            {
                _published[instrument.Name] = 0;
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((i, v, tags, _) => OnMeasurement(i, v, tags));
        _listener.SetMeasurementEventCallback<int>((i, v, tags, _) => OnMeasurement(i, v, tags));
        _listener.SetMeasurementEventCallback<double>((i, v, tags, _) => OnMeasurement(i, v, tags));
        _listener.Start();
    }

    public IReadOnlyCollection<string> Published => [.. _published.Keys];

    /// <summary>Runs the observable gauges' callbacks now; the previous gauge values are forgotten.</summary>
    public void ObserveGauges()
    {
        _gauges.Clear();
        _listener.RecordObservableInstruments();
    }

    /// <summary>Sum of a counter (or of a histogram's records) over the series whose tags include <paramref name="tags"/>.</summary>
    public double Sum(string instrument, params (string Key, string Value)[] tags) => Aggregate(_sums, instrument, tags);

    /// <summary>Number of records of a histogram over the matching series.</summary>
    public long Count(string instrument, params (string Key, string Value)[] tags) =>
        (long)_counts.Where(kv => Matches(kv.Key, instrument, tags)).Sum(kv => kv.Value);

    /// <summary>The last observed gauge value of the one series matching the tags, or null when none matched.</summary>
    public double? Gauge(string instrument, params (string Key, string Value)[] tags)
    {
        var matches = _gauges.Where(kv => Matches(kv.Key, instrument, tags)).Select(kv => kv.Value).ToList();
        Assert.True(matches.Count <= 1, $"{matches.Count} series of {instrument} match");
        return matches.Count == 0 ? null : matches[0];
    }

    /// <summary>The matching gauge series, as (key, value).</summary>
    public List<KeyValuePair<string, double>> GaugeSeries(string instrument, params (string Key, string Value)[] tags) =>
        [.. _gauges.Where(kv => Matches(kv.Key, instrument, tags))];

    public void Dispose() => _listener.Dispose();

    private static double Aggregate(ConcurrentDictionary<string, double> map, string instrument, (string Key, string Value)[] tags) =>
        map.Where(kv => Matches(kv.Key, instrument, tags)).Sum(kv => kv.Value);

    private static bool Matches(string key, string instrument, (string Key, string Value)[] tags) =>
        key.StartsWith(instrument + "|", StringComparison.Ordinal) && tags.All(t => key.Contains($"|{t.Key}={t.Value}|", StringComparison.Ordinal));

    private static string Key(Instrument instrument, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var parts = new List<string>(tags.Length);
        foreach (var t in tags)
        {
            parts.Add($"{t.Key}={t.Value}");
        }

        parts.Sort(StringComparer.Ordinal);
        return instrument.Name + "|" + string.Join("|", parts) + "|";
    }

    private void OnMeasurement<T>(Instrument instrument, T value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        where T : struct
    {
        var key = Key(instrument, tags);
        var v = Convert.ToDouble(value, System.Globalization.CultureInfo.InvariantCulture);
        if (instrument.GetType().Name.StartsWith("ObservableGauge", StringComparison.Ordinal))
        {
            _gauges[key] = v;
            return;
        }

        _sums.AddOrUpdate(key, v, (_, old) => old + v);
        _counts.AddOrUpdate(key, 1, (_, old) => old + 1);
    }
}
