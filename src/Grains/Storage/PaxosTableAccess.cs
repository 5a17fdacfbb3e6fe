using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Grains.Hosting;

namespace Orleans.Paxos.Grains.Storage;

/// <summary>
/// How the Orleans providers (membership, grain storage, reminders) reach the silo's own Paxos node:
/// directly through <see cref="PaxosEngineHost"/>, never through grains (membership runs before grains exist).
/// Turns engine outcomes into exceptions that name the problem, and reports a missing majority once per
/// <see cref="PaxosTableOptions.MajorityLossLogPeriod"/> rather than on every failed call. Thread-safe.
/// </summary>
public sealed partial class PaxosTableAccess
{
    private readonly PaxosEngineHost _host;
    private readonly PaxosTableOptions _options;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly List<(long StartedFrom, TaskCompletionSource Loss)> _lossWaiters = [];
    private long _lastReportTicks = long.MinValue;
    private long _failingSinceTicks;
    private int _failuresSinceReport;
    private bool _failing;

    /// <summary>Creates the access for a silo's node.</summary>
    public PaxosTableAccess(PaxosEngineHost host, Microsoft.Extensions.Options.IOptions<PaxosTableOptions> options, ILogger<PaxosTableAccess> logger)
    {
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(options);
        _host = host;
        _options = options.Value;
        _logger = logger;
    }

    /// <summary>The silo's engine host.</summary>
    public PaxosEngineHost Host => _host;

    /// <summary>Whether the last operation failed for want of a majority.</summary>
    public bool MajorityMissing => Volatile.Read(ref _failing);

    /// <summary>
    /// Completes when an operation that started at or after <paramref name="startedFromTicks"/>
    /// (<see cref="Environment.TickCount64"/>) fails for want of a majority, after waiting up to
    /// <see cref="PaxosTableOptions.OperationTimeout"/> for it; never faults. Operations that started earlier do not
    /// count, however they end.
    /// </summary>
    /// <param name="startedFromTicks">The earliest start of an operation that counts.</param>
    public Task MajorityLossAsync(long startedFromTicks)
    {
        var loss = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            _lossWaiters.Add((startedFromTicks, loss));
        }

