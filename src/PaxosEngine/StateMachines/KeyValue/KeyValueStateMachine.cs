using System.Collections.Concurrent;
using System.Globalization;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Orleans.Paxos.Engine.StateMachines.KeyValue;

/// <summary>
/// A replicated key-value store (PhxPaxos's phxkv sample, done properly): get, put, delete and
/// compare-and-set with per-key versions, where a key's version is one more than the instance id of its
/// last write (so that version 0 always means "absent", even for a key written in instance 0).
/// Values are <see cref="KvOperation"/> messages built with <see cref="KeyValueCommand"/>; the result
/// (<see cref="KeyValueResult"/>) is set as <see cref="StateMachineContext.Output"/> on the proposing node.
/// </summary>
/// <remarks>
/// <para>Each group's data lives in <c>&lt;root&gt;/g&lt;N&gt;/kv/kv.db</c> (SQLite). The position of the last
/// applied operation (instance id and how many operations of that instance, since a batch holds
/// several) is committed in the same transaction as the data, so a restart replays exactly what is
/// missing and replaying is idempotent. <see cref="GetCheckpointInstanceId"/> reports the instance
/// before the last applied one, so that a partly applied batch is replayed; its applied operations are
/// skipped.</para>
/// <para>One instance may be mounted on several groups (each gets its own store). <see cref="Execute"/>
/// runs on the group's loop thread; <see cref="ReadStale"/> and the checkpoint hooks are thread-safe.</para>
/// </remarks>
public sealed partial class KeyValueStateMachine : IStateMachine, IDisposable
{
    /// <summary>The default state machine id (PhxPaxos's phxkv uses 1).</summary>
    public const int DefaultSmId = 1;

    private readonly string _root;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<int, GroupState> _groups = new();
    private readonly object _checkpointGate = new();
    private bool _disposed;

    /// <summary>Creates the state machine.</summary>
    /// <param name="storageRoot">The node's storage root (<c>PaxosNodeOptions.StoragePath</c>); data goes under <c>g&lt;N&gt;/kv/</c>.</param>
    /// <param name="smId">The state machine id; default 1.</param>
    /// <param name="logger">Where problems are logged.</param>
    public KeyValueStateMachine(string storageRoot, int smId = DefaultSmId, ILogger<KeyValueStateMachine>? logger = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(storageRoot);
        _root = storageRoot;
        SmId = smId;
        _logger = logger ?? (ILogger)NullLogger.Instance;
    }

    /// <inheritdoc />
    public int SmId { get; }

    /// <summary>The folder holding a group's key-value data.</summary>
    public string GetGroupDirectory(int groupIndex) =>
        Path.Combine(_root, "g" + groupIndex.ToString(CultureInfo.InvariantCulture), "kv");

    /// <inheritdoc />
    public bool Execute(int groupIndex, ulong instanceId, ReadOnlySpan<byte> value, StateMachineContext? context)
    {
        var state = GetState(groupIndex);
        var store = state.Store;

        // Position of this operation within its instance (a batch executes several with one instance id).
        if (state.CurrentInstance != instanceId)
        {
            state.CurrentInstance = instanceId;
            state.PositionInInstance = 0;
            state.KeysWritten.Clear();
        }

        var position = state.PositionInInstance++;
        KvOperation op;
        try
        {
            op = KvOperation.Parser.ParseFrom(value);
        }
        catch (InvalidProtocolBufferException ex)
        {
            if (!IsApplied(store, instanceId, position))
            {
                LogBadOperation(groupIndex, instanceId, ex.Message);
                SetOutput(context, new KeyValueResult(KeyValueStatus.BadRequest, null, 0));
            }

            return true;
        }

        // One write per key and instance: a later write of the same key in the same batch is refused
        // (Retry), so that a version names exactly one write. Decided from the operations alone, so a
        // replay after a restart refuses the same ones.
        var firstWriteOfKey = op.Type == KvOperationType.Get || op.Key.IsEmpty || state.KeysWritten.Add(Convert.ToHexString(op.Key.Span));
        if (IsApplied(store, instanceId, position))
        {
            // Already applied before a restart: replaying must not apply it twice.
            return true;
        }

        if (!firstWriteOfKey)
        {
            SetOutput(context, new KeyValueResult(KeyValueStatus.Retry, null, 0));
            return true;
        }

        try
        {
            SetOutput(context, Apply(store, op, instanceId, position));
            return true;
        }
        catch (Exception ex) when (ex is Microsoft.Data.Sqlite.SqliteException or IOException)
        {
            LogStoreFailure(groupIndex, instanceId, store.DatabasePath, ex);

            // The engine retries the whole instance: count positions from its start again.
            state.CurrentInstance = null;
            return false;
        }
    }

