using Microsoft.Extensions.Logging;

namespace Orleans.Paxos.Engine.StateMachines.KeyValue;

/// <summary>Checkpoint hooks: consistent snapshots for sending, and in-place installation of received ones.</summary>
public sealed partial class KeyValueStateMachine
{
    /// <summary>The sub-folder of a group's <c>kv/</c> folder that holds the locked snapshot.</summary>
    public const string CheckpointFolderName = "checkpoint";

    private bool _checkpointLocked;

    /// <summary>
    /// Writes a consistent snapshot of every group's store (<c>VACUUM INTO kv/checkpoint/kv.db</c>) and
    /// keeps it until <see cref="UnlockCheckpointState"/>. Thread-safe.
    /// </summary>
    public bool LockCheckpointState()
    {
        lock (_checkpointGate)
        {
            if (_checkpointLocked || _groups.IsEmpty)
            {
                return false;
            }

            foreach (var (group, state) in _groups)
            {
                var folder = Path.Combine(GetGroupDirectory(group), CheckpointFolderName);
                if (Directory.Exists(folder))
                {
                    Directory.Delete(folder, recursive: true);
                }

                Directory.CreateDirectory(folder);
                state.Store.SnapshotTo(Path.Combine(folder, KeyValueStore.FileName));
            }

            _checkpointLocked = true;
            return true;
        }
    }

    /// <summary>The locked snapshot of a group: its folder and <c>kv.db</c>; null when none is locked.</summary>
    public CheckpointState? GetCheckpointState(int groupIndex)
    {
        lock (_checkpointGate)
        {
            var folder = Path.Combine(GetGroupDirectory(groupIndex), CheckpointFolderName);
            return _checkpointLocked && File.Exists(Path.Combine(folder, KeyValueStore.FileName))
                ? new CheckpointState(folder, [KeyValueStore.FileName])
                : null;
        }
    }

    /// <summary>Deletes the locked snapshots.</summary>
    public void UnlockCheckpointState()
    {
        lock (_checkpointGate)
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

    /// <summary>
    /// Replaces a group's live store with a received snapshot, in place (the process keeps running).
    /// The snapshot carries its own position; it must cover <paramref name="checkpointInstanceId"/>.
    /// </summary>
    public bool LoadCheckpointState(int groupIndex, string directory, IReadOnlyList<string> files, ulong checkpointInstanceId)
    {
        ArgumentNullException.ThrowIfNull(files);
        string? source = null;
        foreach (var f in files)
        {
            if (string.Equals(Path.GetFileName(f), KeyValueStore.FileName, StringComparison.Ordinal))
            {
                source = Path.Combine(directory, f);
            }
        }

        if (source is null || !File.Exists(source))
        {
            LogCheckpointMissing(groupIndex, directory);
            return false;
        }

        var state = GetState(groupIndex);
        try
        {
            state.Store.ReplaceWith(source);
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or Microsoft.Data.Sqlite.SqliteException)
        {
            LogCheckpointFailed(groupIndex, source, ex);
            return false;
        }

        state.CurrentInstance = null;
        var installed = GetCheckpointInstanceId(groupIndex);
        if (installed == StateMachineCheckpoint.None || installed < checkpointInstanceId)
        {
            LogCheckpointBehind(groupIndex, source, installed, checkpointInstanceId);
        }

        return true;
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group}: the received checkpoint in {Directory} has no kv.db.")]
    private partial void LogCheckpointMissing(int group, string directory);

    [LoggerMessage(Level = LogLevel.Error, Message = "Group {Group}: installing the checkpoint {Path} failed.")]
    private partial void LogCheckpointFailed(int group, string path, Exception ex);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: the checkpoint {Path} reaches instance {Installed}, not {Expected}; later instances are replayed from the log.")]
    private partial void LogCheckpointBehind(int group, string path, ulong installed, ulong expected);
}
