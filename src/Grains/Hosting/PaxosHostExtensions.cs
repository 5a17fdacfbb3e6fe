using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Orleans.Paxos.Grains.Storage;

namespace Orleans.Paxos.Grains.Hosting;

/// <summary>
/// Stopping the host of a silo that keeps Orleans' own tables (membership, grain storage, reminders) on its Paxos node,
/// when the Paxos majority may be gone: the last silos of a cluster that stops, or a silo cut off from the others.
/// </summary>
/// <remarks>
/// Orleans writes the stopping silo's status to the membership table (ShuttingDown or Stopping, then Dead) and retries
/// each write on every error for up to a minute, whatever the host's shutdown timeout. On Paxos those writes need a
/// majority of the nodes; once it is gone, no retry can succeed and the silo's stop would wait out those minutes.
/// These methods stop waiting for them: the silo's Paxos node stops (its logs are closed cleanly, and with fsync on, the
/// default, everything chosen was durable before it was acknowledged) and the call returns. What is skipped is only what a kill -9 skips as well:
/// the other silos declare this one dead by themselves once they run again.
/// </remarks>
public static partial class PaxosHostExtensions
{
    private static readonly Task Never = new TaskCompletionSource().Task;

    /// <summary>
    /// Waits until the host is asked to stop (Ctrl+C, SIGTERM, <see cref="IHostApplicationLifetime.StopApplication"/>
    /// or <paramref name="cancellationToken"/>) and stops it with <see cref="StopPaxosSiloAsync"/>: the Paxos silo's
    /// <see cref="HostingAbstractionsHostExtensions.WaitForShutdownAsync"/>.
    /// </summary>
    /// <returns>True when the host stopped completely; false when its stop was cut short because the Paxos majority is gone.</returns>
    public static async Task<bool> WaitForPaxosShutdownAsync(this IHost host, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(host);
        var lifetime = host.Services.GetRequiredService<IHostApplicationLifetime>();
        var stopping = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using (cancellationToken.Register(static state => ((IHostApplicationLifetime)state!).StopApplication(), lifetime))
        using (lifetime.ApplicationStopping.Register(static state => ((TaskCompletionSource)state!).TrySetResult(), stopping))
        {
            await stopping.Task.ConfigureAwait(false);
        }

        return await host.StopPaxosSiloAsync(CancellationToken.None).ConfigureAwait(false);
    }

    /// <summary>
    /// Stops the host (<see cref="IHost.StopAsync"/>) unless, while it stops, an Orleans table operation of its silo
    /// that started during the stop fails for want of a Paxos majority (after <see cref="PaxosTableOptions.OperationTimeout"/>): then Orleans' last
    /// membership writes cannot complete either, so the silo's Paxos node is stopped at once and this returns without
    /// waiting for the rest of Orleans' stop (see the remarks of <see cref="PaxosHostExtensions"/>). A host without a
    /// Paxos node or without the Paxos providers is just stopped.
    /// </summary>
    /// <param name="host">The silo's host, started.</param>
    /// <param name="cancellationToken">Passed to <see cref="IHost.StopAsync"/>: when cancelled, the stop is no longer graceful.</param>
    /// <returns>True when the host stopped completely; false when its stop was cut short because the Paxos majority is gone.</returns>
    /// <remarks>
    /// After a false return Orleans' stop may still run in the background (its table calls fail at once, the node being
    /// stopped); the process is meant to exit, without disposing the host, whose services are still in use.
    /// </remarks>
    public static async Task<bool> StopPaxosSiloAsync(this IHost host, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(host);
        var access = host.Services.GetService<PaxosTableAccess>();
        var engine = host.Services.GetService<PaxosEngineHost>();

        // Only operations that start once the stop has begun count: one started earlier may have met a passing outage.
        var majorityLost = access?.MajorityLossAsync(Environment.TickCount64) ?? Never;
        var stop = host.StopAsync(cancellationToken);
        if (engine is null || await Task.WhenAny(stop, majorityLost).ConfigureAwait(false) == stop)
        {
            await stop.ConfigureAwait(false);
            return true;
        }

        var logger = host.Services.GetService<ILoggerFactory>()?.CreateLogger(typeof(PaxosHostExtensions).FullName!) ?? NullLogger.Instance;
        LogStopWithoutMajority(logger, engine.MyNodeId.ToString());

        // Whatever the abandoned stop ends with, it must not surface as an unobserved task exception.
        _ = stop.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        await engine.StopAsync().ConfigureAwait(false);
        return false;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Paxos node {Node}: the silo is stopping without a Paxos majority (the other nodes are stopped or unreachable), so Orleans cannot write its last membership rows; the node stops now and the silo does not wait for them. The other silos declare it dead once they run again.")]
    private static partial void LogStopWithoutMajority(ILogger logger, string node);
}
