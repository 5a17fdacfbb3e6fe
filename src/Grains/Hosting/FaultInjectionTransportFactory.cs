using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Grains.Hosting;

/// <summary>
/// Testing feature, off unless configured: gives the silo's Paxos node the built-in UDP/TCP transport with
/// a <see cref="PeerFilter"/> driven by a control file, so that a test harness can partition real silo
/// processes (configuration key <see cref="ConfigurationKey"/>). Only the Paxos engine's traffic is
/// filtered, not Orleans' own silo-to-silo or client traffic.
/// </summary>
/// <remarks>
/// <para>The control file holds one rule a line, <c>outbound ip:port</c> (frames to that node are not sent)
/// or <c>inbound ip:port</c> (frames from that node are dropped on arrival); blank lines and lines starting
/// with <c>#</c> are ignored. A missing or empty file blocks nothing. The file is read when this factory is
/// created, before the transport starts, and then polled every <see cref="PollInterval"/>; writers should
/// replace it atomically (write a temporary file, then rename). A file that does not parse is logged and
/// the previous rules stay.</para>
/// </remarks>
public sealed partial class FaultInjectionTransportFactory : IPaxosTransportFactory, IDisposable
{
    /// <summary>The configuration key naming the control file.</summary>
    public const string ConfigurationKey = "Paxos:FaultInjection:ControlFile";

    /// <summary>How often the control file is read.</summary>
    public static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(100);

    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly Timer _timer;
    private readonly Lock _gate = new();
    private string? _lastText;
    private bool _disposed;

    /// <summary>Reads <paramref name="controlFile"/> once and starts polling it.</summary>
    public FaultInjectionTransportFactory(string controlFile, ILoggerFactory loggerFactory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(controlFile);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        ControlFile = Path.GetFullPath(controlFile);
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<FaultInjectionTransportFactory>();
        LogEnabled(ControlFile);
        Poll();
        _timer = new Timer(_ => Poll(), null, PollInterval, PollInterval);
    }

    /// <summary>The control file (full path).</summary>
    public string ControlFile { get; }

    /// <summary>The drop list the transport applies.</summary>
    public PeerFilter Filter { get; } = new();

    /// <inheritdoc />
    public ITransport? Create(PaxosNodeOptions options, NodeId me) => PaxosNode.CreateNetworkTransport(options, _loggerFactory, Filter);

    /// <summary>Parses control-file text into outbound and inbound sets.</summary>
    /// <exception cref="FormatException">A line is neither blank, a comment nor a rule.</exception>
    public static (HashSet<NodeId> Outbound, HashSet<NodeId> Inbound) Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var outbound = new HashSet<NodeId>();
        var inbound = new HashSet<NodeId>();
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }

            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var set = parts.Length != 2 ? null : parts[0] switch
            {
                "outbound" => outbound,
                "inbound" => inbound,
                _ => null,
            };
            if (set is null)
            {
                throw new FormatException($"'{line}' is not 'outbound ip:port' or 'inbound ip:port'");
            }

            set.Add(NodeId.Parse(parts[1]));
        }

        return (outbound, inbound);
    }

    /// <summary>Stops polling; the last rules stay in force.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            _disposed = true;
        }

        _timer.Dispose();
    }

    private void Poll()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            string text;
            try
            {
                text = File.Exists(ControlFile) ? File.ReadAllText(ControlFile) : string.Empty;
            }
            catch (IOException ex)
            {
                LogReadFailed(ex, ControlFile);
                return;
            }
            catch (UnauthorizedAccessException ex)
            {
                LogReadFailed(ex, ControlFile);
                return;
            }

            if (text == _lastText)
            {
                return;
            }

            _lastText = text;
            try
            {
                var (outbound, inbound) = Parse(text);
                Filter.SetBlockedPeers(outbound, inbound);
                LogApplied(string.Join(",", outbound), string.Join(",", inbound), Filter.DroppedOutbound, Filter.DroppedInbound);
            }
            catch (FormatException ex)
            {
                LogBadFile(ex, ControlFile);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Fault injection is on: the Paxos transport obeys the control file {Path}. This is a testing feature.")]
    private partial void LogEnabled(string path);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Fault injection: Paxos frames blocked to [{Outbound}] and from [{Inbound}] (dropped so far: {DroppedOutbound} out, {DroppedInbound} in).")]
    private partial void LogApplied(string outbound, string inbound, long droppedOutbound, long droppedInbound);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Fault injection: cannot read the control file {Path}; the rules stay as they were.")]
    private partial void LogReadFailed(Exception ex, string path);

    [LoggerMessage(Level = LogLevel.Error, Message = "Fault injection: the control file {Path} does not parse; the rules stay as they were.")]
    private partial void LogBadFile(Exception ex, string path);
}
