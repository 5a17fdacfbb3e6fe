using Orleans.Paxos.TestSupport;

namespace Orleans.Paxos.Engine.Tests.Support;

/// <summary>Waits for a condition instead of sleeping and hoping it came true (TestSupport's <see cref="Poll"/>, polled more often).</summary>
public static class Polling
{
    /// <summary>How often a condition is tested again.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(20);

    /// <summary>
    /// Returns once <paramref name="condition"/> holds; throws <see cref="TimeoutException"/> naming
    /// <paramref name="description"/> (and what <paramref name="state"/> reports) when it did not within <paramref name="timeout"/>.
    /// </summary>
    public static Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout, string description, Func<string>? state = null)
    {
        ArgumentNullException.ThrowIfNull(condition);
        return Poll.UntilAsync(
            () => Task.FromResult(condition()),
            holds => holds,
            timeout,
            _ => state is null ? description : description + "; " + state(),
            interval: Interval);
    }
}
