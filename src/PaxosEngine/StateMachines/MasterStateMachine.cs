using System.Collections.Concurrent;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Engine.StateMachines;

/// <summary>A group's master as one node sees it.</summary>
/// <param name="Node">The master, or <see cref="NodeId.Null"/> when there is none or its lease expired.</param>
/// <param name="Version">Instance id of the last master operation; <see cref="ulong.MaxValue"/> when none yet.</param>
public sealed record MasterInfo(NodeId Node, ulong Version);

/// <summary>
/// The built-in master-election state machine (PhxPaxos <c>MasterStateMachine</c>, SMID 100000001): a
/// lease granted through the log. Other nodes count the lease from when they execute the operation;
/// the master counts it from before it proposed, minus 100 ms, so its own view always ends first.
/// Leases use the monotonic clock.
/// </summary>
/// <remarks>
/// Unlike PhxPaxos (its issue 186), an operation of this node executed without its proposer context
/// (learned through catch-up, or replayed) keeps the lease when this node remembers proposing it; the
/// lease then runs from the remembered proposal time. Executed on the loop thread; <see cref="Get"/>
/// is thread-safe.
/// </remarks>
internal sealed partial class MasterStateMachine : IStateMachine
{
    /// <summary>The operator code PhxPaxos uses for every master operation.</summary>
    public const uint OperatorComplete = 1;

    private readonly int _groupIndex;
    private readonly ulong _myNodeId;
    private readonly ILogStorage _storage;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<uint, long> _proposedAtMs = new();
    private volatile State _state;

    public MasterStateMachine(int groupIndex, ulong myNodeId, ILogStorage storage, TimeProvider time, ILogger logger)
    {
        _groupIndex = groupIndex;
        _myNodeId = myNodeId;
        _storage = storage;
        _time = time;
        _logger = logger;
        _state = new State(0, ulong.MaxValue, 0, 0);
        if (storage.GetMasterVariables(groupIndex) is { } stored)
        {
            var v = MasterVariables.Parser.ParseFrom(stored);

            // A restarted former master never resumes its own lease: others may have moved on.
            _state = v.MasterNodeid == myNodeId
                ? new State(0, v.Version, v.LeaseTime, 0)
                : new State(v.MasterNodeid, v.Version, v.LeaseTime, NowMs + v.LeaseTime);
        }
    }

    /// <summary>Raised on the loop thread when the master changes (not on renewals): (master or null, version).</summary>
    public event Action<NodeId, ulong>? MasterChanged;

    public int SmId => ReservedSmIds.Master;

    private long NowMs => (long)_time.GetElapsedTime(0, _time.GetTimestamp()).TotalMilliseconds;

    /// <summary>The master whose lease has not expired here, with the version. Thread-safe.</summary>
    public MasterInfo Get()
    {
        var s = _state;
        return s.Master != 0 && NowMs < s.ExpireMs ? new MasterInfo(new NodeId(s.Master), s.Version) : new MasterInfo(NodeId.Null, s.Version);
    }

    /// <summary>The version the next operation must carry.</summary>
    public ulong Version => _state.Version;

    public ulong GetCheckpointInstanceId(int groupIndex) => _state.Version;

    /// <summary>Builds an operation making <paramref name="candidate"/> master (0 = nobody) and remembers when it was proposed.</summary>
    public (byte[] Value, StateMachineContext Context) CreateOperation(ulong candidate, int leaseMs)
    {
        var sid = (uint)Random.Shared.Next();
        var startMs = NowMs;
        _proposedAtMs[sid] = startMs;
        if (_proposedAtMs.Count > 64)
        {
            // Only recent operations matter: an old one can no longer be executed with a live lease.
            foreach (var (key, at) in _proposedAtMs)
            {
                if (startMs - at > 10L * leaseMs)
                {
                    _proposedAtMs.TryRemove(key, out _);
                }
            }
        }

        var op = new MasterOperator
        {
            Nodeid = candidate,
            Version = _state.Version,
            Timeout = leaseMs,
            Operator = OperatorComplete,
            Sid = sid,
        };
        return (op.ToByteArray(), new StateMachineContext(ReservedSmIds.Master, startMs));
    }

    public bool Execute(int groupIndex, ulong instanceId, ReadOnlySpan<byte> value, StateMachineContext? context)
    {
        MasterOperator op;
        try
        {
            op = MasterOperator.Parser.ParseFrom(value);
        }
        catch (InvalidProtocolBufferException)
        {
            LogBadValue(_groupIndex, instanceId);
            return true;
        }

        var s = _state;
        var version = s.Version;
        if (op.HasLastversion && op.Lastversion != 0 && version != ulong.MaxValue && instanceId > version && op.Lastversion != version)
        {
            LogInconsistent(_groupIndex, instanceId, op.Lastversion, version);
            version = op.Lastversion;
        }

        if (op.Version != version)
        {
            // A stale operation (someone else changed the master first): no effect.
            if (context is not null)
            {
                context.Output = false;
            }

            return true;
        }

        var lease = Math.Max(0, op.Timeout);
        _storage.SetMasterVariables(_groupIndex, new MasterVariables
        {
            MasterNodeid = op.Nodeid,
            Version = instanceId,
            LeaseTime = (uint)lease,
        }.ToByteArray());

        long expire;
        if (op.Nodeid == 0)
        {
            expire = 0;
        }
        else if (op.Nodeid == _myNodeId)
        {
            long? start = context?.Input is long proposedAt ? proposedAt
                : _proposedAtMs.TryGetValue(op.Sid, out var remembered) ? remembered : null;
            expire = start is { } at ? at + lease - 100 : 0;
        }
        else
        {
            expire = NowMs + lease;
        }

        var previous = s.Master;
        _state = new State(op.Nodeid, instanceId, lease, expire);
        if (context is not null)
        {
            context.Output = true;
        }

        if (previous != op.Nodeid)
        {
            LogMasterChanged(_groupIndex, new NodeId(op.Nodeid), instanceId);
            MasterChanged?.Invoke(new NodeId(op.Nodeid), instanceId);
        }

        return true;
    }

    /// <summary>Adopts master variables shipped by a peer that is far ahead, if newer.</summary>
    public void UpdateFromPeer(ReadOnlySpan<byte> serialized)
    {
        MasterVariables v;
        try
        {
            v = MasterVariables.Parser.ParseFrom(serialized);
        }
        catch (InvalidProtocolBufferException)
        {
            return;
        }

        var s = _state;
        if (s.Version != ulong.MaxValue && v.Version <= s.Version)
        {
            return;
        }

        _storage.SetMasterVariables(_groupIndex, v.ToByteArray());
        var master = v.MasterNodeid == _myNodeId ? 0 : v.MasterNodeid;
        _state = new State(master, v.Version, v.LeaseTime, master == 0 ? 0 : NowMs + v.LeaseTime);
        if (s.Master != master)
        {
            MasterChanged?.Invoke(new NodeId(master), v.Version);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: master is now {Master} (version {Version}).")]
    private partial void LogMasterChanged(int group, NodeId master, ulong version);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group} instance {Instance}: master operation saw version {LastVersion}, this node has {Version}; adopting it.")]
    private partial void LogInconsistent(int group, ulong instance, ulong lastVersion, ulong version);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group} instance {Instance}: a master operation does not parse; it is ignored.")]
    private partial void LogBadValue(int group, ulong instance);

    private sealed record State(ulong Master, ulong Version, long LeaseMs, long ExpireMs);
}
