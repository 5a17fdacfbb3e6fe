using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Engine.StateMachines;

/// <summary>The outcome of a membership change (PhxPaxos's membership return codes, as a type).</summary>
public enum MembershipStatus
{
    /// <summary>The change was chosen and applied.</summary>
    Ok = 0,

    /// <summary>The change came from another cluster (PhxPaxos -501).</summary>
    GidNotSame = -501,

    /// <summary>Another change was applied first; read the membership again and retry (PhxPaxos -502).</summary>
    VersionConflict = -502,

    /// <summary>The group has no cluster id yet: membership is not managed (PhxPaxos 1001). Enable UseMembership.</summary>
    NoGid = 1001,

    /// <summary>The node to add is already a member (PhxPaxos 1002).</summary>
    NodeExists = 1002,

    /// <summary>The node to remove is not a member (PhxPaxos 1003).</summary>
    NodeNotExists = 1003,

    /// <summary>The change would change nothing (PhxPaxos 1004).</summary>
    NoChange = 1004,

    /// <summary>The proposal carrying the change failed; see <see cref="MembershipResult.ProposeStatus"/>.</summary>
    ProposeFailed = 1,
}

/// <summary>The result of a membership change.</summary>
/// <param name="Status">What happened.</param>
/// <param name="ProposeStatus">The status of the proposal that carried the change, when one was made.</param>
/// <param name="Version">The membership version after the call (the instance of the last change).</param>
public sealed record MembershipResult(MembershipStatus Status, Consensus.ProposeStatus ProposeStatus, ulong Version);

/// <summary>A group's membership as one node sees it.</summary>
/// <param name="Gid">The cluster id; 0 while membership is not managed.</param>
/// <param name="Version">Instance id of the last change; <see cref="ulong.MaxValue"/> when never changed.</param>
/// <param name="Members">The members.</param>
public sealed record Membership(ulong Gid, ulong Version, IReadOnlyList<NodeId> Members);

/// <summary>
/// The built-in membership state machine (PhxPaxos <c>SystemVSM</c>, SMID 100000000): a cluster id
/// (gid), the member list and a version that is the instance id of the last change, so that changes
/// are optimistic and one at a time. The state is persisted (fsync) before it takes effect.
/// </summary>
/// <remarks>Executed on the group's loop thread; <see cref="Current"/> may be read from any thread.</remarks>
internal sealed partial class SystemVariablesStateMachine : IStateMachine
{
    private readonly int _groupIndex;
    private readonly ILogStorage _storage;
    private readonly ILogger _logger;
    private volatile Membership _current;

    public SystemVariablesStateMachine(int groupIndex, ILogStorage storage, IReadOnlyList<NodeId> optionMembers, ILogger logger)
    {
        _groupIndex = groupIndex;
        _storage = storage;
        _logger = logger;
        var stored = storage.GetSystemVariables(groupIndex);
        if (stored is not null && SystemVariables.Parser.ParseFrom(stored) is { Gid: not 0 } variables)
        {
            _current = ToMembership(variables);
        }
        else
        {
            // Until a cluster id exists the members come from the options on every start (as PhxPaxos).
            _current = new Membership(0, ulong.MaxValue, optionMembers);
        }
    }

    /// <summary>Called on the loop thread after the membership changed.</summary>
    public event Action<Membership>? Changed;

    public int SmId => ReservedSmIds.SystemVariables;

    /// <summary>The current membership. Thread-safe.</summary>
    public Membership Current => _current;

    /// <summary>The value that creates the cluster id: the current members under a fresh random gid.</summary>
    public byte[] CreateGidValue(ulong myNodeId)
    {
        var current = _current;
        var gid = (myNodeId ^ (ulong)Random.Shared.NextInt64()) + (ulong)Random.Shared.NextInt64();
        return ToVariables(current with { Gid = gid == 0 ? 1 : gid }).ToByteArray();
    }

    /// <summary>The value that changes the members, based on the current version.</summary>
    public byte[] ChangeValue(IReadOnlyList<NodeId> members)
    {
        var current = _current;
        return ToVariables(current with { Members = members }).ToByteArray();
    }

    public ulong GetCheckpointInstanceId(int groupIndex) => _current.Version;

    public bool Execute(int groupIndex, ulong instanceId, ReadOnlySpan<byte> value, StateMachineContext? context)
    {
        SystemVariables op;
        try
        {
            op = SystemVariables.Parser.ParseFrom(value);
        }
        catch (InvalidProtocolBufferException)
        {
            LogBadValue(_groupIndex, instanceId);
            SetOutput(context, MembershipStatus.ProposeFailed);
            return true;
        }

        var current = _current;
        if (current.Gid != 0 && op.Gid != current.Gid)
        {
            SetOutput(context, MembershipStatus.GidNotSame);
            return true;
        }

        if (op.Version != current.Version)
        {
            SetOutput(context, MembershipStatus.VersionConflict);
            return true;
        }

        op.Version = instanceId;
        _storage.SetSystemVariables(_groupIndex, op.ToByteArray());
        var next = ToMembership(op);
        _current = next;
        LogChanged(_groupIndex, instanceId, next.Gid, string.Join(",", next.Members));
        SetOutput(context, MembershipStatus.Ok);
        Changed?.Invoke(next);
        return true;
    }

    /// <summary>Adopts variables shipped by a peer that is far ahead, if newer (PhxPaxos <c>UpdateByCheckpoint</c>).</summary>
    /// <returns>True when the membership changed.</returns>
    public bool UpdateFromPeer(ReadOnlySpan<byte> serialized)
    {
        SystemVariables op;
        try
        {
            op = SystemVariables.Parser.ParseFrom(serialized);
        }
        catch (InvalidProtocolBufferException)
        {
            return false;
        }

        var current = _current;
        if (op.Version == ulong.MaxValue || op.Gid == 0 || (current.Gid != 0 && op.Gid != current.Gid)
            || (current.Version != ulong.MaxValue && op.Version <= current.Version))
        {
            return false;
        }

        _storage.SetSystemVariables(_groupIndex, op.ToByteArray());
        var next = ToMembership(op);
        _current = next;
        LogChanged(_groupIndex, op.Version, next.Gid, string.Join(",", next.Members));
        Changed?.Invoke(next);
        return true;
    }

    private static void SetOutput(StateMachineContext? context, MembershipStatus status)
    {
        if (context is not null)
        {
            context.Output = status;
        }
    }

    private static Membership ToMembership(SystemVariables v)
    {
        var members = new List<NodeId>(v.MemberShip.Count);
        foreach (var m in v.MemberShip)
        {
            members.Add(new NodeId(m.Nodeid));
        }

        return new Membership(v.Gid, v.Version, members);
    }

    private static SystemVariables ToVariables(Membership m)
    {
        var v = new SystemVariables { Gid = m.Gid, Version = m.Version };
        foreach (var id in m.Members)
        {
            v.MemberShip.Add(new PaxosNodeInfo { Rid = 0, Nodeid = id.Value });
        }

        return v;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: membership changed at instance {Instance} (gid {Gid}): {Members}.")]
    private partial void LogChanged(int group, ulong instance, ulong gid, string members);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group} instance {Instance}: a membership value does not parse; it is ignored.")]
    private partial void LogBadValue(int group, ulong instance);
}
