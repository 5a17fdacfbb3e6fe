using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Orleans.Paxos.Engine.StateMachines;

namespace Orleans.Paxos.Grains.Clustering;

/// <summary>
/// The Orleans membership table as a replicated state machine (mounted on group 0 by
/// <c>UsePaxosClustering</c>): every read and write of the table is a value in the group's log, executed
/// in log order on every node, so every silo sees one linearizable table. Holds one table per Orleans
/// cluster id.
/// </summary>
/// <remarks>
/// <para>ETags are derived from the log position of the write (<c>instance.position</c>), so every node
/// computes the same ones. The table version and the row ETag are checked inside <see cref="Execute"/>,
/// atomically with the write.</para>
/// <para>State is small (one row per silo incarnation) and kept in memory; after each write it is saved to
/// <c>&lt;root&gt;/g&lt;N&gt;/membership/table.bin</c> (written to a temporary file, flushed to disk and
/// renamed) together with the log position it reflects, so a restart replays exactly what is missing.
/// <see cref="Execute"/> runs on the group's loop thread; the checkpoint hooks are thread-safe.</para>
/// </remarks>
public sealed partial class MembershipStateMachine : IStateMachine
{
    /// <summary>The default state machine id of the membership table.</summary>
    public const int DefaultSmId = 1015;

    /// <summary>The file holding a group's table.</summary>
    public const string FileName = "table.bin";

    private const string CheckpointFolderName = "checkpoint";
    private const byte FileFormat = 1;

    private readonly string _root;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<int, GroupTables> _groups = new();
    private readonly Lock _gate = new();
    private bool _checkpointLocked;

    /// <summary>Creates the state machine.</summary>
    /// <param name="storageRoot">The node's storage root; data goes under <c>g&lt;N&gt;/membership/</c>.</param>
    /// <param name="smId">The state machine id.</param>
    /// <param name="logger">Where problems are logged.</param>
    public MembershipStateMachine(string storageRoot, int smId = DefaultSmId, ILogger<MembershipStateMachine>? logger = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(storageRoot);
        _root = storageRoot;
        SmId = smId;
        _logger = logger ?? (ILogger)NullLogger.Instance;
    }

    /// <inheritdoc />
    public int SmId { get; }

    /// <summary>The folder holding a group's table.</summary>
    public string GetGroupDirectory(int groupIndex) =>
        Path.Combine(_root, "g" + groupIndex.ToString(CultureInfo.InvariantCulture), "membership");

    /// <inheritdoc />
    public bool Execute(int groupIndex, ulong instanceId, ReadOnlySpan<byte> value, StateMachineContext? context)
    {
        var state = GetState(groupIndex);
        if (state.CurrentInstance != instanceId)
        {
            state.CurrentInstance = instanceId;
            state.PositionInInstance = 0;
        }

        var position = state.PositionInInstance++;
        MembershipCommand command;
        try
        {
            command = MembershipCommand.Decode(value);
        }
        catch (InvalidDataException ex)
        {
            LogBadCommand(groupIndex, instanceId, ex.Message);
            SetOutput(context, MembershipResult.Failed);
            return true;
        }

        var applied = state.LastInstance is { } last && (instanceId < last || (instanceId == last && position < state.AppliedInLastInstance));
        if (applied && command.IsWrite)
        {
            return true; // replay after a restart: already in the saved table
        }

        MembershipResult result;
        lock (_gate)
        {
            result = Apply(state, command, instanceId, position);
            if (command.IsWrite && !applied)
            {
                state.LastInstance = instanceId;
                state.AppliedInLastInstance = position + 1;
                try
                {
                    Save(groupIndex, state);
                }
                catch (IOException ex)
                {
                    LogSaveFailed(groupIndex, instanceId, ex);

                    // Reload what is on disk and let the engine retry the instance.
                    Load(groupIndex, state);
                    state.CurrentInstance = null;
                    return false;
                }
            }
        }

        SetOutput(context, result);
        return true;
    }

    /// <inheritdoc />
    public ulong GetCheckpointInstanceId(int groupIndex)
    {
        var state = GetState(groupIndex);
        return state.LastInstance is { } last && last > 0 ? last - 1 : StateMachineCheckpoint.None;
    }

    /// <inheritdoc />
    public bool LockCheckpointState()
    {
        lock (_gate)
        {
            if (_checkpointLocked || _groups.IsEmpty)
            {
                return false;
            }

            foreach (var (group, state) in _groups)
            {
                var folder = Path.Combine(GetGroupDirectory(group), CheckpointFolderName);
                Directory.CreateDirectory(folder);
                File.WriteAllBytes(Path.Combine(folder, FileName), Serialize(state));
            }

            _checkpointLocked = true;
            return true;
        }
    }

    /// <inheritdoc />
    public CheckpointState? GetCheckpointState(int groupIndex)
    {
        lock (_gate)
        {
            var folder = Path.Combine(GetGroupDirectory(groupIndex), CheckpointFolderName);
            return _checkpointLocked && File.Exists(Path.Combine(folder, FileName)) ? new CheckpointState(folder, [FileName]) : null;
        }
    }

