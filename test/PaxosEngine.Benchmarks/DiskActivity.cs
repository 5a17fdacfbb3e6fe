using System.Diagnostics;
using System.Globalization;

namespace Orleans.Paxos.Engine.Benchmarks;

/// <summary>
/// What the machine's disks did while a benchmark process ran: <c>/proc/diskstats</c> of every whole disk (loop, ram
/// and zram devices left out), read every 100 ms. <see cref="Busiest"/> gives the write rate and the cache flushes
/// (what an <c>fdatasync</c> ends with) of the busiest stretch as long as the measured window, which is the window
/// itself when the load is steady: start-up and shutdown write little. Linux only; elsewhere every figure is NaN.
/// </summary>
internal sealed class DiskActivity : IAsyncDisposable
{
    private static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(100);

    /// <summary>The machine's whole disks (<c>/sys/block</c> without loop, ram and zram devices), looked up once.</summary>
    private static readonly Lazy<HashSet<string>> Disks = new(() => Directory.Exists("/sys/block")
        ? Directory.GetDirectories("/sys/block").Select(Path.GetFileName).OfType<string>()
            .Where(d => !d.StartsWith("loop", StringComparison.Ordinal) && !d.StartsWith("ram", StringComparison.Ordinal) && !d.StartsWith("zram", StringComparison.Ordinal))
            .ToHashSet(StringComparer.Ordinal)
        : []);

    private readonly List<Sample> _samples = [];
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _sampling;

    private DiskActivity()
    {
        _sampling = SampleAsync();
    }

    /// <summary>Bytes written and cache flushes completed, summed over the disks, at one moment.</summary>
    private readonly record struct Sample(long Timestamp, long SectorsWritten, long Flushes);

    /// <summary>Starts sampling; stop it with <see cref="DisposeAsync"/> before reading <see cref="Busiest"/>.</summary>
    public static DiskActivity Start() => new();

    /// <summary>
    /// Over the stretch of <paramref name="window"/> in which the disks wrote the most: MB (10^6 bytes) written per
    /// second and cache flushes completed per second. NaN when the disks cannot be read or the run was shorter.
    /// </summary>
    public (double WriteMBPerSecond, double FlushesPerSecond) Busiest(TimeSpan window)
    {
        var best = (Bytes: -1.0, Flushes: 0.0, Seconds: 0.0);
        var start = 0;
        for (var end = 1; end < _samples.Count; end++)
        {
            // The longest stretch ending here that is no longer than the window.
            while (Stopwatch.GetElapsedTime(_samples[start].Timestamp, _samples[end].Timestamp) > window)
            {
                start++;
            }

            var seconds = Stopwatch.GetElapsedTime(_samples[start].Timestamp, _samples[end].Timestamp).TotalSeconds;
            if (start < end && seconds >= window.TotalSeconds * 0.9)
            {
                var bytes = (_samples[end].SectorsWritten - _samples[start].SectorsWritten) * 512.0;
                if (bytes > best.Bytes)
                {
                    best = (bytes, _samples[end].Flushes - _samples[start].Flushes, seconds);
                }
            }
        }

        return best.Bytes < 0 ? (double.NaN, double.NaN) : (best.Bytes / 1e6 / best.Seconds, best.Flushes / best.Seconds);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await _sampling.ConfigureAwait(false);
        _stop.Dispose();
    }

    private async Task SampleAsync()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        using var timer = new PeriodicTimer(Interval);
        try
        {
            do
            {
                if (Read() is not { } sample)
                {
                    return;
                }

                _samples.Add(sample);
            }
            while (await timer.WaitForNextTickAsync(_stop.Token).ConfigureAwait(false));
        }
        catch (OperationCanceledException)
        {
            // Stopped: the last sample was taken at most one interval ago.
        }

        if (Read() is { } last)
        {
            _samples.Add(last);
        }
    }

    /// <summary>
    /// Sums <c>/proc/diskstats</c> over whole disks: field 10 (sectors written, 512 bytes each) and field 19 (flush
    /// requests completed, kernels since 5.5). Null when the file cannot be read.
    /// </summary>
    private static Sample? Read()
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines("/proc/diskstats");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        long sectors = 0, flushes = 0;
        foreach (var line in lines)
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 14 || !Disks.Value.Contains(f[2]))
            {
                continue;
            }

            sectors += long.Parse(f[9], CultureInfo.InvariantCulture);
            flushes += f.Length >= 20 ? long.Parse(f[18], CultureInfo.InvariantCulture) : 0;
        }

        return new Sample(Stopwatch.GetTimestamp(), sectors, flushes);
    }
}
