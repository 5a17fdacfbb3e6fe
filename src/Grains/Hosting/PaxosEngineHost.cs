using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.StateMachines.KeyValue;

namespace Orleans.Paxos.Grains.Hosting;

/// <summary>
/// The silo's Paxos node and the bridge to it (one per silo). A grain's proposal goes straight to the group's
/// committer queue (one hand-off, bounded once by <see cref="PaxosNodeOptions.MaxWaitingProposals"/>); its result
/// comes back on a completion that runs continuations asynchronously (or, with
/// <see cref="PaxosNodeOptions.AllowSynchronousContinuations"/>, on the engine thread, from which a grain's await
/// still resumes on its activation's scheduler), so grain code never runs on an engine thread and no Orleans
/// scheduler thread ever blocks. Thread-safe.
/// </summary>
public sealed partial class PaxosEngineHost : IDisposable
{
    private readonly PaxosNodeOptions _options;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly IReadOnlyList<PaxosStateMachineRegistration> _registrations;
    private readonly IServiceProvider _services;
    private readonly IPaxosTransportFactory? _transportFactory;
    private readonly Lock _watchGate = new();
    private readonly Lock _stopGate = new();
    private readonly List<Watcher>[] _watchers;
    private readonly List<IStateMachine> _machines = [];
    private PaxosNode? _node;
    private DataFolderLock? _folderLock;

    /// <summary>Creates the host; the node is built and started by <see cref="Start"/>.</summary>
    public PaxosEngineHost(
        IOptions<PaxosNodeOptions> options,
        IEnumerable<PaxosStateMachineRegistration> registrations,
        IServiceProvider services,
        ILoggerFactory loggerFactory,
        IPaxosTransportFactory? transportFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Value;
        var (me, _) = _options.Validate();
        MyNodeId = me;
        _registrations = [.. registrations];
        _services = services;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<PaxosEngineHost>();
        _transportFactory = transportFactory;
        _watchers = new List<Watcher>[_options.GroupCount];
        for (var g = 0; g < _watchers.Length; g++)
        {
            _watchers[g] = [];
        }
    }

    /// <summary>This silo's Paxos node id.</summary>
    public NodeId MyNodeId { get; }

    /// <summary>The number of groups.</summary>
    public int GroupCount => _options.GroupCount;

    /// <summary>The node's options.</summary>
    public PaxosNodeOptions Options => _options;

    /// <summary>The key-value state machine when one is mounted (<c>AddPaxosKeyValueStore</c>), else null.</summary>
    public KeyValueStateMachine? KeyValue { get; private set; }

    /// <summary>The running node.</summary>
    /// <exception cref="InvalidOperationException">The node is not running.</exception>
    public PaxosNode Node => _node ?? throw new InvalidOperationException($"The Paxos node {MyNodeId} is not running (the silo is starting or stopping).");

    /// <summary>Whether the node is running.</summary>
    public bool IsRunning => _node is not null;

    /// <summary>Builds the node, mounts the registered state machines and starts it.</summary>
    public void Start()
    {
        if (_node is not null)
        {
            return;
        }

        // Before anything opens a store: a second node on this folder stops here, naming the holder.
        _folderLock ??= DataFolderLock.Acquire(_options.StoragePath, MyNodeId.ToString());
        var transport = _transportFactory?.Create(_options, MyNodeId);
        var node = new PaxosNode(_options, _loggerFactory, transport);
        try
        {
            foreach (var registration in _registrations)
            {
                var machine = registration.Factory(_services, _options);
                _machines.Add(machine);
                if (machine is KeyValueStateMachine kv)
                {
                    KeyValue ??= kv;
                }

                if (registration.Group is { } g)
                {
                    node.AddStateMachine(g, machine);
                }
                else
                {
                    node.AddStateMachine(machine);
                }
            }

            node.InstanceExecuted += OnInstanceExecuted;
            AttachEngineEvents(node);
            node.Start();
        }
        catch
        {
            node.Dispose();
            transport?.Dispose();
            DisposeMachines();
            ReleaseFolder();
            throw;
        }

        _node = node;
        LogStarted(MyNodeId, _options.GroupCount, _options.StoragePath);
    }

    /// <summary>
    /// Stops the node (waiting proposals complete with <see cref="ProposeStatus.NodeStopped"/>) and disposes the state
    /// machines. Safe to call more than once and from several threads at once (the silo lifecycle and
    /// <see cref="PaxosHostExtensions.WaitForPaxosShutdownAsync"/> may both stop the node); the first call stops it.
    /// </summary>
    public Task StopAsync()
    {
        lock (_stopGate)
        {
            var node = _node;
            if (node is null)
            {
                return Task.CompletedTask;
            }

            node.Dispose();
            _node = null;
            lock (_watchGate)
            {
                foreach (var list in _watchers)
                {
                    foreach (var w in list)
                    {
                        w.Channel.Writer.TryComplete();
                    }

                    list.Clear();
                }
            }

            DisposeMachines();
            ReleaseFolder();
        }

        LogStopped(MyNodeId);
        return Task.CompletedTask;
    }