    /// <inheritdoc />
    public void UnlockCheckpointState()
    {
        lock (_gate)
        {
            foreach (var group in _groups.Keys)
            {
                var folder = Path.Combine(GetGroupDirectory(group), CheckpointFolderName);
                if (Directory.Exists(folder))
                {
                    Directory.Delete(folder, recursive: true);
                }
            }

            _checkpointLocked = false;
        }
    }

    /// <inheritdoc />
    public bool LoadCheckpointState(int groupIndex, string directory, IReadOnlyList<string> files, ulong checkpointInstanceId)
    {
        ArgumentNullException.ThrowIfNull(files);
        var source = files.Where(f => string.Equals(Path.GetFileName(f), FileName, StringComparison.Ordinal)).Select(f => Path.Combine(directory, f)).FirstOrDefault();
        if (source is null || !File.Exists(source))
        {
            LogCheckpointMissing(groupIndex, directory);
            return false;
        }

        var state = GetState(groupIndex);
        lock (_gate)
        {
            try
            {
                var loaded = new GroupTables();
                Deserialize(File.ReadAllBytes(source), loaded);
                state.ReplaceWith(loaded);
                state.CurrentInstance = null;
                Save(groupIndex, state);
                return true;
            }
            catch (Exception ex) when (ex is IOException or InvalidDataException)
            {
                LogCheckpointFailed(groupIndex, source, ex);
                return false;
            }
        }
    }

    private static MembershipResult Apply(GroupTables state, MembershipCommand command, ulong instanceId, int position)
    {
        var etag = instanceId.ToString(CultureInfo.InvariantCulture) + "." + position.ToString(CultureInfo.InvariantCulture);
        state.Tables.TryGetValue(command.ClusterId, out var table);
        switch (command.Operation)
        {
            case MembershipOperation.ReadAll:
                return new MembershipResult(true, Snapshot(table, null));

            case MembershipOperation.ReadRow:
                return new MembershipResult(true, Snapshot(table, command.Silo));

            case MembershipOperation.InsertRow or MembershipOperation.UpdateRow:
                {
                    var entry = command.Entry!;
                    var key = entry.SiloAddress.ToParsableString();
                    var version = table?.Version ?? 0;
                    if (command.TableVersion != version + 1)
                    {
                        return MembershipResult.Failed;
                    }

                    var exists = table is not null && table.Rows.ContainsKey(key);
                    if (command.Operation == MembershipOperation.InsertRow ? exists : (!exists || table!.Rows[key].ETag != command.ETag))
                    {
                        return MembershipResult.Failed;
                    }

                    if (table is null)
                    {
                        table = new ClusterTable();
                        state.Tables[command.ClusterId] = table;
                    }

                    table.Rows[key] = new Row(MembershipEntryCodec.Copy(entry), etag);
                    table.Version = command.TableVersion;
                    table.VersionEtag = etag;
                    return MembershipResult.Succeeded;
                }

            case MembershipOperation.UpdateIAmAlive:
                {
                    if (table is null || !table.Rows.TryGetValue(command.Silo!.ToParsableString(), out var row))
                    {
                        return MembershipResult.Failed;
                    }

                    row.Entry.IAmAliveTime = command.Time;
                    return MembershipResult.Succeeded;
                }

            case MembershipOperation.DeleteTable:
                state.Tables.Remove(command.ClusterId);
                return MembershipResult.Succeeded;

            case MembershipOperation.CleanupDefunct:
                if (table is not null)
                {
                    foreach (var (key, row) in table.Rows.ToList())
                    {
                        var e = row.Entry;
                        var lastSeen = e.IAmAliveTime.Ticks > e.StartTime.Ticks ? e.IAmAliveTime : e.StartTime;
                        if (e.Status != SiloStatus.Active && lastSeen < command.Time)
                        {
                            table.Rows.Remove(key);
                        }
                    }
                }

                return MembershipResult.Succeeded;

            default:
                return MembershipResult.Failed;
        }
    }

    private static MembershipTableData Snapshot(ClusterTable? table, SiloAddress? only)
    {
        var version = table is null ? new TableVersion(0, "0") : new TableVersion(table.Version, table.VersionEtag);
        var rows = new List<Tuple<MembershipEntry, string>>();
        if (table is not null)
        {
            foreach (var row in table.Rows.Values)
            {
                if (only is null || row.Entry.SiloAddress.Equals(only))
                {
                    rows.Add(Tuple.Create(MembershipEntryCodec.Copy(row.Entry), row.ETag));
                }
            }
        }

        return new MembershipTableData(rows, version);
    }

    private static void SetOutput(StateMachineContext? context, MembershipResult result)
    {
        if (context is not null)
        {
            context.Output = result;
        }
    }

    private GroupTables GetState(int groupIndex) => _groups.GetOrAdd(groupIndex, g =>
    {
        var state = new GroupTables();
        lock (_gate)
        {
            Load(g, state);
        }

        return state;
    });

