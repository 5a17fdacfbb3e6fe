using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.StateMachines;

/// <summary>
/// The state machines mounted on one group (PhxPaxos <c>SMFac</c>). Dispatches chosen values by
/// state machine id, expanding batches. Used on the group's loop thread.
/// </summary>
internal sealed partial class StateMachineRegistry
{
    private readonly int _groupIndex;
    private readonly ILogger _logger;
    private readonly List<IStateMachine> _machines = [];
    private readonly List<IStateMachine> _builtIn = [];
    private readonly BatchEntries _batch = new(); // Execute runs on the group's loop only

    public StateMachineRegistry(int groupIndex, ILogger logger)
    {
        _groupIndex = groupIndex;
        _logger = logger;
    }

    public IReadOnlyList<IStateMachine> Machines => _machines;

    /// <summary>Whether <paramref name="smId"/> is a built-in state machine's (membership, master): never part of a checkpoint transfer or replay.</summary>
    public static bool IsBuiltIn(int smId) => smId is ReservedSmIds.SystemVariables or ReservedSmIds.Master;

    /// <summary>Mounts a built-in state machine (membership, master).</summary>
    public void AddBuiltIn(IStateMachine machine)
    {
        _machines.Add(machine);
        _builtIn.Add(machine);
    }

    /// <summary>Mounts a state machine; a second one with the same id is ignored (the first wins, as PhxPaxos).</summary>
    /// <exception cref="ArgumentException">The id is reserved.</exception>
    public bool Add(IStateMachine machine)
    {
        ArgumentNullException.ThrowIfNull(machine);
        if (machine.SmId is ReservedSmIds.None or ReservedSmIds.SystemVariables or ReservedSmIds.Master or ReservedSmIds.Batch)
        {
            throw new ArgumentException($"State machine id {machine.SmId} is reserved (0 and 100000000-100000002).", nameof(machine));
        }

        foreach (var m in _machines)
        {
            if (m.SmId == machine.SmId)
            {
                return false;
            }
        }

        _machines.Add(machine);
        return true;
    }

    public IStateMachine? Find(int smId)
    {
        foreach (var m in _machines)
        {
            if (m.SmId == smId)
            {
                return m;
            }
        }

        return null;
    }

    /// <summary>
    /// Executes a chosen packed value. <paramref name="contexts"/> holds the proposer's contexts (one per
    /// value, or one per batch entry) on the proposing node, null elsewhere.
    /// </summary>
    /// <returns>False on a system failure: the instance must not advance.</returns>
    public bool Execute(ulong instanceId, ByteString packed, IReadOnlyList<StateMachineContext?>? contexts)
    {
        if (!ValueCodec.TryUnpack(packed.Span, out var smId, out var body))
        {
            return true;
        }

        if (smId != ReservedSmIds.Batch)
        {
            return ExecuteOne(instanceId, smId, body, contexts is { Count: > 0 } ? contexts[0] : null);
        }

        var batch = _batch;
        try
        {
            batch.Read(body);
        }
        catch (InvalidProtocolBufferException ex)
        {
            LogBadBatch(_groupIndex, instanceId, ex);
            return false;
        }

        if (contexts is not null && contexts.Count != batch.Count)
        {
            LogBatchContextMismatch(_groupIndex, instanceId, batch.Count, contexts.Count);
            return false;
        }

        for (var i = 0; i < batch.Count; i++)
        {
            if (!ExecuteOne(instanceId, batch.SmIdAt(i), batch.ValueAt(body, i), contexts?[i]))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// The group's checkpoint, as PhxPaxos: the largest any user state machine reports, or, with no user
    /// state machine, the largest of the built-in ones (whose state is persisted when it changes).
    /// </summary>
    public ulong GetCheckpointInstanceId()
    {
        var result = StateMachineCheckpoint.None;
        var hasUser = _machines.Count > _builtIn.Count;
        foreach (var m in _machines)
        {
            if (hasUser == _builtIn.Contains(m))
            {
                continue;
            }

            var cp = m.GetCheckpointInstanceId(_groupIndex);
            if (cp != StateMachineCheckpoint.None && (result == StateMachineCheckpoint.None || cp > result))
            {
                result = cp;
            }
        }

        return result;
    }

    /// <summary>Executes the parts of a packed value that belong to <paramref name="machine"/> only (a recovery replay).</summary>
    public void ExecuteOnly(IStateMachine machine, ulong instanceId, ByteString packed)
    {
        if (!ValueCodec.TryUnpack(packed.Span, out var smId, out var body))
        {
            return;
        }

        if (smId == machine.SmId)
        {
            machine.Execute(_groupIndex, instanceId, body, null);
            return;
        }

        if (smId != ReservedSmIds.Batch)
        {
            return;
        }

        var batch = new BatchEntries();
        try
        {
            batch.Read(body);
        }
        catch (InvalidProtocolBufferException)
        {
            return;
        }

        for (var i = 0; i < batch.Count; i++)
        {
            if (batch.SmIdAt(i) == machine.SmId)
            {
                machine.Execute(_groupIndex, instanceId, batch.ValueAt(body, i), null);
            }
        }
    }

    private bool ExecuteOne(ulong instanceId, int smId, ReadOnlySpan<byte> body, StateMachineContext? context)
    {
        if (smId == ReservedSmIds.None)
        {
            return true;
        }

        var machine = Find(smId);
        if (machine is null)
        {
            LogUnknownStateMachine(_groupIndex, instanceId, smId);
            return false;
        }

        return machine.Execute(_groupIndex, instanceId, body, context is not null && context.SmId == smId ? context : null);
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group} instance {Instance}: no state machine with id {SmId} is mounted; the group waits here until one is.")]
    private partial void LogUnknownStateMachine(int group, ulong instance, int smId);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group} instance {Instance}: the batch value does not parse.")]
    private partial void LogBadBatch(int group, ulong instance, Exception ex);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group} instance {Instance}: batch holds {Values} values but {Contexts} contexts were proposed.")]
    private partial void LogBatchContextMismatch(int group, ulong instance, int values, int contexts);
}