    /// <summary>Stops the node if it still runs.</summary>
    public void Dispose()
    {
        lock (_stopGate)
        {
            _node?.Dispose();
            _node = null;
            DisposeMachines();
            ReleaseFolder();
        }
    }

    private void ReleaseFolder()
    {
        _folderLock?.Dispose();
        _folderLock = null;
    }

    /// <summary>
    /// Proposes a value: it goes straight to the group's committer queue without blocking the caller's thread, and
    /// the result arrives off the engine's threads (on one with <see cref="PaxosNodeOptions.AllowSynchronousContinuations"/>
    /// when the value is chosen: code that awaits it with <c>ConfigureAwait(false)</c> must move off it, as
    /// <see cref="Storage.PaxosTableAccess"/> does). When <see cref="PaxosNodeOptions.MaxWaitingProposals"/> proposals
    /// already wait, the result is <see cref="ProposeStatus.TooManyWaiting"/> at once.
    /// </summary>
    /// <param name="group">The group.</param>
    /// <param name="smId">The state machine (0: none).</param>
    /// <param name="value">The value.</param>
    /// <param name="batch">Use BatchPropose.</param>
    /// <param name="cancellationToken">Stops waiting (the result is then <see cref="ProposeStatus.Timeout"/>).</param>
    public Task<ProposeResult> ProposeAsync(int group, int smId, byte[] value, bool batch, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(value);
        if ((uint)group >= (uint)_options.GroupCount)
        {
            return Task.FromResult(new ProposeResult(ProposeStatus.InvalidGroup));
        }

        if (_node is not { } node)
        {
            return Task.FromResult(new ProposeResult(ProposeStatus.NodeStopped));
        }

        var context = smId == 0 ? null : new StateMachineContext(smId);
        return batch
            ? node.BatchProposeAsync(group, value, context, cancellationToken)
            : context is null
                ? node.ProposeAsync(group, ReservedSmIds.None, value, cancellationToken)
                : node.ProposeAsync(group, value, context, cancellationToken);
    }

    /// <summary>
    /// Registers for the instance ids a group executes from now on (for <c>WatchAsync</c>). The channel is
    /// bounded and drops the oldest ids when the reader is slow; readers fill gaps from the log.
    /// </summary>
    public IDisposable WatchExecuted(int group, out ChannelReader<ulong> reader)
    {
        var watcher = new Watcher(this, group, Channel.CreateBounded<ulong>(new BoundedChannelOptions(1024)
        {
            SingleReader = true,
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.DropOldest,
        }));
        lock (_watchGate)
        {
            _watchers[group].Add(watcher);
        }

        reader = watcher.Channel.Reader;
        return watcher;
    }

    private void OnInstanceExecuted(int group, ulong instance, ReadOnlyMemory<byte> value)
    {
        // Loop thread: hand the id over without blocking and without running any waiter's code.
        var list = _watchers[group];
        if (list.Count == 0)
        {
            return;
        }

        lock (_watchGate)
        {
            foreach (var w in list)
            {
                w.Channel.Writer.TryWrite(instance);
            }
        }
    }

    private void DisposeMachines()
    {
        foreach (var m in _machines)
        {
            (m as IDisposable)?.Dispose();
        }

        _machines.Clear();
    }

    private sealed class Watcher(PaxosEngineHost host, int group, Channel<ulong> channel) : IDisposable
    {
        public Channel<ulong> Channel { get; } = channel;

        public void Dispose()
        {
            lock (host._watchGate)
            {
                host._watchers[group].Remove(this);
            }

            Channel.Writer.TryComplete();
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Paxos node {Node} is running {Groups} groups with data in {Path}.")]
    private partial void LogStarted(NodeId node, int groups, string path);

    [LoggerMessage(Level = LogLevel.Information, Message = "Paxos node {Node} stopped.")]
    private partial void LogStopped(NodeId node);
}

/// <summary>A state machine to mount on a silo's node.</summary>
/// <param name="Group">The group, or null for every group.</param>
/// <param name="Factory">Creates the machine when the node starts, from the silo's services and the node's options.</param>
public sealed record PaxosStateMachineRegistration(int? Group, Func<IServiceProvider, PaxosNodeOptions, IStateMachine> Factory);

/// <summary>Supplies the transport a silo's Paxos node uses instead of the engine's built-in UDP/TCP transport.</summary>
public interface IPaxosTransportFactory
{
    /// <summary>Creates the transport for node <paramref name="me"/>; null to use the built-in transport.</summary>
    Engine.Transport.ITransport? Create(PaxosNodeOptions options, NodeId me);
}
