using System.Diagnostics;
using System.Globalization;

namespace Orleans.Paxos.TestSupport;

/// <summary>
/// Waits for a condition by checking it again and again until it holds or a timeout passes: how a test waits
/// for something that happens elsewhere (another node, another process, a timer) instead of sleeping and hoping
/// it happened. The condition is checked at once, then every <see cref="DefaultInterval"/> (or the interval given).
/// </summary>
public static class Poll
{
    /// <summary>The time between two checks unless one is given: 100 ms.</summary>
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromMilliseconds(100);

    /// <summary>Waits until <paramref name="condition"/> holds.</summary>
    /// <param name="condition">Checked at once and after every interval.</param>
    /// <param name="timeout">How long to keep checking.</param>
    /// <param name="what">What is waited for, for the timeout's message ("silo 2 to rejoin").</param>
    /// <param name="interval">Time between checks; default <see cref="DefaultInterval"/>.</param>
    /// <exception cref="TimeoutException">It did not hold within <paramref name="timeout"/>.</exception>
    public static Task UntilAsync(Func<bool> condition, TimeSpan timeout, string what, TimeSpan? interval = null)
    {
        ArgumentNullException.ThrowIfNull(condition);
        return UntilAsync(() => Task.FromResult(condition()), timeout, what, retryOn: null, interval);
    }

    /// <summary>Waits until <paramref name="condition"/> holds.</summary>
    /// <param name="condition">Checked at once and after every interval.</param>
    /// <param name="timeout">How long to keep checking.</param>
    /// <param name="what">What is waited for, for the timeout's message ("silo 2 to rejoin").</param>
    /// <param name="retryOn">Exceptions of the check that mean "not yet" (e.g. a call to a silo that is down); others end the wait.</param>
    /// <param name="interval">Time between checks; default <see cref="DefaultInterval"/>.</param>
    /// <exception cref="TimeoutException">It did not hold within <paramref name="timeout"/>.</exception>
    public static Task UntilAsync(Func<Task<bool>> condition, TimeSpan timeout, string what, Func<Exception, bool>? retryOn = null, TimeSpan? interval = null)
    {
        ArgumentNullException.ThrowIfNull(condition);
        return UntilAsync(condition, ok => ok, timeout, _ => what, retryOn, interval);
    }

    /// <summary>Waits until <paramref name="accept"/> takes what <paramref name="probe"/> returns, and returns that.</summary>
    /// <param name="probe">Asked at once and after every interval.</param>
    /// <param name="accept">Whether the probe's answer is what is waited for.</param>
    /// <param name="timeout">How long to keep asking.</param>
    /// <param name="describe">What is waited for and what was seen last (the last answer, or default when every probe failed), for the timeout's message.</param>
    /// <param name="retryOn">Exceptions of the probe that mean "not yet"; others end the wait.</param>
    /// <param name="interval">Time between probes; default <see cref="DefaultInterval"/>.</param>
    /// <exception cref="TimeoutException">No accepted answer within <paramref name="timeout"/>.</exception>
    public static async Task<T> UntilAsync<T>(Func<Task<T>> probe, Func<T, bool> accept, TimeSpan timeout, Func<T?, string> describe, Func<Exception, bool>? retryOn = null, TimeSpan? interval = null)
    {
        ArgumentNullException.ThrowIfNull(probe);
        ArgumentNullException.ThrowIfNull(accept);
        ArgumentNullException.ThrowIfNull(describe);
        var started = Stopwatch.GetTimestamp();
        T? last = default;
        Exception? lastError = null;
        while (true)
        {
            try
            {
                last = await probe();
                lastError = null;
                if (accept(last))
                {
                    return last;
                }
            }
            catch (Exception ex) when (retryOn?.Invoke(ex) == true)
            {
                lastError = ex;
            }

            if (Stopwatch.GetElapsedTime(started) > timeout)
            {
                var error = lastError is null ? string.Empty : $" (last check failed: {lastError.GetType().Name}: {lastError.Message})";
                throw new TimeoutException(string.Create(CultureInfo.InvariantCulture, $"timed out after {timeout.TotalSeconds:0.#} s waiting for {describe(last)}{error}"));
            }

            await Task.Delay(interval ?? DefaultInterval);
        }
    }

    /// <summary>
    /// Asks <paramref name="probe"/> until <paramref name="accept"/> takes its answer or <paramref name="timeout"/>
    /// passes, and returns the last answer either way (for checks that report what is left rather than fail).
    /// </summary>
    public static async Task<T> LastAsync<T>(Func<Task<T>> probe, Func<T, bool> accept, TimeSpan timeout, TimeSpan? interval = null)
    {
        ArgumentNullException.ThrowIfNull(probe);
        ArgumentNullException.ThrowIfNull(accept);
        var started = Stopwatch.GetTimestamp();
        while (true)
        {
            var answer = await probe();
            if (accept(answer) || Stopwatch.GetElapsedTime(started) > timeout)
            {
                return answer;
            }

            await Task.Delay(interval ?? DefaultInterval);
        }
    }
}