        return loss.Task;
    }

    private void CompleteLossWaiters(long started)
    {
        List<TaskCompletionSource>? due = null;
        lock (_gate)
        {
            for (var i = _lossWaiters.Count - 1; i >= 0; i--)
            {
                if (_lossWaiters[i].StartedFrom <= started)
                {
                    (due ??= []).Add(_lossWaiters[i].Loss);
                    _lossWaiters.RemoveAt(i);
                }
            }
        }

        due?.ForEach(static loss => loss.TrySetResult());
    }

    /// <summary>
    /// Proposes <paramref name="value"/> for state machine <paramref name="smId"/> on <paramref name="group"/> and
    /// returns the state machine's output.
    /// </summary>
    /// <param name="what">What is being done, for error messages (e.g. "membership ReadAll").</param>
    /// <param name="group">The group.</param>
    /// <param name="smId">The state machine.</param>
    /// <param name="value">The encoded operation.</param>
    /// <param name="cancellationToken">Stops waiting; the operation may still be chosen.</param>
    /// <exception cref="PaxosMajorityUnavailableException">No majority answered within <see cref="PaxosTableOptions.OperationTimeout"/>.</exception>
    /// <remarks>
    /// A value that lost to competing proposers is proposed again until the timeout. The engine treats a chosen
    /// value that is byte-identical to this node's as this node's, so callers must make every operation unique
    /// (<see cref="WithNonce"/>).
    /// </remarks>
    /// <exception cref="PaxosTableException">The node is not running, not a member, the group stopped, or the state machine is missing.</exception>
    public async Task<object> ProposeAsync(string what, int group, int smId, byte[] value, CancellationToken cancellationToken = default)
    {
        if (!_host.IsRunning)
        {
            throw new PaxosTableException($"{what}: the Paxos node {_host.MyNodeId} of this silo is not running (the silo is starting or stopping).");
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.OperationTimeout);
        var started = Environment.TickCount64;
        ProposeResult result;
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                result = await _host.ProposeAsync(group, smId, value, batch: false, timeout.Token).ConfigureAwait(false);
            }
            catch (ObjectDisposedException)
            {
                result = new ProposeResult(ProposeStatus.NodeStopped);
            }

            if (_host.Options.AllowSynchronousContinuations)
            {
                // This ran on the engine thread that completed the proposal; Orleans' own code (membership, grain
                // storage, reminders) continues from here and must not hold that thread: on to the thread pool,
                // whatever scheduler is current.
                await Task.CompletedTask.ConfigureAwait(ConfigureAwaitOptions.ForceYielding);
            }

            cancellationToken.ThrowIfCancellationRequested();

            // Competing proposers (Conflict) or a full queue: the value was not chosen, so proposing it again is safe.
            if (result.Status is not (ProposeStatus.Conflict or ProposeStatus.TooManyWaiting) || timeout.IsCancellationRequested)
            {
                break;
            }

            try
            {
                await Task.Delay(Random.Shared.Next(1, Math.Min(50, 5 * attempt)), timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                cancellationToken.ThrowIfCancellationRequested();
                break;
            }
        }

        switch (result.Status)
        {
            case ProposeStatus.Ok when result.Output is { } output:
                ReportSuccess();
                return output;

            case ProposeStatus.Ok:
                throw new PaxosTableException($"{what}: group {group} on node {_host.MyNodeId} executed the operation but no state machine {smId} answered; is the provider's state machine mounted on every silo?");

            case ProposeStatus.Timeout or ProposeStatus.Conflict or ProposeStatus.TooManyWaiting:
                var waited = TimeSpan.FromMilliseconds(Environment.TickCount64 - started);
                var message = $"{what}: the Paxos majority is missing: group {group} of node {_host.MyNodeId} got no majority of its {_host.Options.Members.Count} members to agree within {waited.TotalSeconds:0.0} s ({result.Status}). Operations resume by themselves once a majority of the Paxos nodes is up and connected.";
                ReportMajorityMissing(message);

                // After the report, so that whoever waits for it (a silo stopping, PaxosHostExtensions) logs after the cause.
                CompleteLossWaiters(started);
                throw new PaxosMajorityUnavailableException(message);

            default:
                throw new PaxosTableException($"{what}: group {group} on node {_host.MyNodeId} failed: {result.Status}.");
        }
    }

    /// <summary>
    /// Appends a random 16-byte field (number 15, unknown to the message) to a protobuf-encoded operation, so that two
    /// identical operations from two callers are different values in the log. Protobuf parsers skip unknown fields.
    /// </summary>
    public static byte[] WithNonce(byte[] protobufMessage)
    {
        ArgumentNullException.ThrowIfNull(protobufMessage);
        var result = new byte[protobufMessage.Length + 18];
        protobufMessage.CopyTo(result, 0);
        result[protobufMessage.Length] = (15 << 3) | 2; // field 15, length-delimited
        result[protobufMessage.Length + 1] = 16;
        Guid.NewGuid().TryWriteBytes(result.AsSpan(protobufMessage.Length + 2));
        return result;
    }

    private void ReportMajorityMissing(string message)
    {
        var now = Environment.TickCount64;
        int suppressed;
        lock (_gate)
        {
            if (!_failing)
            {
                _failing = true;
                _failingSinceTicks = now;
            }

            if (_lastReportTicks != long.MinValue && now - _lastReportTicks < (long)_options.MajorityLossLogPeriod.TotalMilliseconds)
            {
                _failuresSinceReport++;
                return;
            }

            suppressed = _failuresSinceReport;
            _failuresSinceReport = 0;
            _lastReportTicks = now;
        }

        LogMajorityMissing(message, suppressed, _options.MajorityLossLogPeriod);
    }

    private void ReportSuccess()
    {
        if (!Volatile.Read(ref _failing))
        {
            return;
        }

        long since;
        lock (_gate)
        {
            if (!_failing)
            {
                return;
            }

            _failing = false;
            since = _failingSinceTicks;
            _failuresSinceReport = 0;
            _lastReportTicks = long.MinValue;
        }

        LogMajorityBack(_host.MyNodeId.ToString(), TimeSpan.FromMilliseconds(Environment.TickCount64 - since).TotalSeconds);
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "{Message} ({Suppressed} more such failures since the last report; reported at most once per {Period}.)")]
    private partial void LogMajorityMissing(string message, int suppressed, TimeSpan period);

    [LoggerMessage(Level = LogLevel.Information, Message = "Node {Node}: the Paxos majority is back; Orleans table operations succeed again after {Seconds:0.0} s of failures.")]
    private partial void LogMajorityBack(string node, double seconds);
}

/// <summary>Settings shared by the Paxos-backed Orleans providers (configuration section <c>Paxos:Orleans</c>).</summary>
public sealed class PaxosTableOptions
{
    /// <summary>How long one table operation waits for the log before it fails with <see cref="PaxosMajorityUnavailableException"/>. Default 5 s.</summary>
    public TimeSpan OperationTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>A missing majority is logged at most once per this period (with the count of failures in between). Default 30 s.</summary>
    public TimeSpan MajorityLossLogPeriod { get; set; } = TimeSpan.FromSeconds(30);
}