    /// <summary>
    /// Reads a key directly from this node's store, without going through the log: STALE — it reflects
    /// what this node has executed so far, which may lag the group. Thread-safe.
    /// </summary>
    public KeyValueResult ReadStale(int groupIndex, ReadOnlySpan<byte> key) => GetState(groupIndex).Store.ReadStale(key);

    /// <inheritdoc />
    public ulong GetCheckpointInstanceId(int groupIndex)
    {
        var store = GetState(groupIndex).Store;
        return store.LastInstance is { } last && last > 0 ? last - 1 : StateMachineCheckpoint.None;
    }

    /// <summary>Closes every group's store.</summary>
    public void Dispose()
    {
        lock (_checkpointGate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            foreach (var state in _groups.Values)
            {
                state.Store.Dispose();
            }

            _groups.Clear();
        }
    }

    private static KeyValueResult Apply(KeyValueStore store, KvOperation op, ulong instanceId, int position)
    {
        var key = op.Key.Span;
        if (key.IsEmpty)
        {
            return new KeyValueResult(KeyValueStatus.BadRequest, null, 0);
        }

        switch (op.Type)
        {
            case KvOperationType.Get:
                return store.Read(key);

            case KvOperationType.Put:
                {
                    var value = op.Value.ToByteArray();
                    store.Apply(key, value, instanceId, position + 1);
                    return new KeyValueResult(KeyValueStatus.Ok, null, instanceId + 1);
                }

            case KvOperationType.Delete:
                {
                    var current = store.Read(key);
                    if (op.CheckVersion && current.Version != op.ExpectedVersion)
                    {
                        return current with { Status = KeyValueStatus.VersionConflict };
                    }

                    if (current.Status == KeyValueStatus.NotFound)
                    {
                        return KeyValueResult.NotFound;
                    }

                    store.Apply(key, null, instanceId, position + 1);
                    return new KeyValueResult(KeyValueStatus.Ok, null, 0);
                }

            case KvOperationType.CompareAndSet:
                {
                    var current = store.Read(key);
                    if (current.Version != op.ExpectedVersion)
                    {
                        return current with { Status = KeyValueStatus.VersionConflict };
                    }

                    store.Apply(key, op.Value.ToByteArray(), instanceId, position + 1);
                    return new KeyValueResult(KeyValueStatus.Ok, null, instanceId + 1);
                }

            default:
                return new KeyValueResult(KeyValueStatus.BadRequest, null, 0);
        }
    }

    private static bool IsApplied(KeyValueStore store, ulong instanceId, int position) =>
        store.LastInstance is { } last && (instanceId < last || (instanceId == last && position < store.AppliedInLastInstance));

    private static void SetOutput(StateMachineContext? context, KeyValueResult result)
    {
        if (context is not null)
        {
            context.Output = result;
        }
    }

    private GroupState GetState(int groupIndex)
    {
        if (_groups.TryGetValue(groupIndex, out var state))
        {
            return state;
        }

        lock (_checkpointGate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _groups.GetOrAdd(groupIndex, g => new GroupState(new KeyValueStore(GetGroupDirectory(g))));
        }
    }

    /// <summary>Per-group state: the store and the loop thread's position within the current instance.</summary>
    private sealed class GroupState(KeyValueStore store)
    {
        public KeyValueStore Store { get; } = store;

        public ulong? CurrentInstance { get; set; }

        public int PositionInInstance { get; set; }

        /// <summary>Keys (hex) that a write of the current instance has targeted.</summary>
        public HashSet<string> KeysWritten { get; } = new(StringComparer.Ordinal);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group} instance {Instance}: a key-value operation does not parse ({Reason}); it is answered with BadRequest.")]
    private partial void LogBadOperation(int group, ulong instance, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group} instance {Instance}: the key-value store {Path} failed; the instance will be retried.")]
    private partial void LogStoreFailure(int group, ulong instance, string path, Exception ex);
}
