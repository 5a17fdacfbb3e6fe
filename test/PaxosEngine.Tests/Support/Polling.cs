using System.Diagnostics;

namespace Orleans.Paxos.Engine.Tests.Support;

/// <summary>Waits for a condition instead of sleeping and hoping it came true.</summary>
public static class Polling
{
    /// <summary>How often a condition is tested again.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(20);

    /// <summary>
    /// Returns once <paramref name="condition"/> holds; throws <see cref="TimeoutException"/> naming
    /// <paramref name="description"/> (and what <paramref name="state"/> reports) when it did not within <paramref name="timeout"/>.
    /// </summary>
    public static async Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout, string description, Func<string>? state = null)
    {
        ArgumentNullException.ThrowIfNull(condition);
        var watch = Stopwatch.StartNew();
        while (!condition())
        {
            if (watch.Elapsed > timeout)
            {
                throw new TimeoutException($"timed out after {timeout.TotalSeconds:0.#} s waiting for {description}{(state is null ? string.Empty : "; " + state())}");
            }

            await Task.Delay(Interval);
        }
    }
}