    private void Load(int groupIndex, GroupTables state)
    {
        var path = Path.Combine(GetGroupDirectory(groupIndex), FileName);
        var loaded = new GroupTables();
        if (File.Exists(path))
        {
            try
            {
                Deserialize(File.ReadAllBytes(path), loaded);
            }
            catch (InvalidDataException ex)
            {
                // Unreadable: start empty; the group replays the log from its checkpoint.
                LogUnreadable(groupIndex, path, ex.Message);
                loaded = new GroupTables();
            }
        }

        state.ReplaceWith(loaded);
    }

    private void Save(int groupIndex, GroupTables state)
    {
        var folder = GetGroupDirectory(groupIndex);
        Directory.CreateDirectory(folder);
        var path = Path.Combine(folder, FileName);
        var temp = path + ".tmp";
        using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            file.Write(Serialize(state));
            file.Flush(flushToDisk: true);
        }

        File.Move(temp, path, overwrite: true);
    }

    private static byte[] Serialize(GroupTables state)
    {
        using var stream = new MemoryStream();
        using (var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(FileFormat);
            w.Write(state.LastInstance.HasValue);
            w.Write(state.LastInstance ?? 0);
            w.Write(state.AppliedInLastInstance);
            w.Write(state.Tables.Count);
            foreach (var (clusterId, table) in state.Tables)
            {
                w.Write(clusterId);
                w.Write(table.Version);
                w.Write(table.VersionEtag);
                w.Write(table.Rows.Count);
                foreach (var row in table.Rows.Values)
                {
                    w.Write(row.ETag);
                    MembershipEntryCodec.Write(w, row.Entry);
                }
            }
        }

        return stream.ToArray();
    }

    private static void Deserialize(byte[] bytes, GroupTables into)
    {
        try
        {
            using var r = new BinaryReader(new MemoryStream(bytes, writable: false), Encoding.UTF8);
            if (r.ReadByte() != FileFormat)
            {
                throw new InvalidDataException("Unknown membership table file format.");
            }

            var hasLast = r.ReadBoolean();
            var last = r.ReadUInt64();
            into.LastInstance = hasLast ? last : null;
            into.AppliedInLastInstance = r.ReadInt32();
            var tables = r.ReadInt32();
            for (var t = 0; t < tables; t++)
            {
                var table = new ClusterTable();
                var clusterId = r.ReadString();
                table.Version = r.ReadInt32();
                table.VersionEtag = r.ReadString();
                var rows = r.ReadInt32();
                for (var i = 0; i < rows; i++)
                {
                    var etag = r.ReadString();
                    var entry = MembershipEntryCodec.Read(r);
                    table.Rows[entry.SiloAddress.ToParsableString()] = new Row(entry, etag);
                }

                into.Tables[clusterId] = table;
            }
        }
        catch (Exception ex) when (ex is EndOfStreamException or FormatException or ArgumentException)
        {
            throw new InvalidDataException("The membership table file is damaged: " + ex.Message, ex);
        }
    }

    /// <summary>The tables of one group and the log position they reflect. Owned by the group's loop thread.</summary>
    private sealed class GroupTables
    {
        public Dictionary<string, ClusterTable> Tables { get; private set; } = new(StringComparer.Ordinal);

        public ulong? LastInstance { get; set; }

        public int AppliedInLastInstance { get; set; }

        public ulong? CurrentInstance { get; set; }

        public int PositionInInstance { get; set; }

        public void ReplaceWith(GroupTables other)
        {
            Tables = other.Tables;
            LastInstance = other.LastInstance;
            AppliedInLastInstance = other.AppliedInLastInstance;
        }
    }

    private sealed class ClusterTable
    {
        public int Version { get; set; }

        public string VersionEtag { get; set; } = "0";

        public Dictionary<string, Row> Rows { get; } = new(StringComparer.Ordinal);
    }

    private sealed record Row(MembershipEntry Entry, string ETag);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group} instance {Instance}: a membership command does not decode ({Reason}); it is answered with a failure.")]
    private partial void LogBadCommand(int group, ulong instance, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group} instance {Instance}: saving the membership table failed; the instance will be retried.")]
    private partial void LogSaveFailed(int group, ulong instance, Exception ex);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group}: the membership table file {Path} is unreadable ({Reason}); starting from an empty table and the log.")]
    private partial void LogUnreadable(int group, string path, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group}: the received checkpoint in {Directory} has no membership table.")]
    private partial void LogCheckpointMissing(int group, string directory);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group}: installing the membership checkpoint {Path} failed.")]
    private partial void LogCheckpointFailed(int group, string path, Exception ex);
}

/// <summary>The result of a membership operation, set on the proposing node.</summary>
/// <param name="Ok">Whether the operation succeeded (for writes: the version and ETag checks passed).</param>
/// <param name="Data">The table (reads).</param>
internal sealed record MembershipResult(bool Ok, MembershipTableData? Data = null)
{
    public static readonly MembershipResult Succeeded = new(true);
    public static readonly MembershipResult Failed = new(false);
}
