using System.Buffers.Binary;
using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>
/// Where the last record of an instance lies: data file id, offset of its length field, its crc (PhxPaxos's,
/// over every 8th byte) and the CRC-32 of every byte of instance id and body (-1 when unknown: a row
/// written before the column existed).
/// </summary>
/// <summary>The end of the fsynced data of a group's log: every byte before (<paramref name="FileId"/>, <paramref name="Offset"/>) was durable.</summary>
internal readonly record struct SyncMark(int FileId, long Offset)
{
    /// <summary>Whether the byte at (<paramref name="fileId"/>, <paramref name="offset"/>) lies before the mark.</summary>
    public bool Covers(int fileId, long offset) => fileId < FileId || (fileId == FileId && offset < Offset);
}

internal readonly record struct IndexEntry(ulong InstanceId, int FileId, int Offset, uint Crc, long FullCrc);

/// <summary>
/// What DeleteBefore removed: instances below <see cref="Bound"/> among the records before position
/// (<see cref="FileId"/>, <see cref="Offset"/>) of the log.
/// </summary>
internal readonly record struct DeleteFloor(ulong Bound, int FileId, long Offset)
{
    public bool Covers(ulong instanceId, int fileId, long offset) =>
        instanceId < Bound && (fileId < FileId || (fileId == FileId && offset < Offset));
}

/// <summary>
/// The SQLite database of one group (<c>g&lt;N&gt;/index.db</c>): the instance index and the group's
/// variables. Thread-safe: writes are serialized by one lock, lookups by another, and SQLite's WAL mode
/// lets the lookups read while a write transaction is open.
/// </summary>
/// <remarks>
/// Two writing connections exist on purpose. Index rows go through one with <c>synchronous=NORMAL</c>:
/// the data files are the truth and recovery re-indexes anything a crash lost, so paying an fsync per
/// group commit for the index would only halve throughput. The variables (min chosen, system and master
/// variables, and the delete floor) go through one with <c>synchronous=FULL</c> because nothing can
/// rebuild them; its commit fsyncs the shared WAL, which also hardens earlier index commits. Both share
/// <see cref="_writeLock"/>, so they never contend for SQLite's write lock.
/// </remarks>
internal sealed class IndexDatabase : IDisposable
{
    internal const string FileName = "index.db";

    private const string MinChosenKey = "min_chosen";
    private const string FloorKey = "delete_floor";
    private const string ClearPendingKey = "clear_pending";
    private const string SyncedKey = "synced_through";

    private readonly object _writeLock = new();
    private readonly object _readLock = new();
    private readonly SqliteConnection _indexWriter;
    private readonly SqliteConnection _durableWriter;
    private readonly SqliteConnection _reader;
    // The group-commit path binds prepared statements directly (SQLitePCL) because ADO.NET's
    // ExecuteNonQuery allocates a data reader and boxes every parameter, hundreds of bytes per record.
    private readonly sqlite3_stmt _begin;
    private readonly sqlite3_stmt _upsert;
    private readonly sqlite3_stmt _commit;
    private readonly sqlite3_stmt _rollback;
    private readonly sqlite3_stmt _setSynced;
    private readonly SqliteCommand _lookup;
    private readonly SqliteParameter _lookupInstance;

    private readonly LogFileOperations _files;

    public IndexDatabase(string path, LogFileOperations files)
    {
        Path = path;
        _files = files;
        // Pooling is off: the connections live as long as the storage, and a pooled handle would keep
        // the file open after Dispose (tests and ClearAllLog delete the folder).
        var connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Pooling = false,
        }.ToString();

        _indexWriter = Open(connectionString, "NORMAL");
        try
        {
            _durableWriter = Open(connectionString, "FULL");
            _reader = Open(connectionString, "NORMAL");
            Execute(_durableWriter, """
                CREATE TABLE IF NOT EXISTS log_index (
                    instance_id INTEGER PRIMARY KEY,
                    file_id INTEGER NOT NULL,
                    offset INTEGER NOT NULL,
                    crc INTEGER NOT NULL,
                    full_crc INTEGER);
                CREATE TABLE IF NOT EXISTS variables (
                    name TEXT PRIMARY KEY,
                    value BLOB NOT NULL);
                """);

            using (var columns = _durableWriter.CreateCommand())
            {
                // Indexes written before the full crc existed get the column; their rows keep NULL.
                columns.CommandText = "SELECT COUNT(*) FROM pragma_table_info('log_index') WHERE name = 'full_crc'";
                if ((long)columns.ExecuteScalar()! == 0)
                {
                    Execute(_durableWriter, "ALTER TABLE log_index ADD COLUMN full_crc INTEGER");
                }
            }

            // A damaged page must be found now, not as a wrong row later: quick_check reads every page
            // and checks the b-tree structure (O(size of the index), which DeleteBefore keeps bounded).
            using (var check = _reader.CreateCommand())
            {
                check.CommandText = "PRAGMA quick_check";
                var result = check.ExecuteScalar() as string;
                if (result != "ok")
                {
                    throw new SqliteException($"SQLite quick_check of {path} failed: {result}", 11);
                }
            }

            _begin = Prepare(_indexWriter, "BEGIN");
            _upsert = Prepare(_indexWriter, "INSERT OR REPLACE INTO log_index (instance_id, file_id, offset, crc, full_crc) VALUES (?1, ?2, ?3, ?4, ?5)");
            _commit = Prepare(_indexWriter, "COMMIT");
            _rollback = Prepare(_indexWriter, "ROLLBACK");
            _setSynced = Prepare(_indexWriter, $"INSERT OR REPLACE INTO variables (name, value) VALUES ('{SyncedKey}', ?1)");

            _lookup = _reader.CreateCommand();
            _lookup.CommandText = "SELECT file_id, offset, crc, full_crc FROM log_index WHERE instance_id = $i";
            _lookupInstance = _lookup.Parameters.Add("$i", SqliteType.Integer);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The database file.</summary>
    public string Path { get; }

    public bool TryGet(ulong instanceId, out IndexEntry entry)
    {
        lock (_readLock)
        {
            _lookupInstance.Value = checked((long)instanceId);
            using var reader = _lookup.ExecuteReader();
            if (!reader.Read())
            {
                entry = default;
                return false;
            }

            entry = new IndexEntry(instanceId, reader.GetInt32(0), reader.GetInt32(1), (uint)reader.GetInt64(2), reader.IsDBNull(3) ? -1 : reader.GetInt64(3));
            return true;
        }
    }

    /// <summary>The row of the highest instance, or null when the index is empty.</summary>
    public IndexEntry? GetLast()
    {
        lock (_readLock)
        {
            using var command = _reader.CreateCommand();
            command.CommandText = "SELECT instance_id, file_id, offset, crc, full_crc FROM log_index ORDER BY instance_id DESC LIMIT 1";
            using var reader = command.ExecuteReader();
            return reader.Read()
                ? new IndexEntry((ulong)reader.GetInt64(0), reader.GetInt32(1), reader.GetInt32(2), (uint)reader.GetInt64(3), reader.IsDBNull(4) ? -1 : reader.GetInt64(4))
                : null;
        }
    }

    public ulong? GetMaxInstanceId()
    {
        lock (_readLock)
        {
            using var command = _reader.CreateCommand();
            command.CommandText = "SELECT MAX(instance_id) FROM log_index";
            var value = command.ExecuteScalar();
            return value is long id ? (ulong)id : null;
        }
    }

    /// <summary>The data file of the lowest instance at or above <paramref name="bound"/>, or null when none.</summary>
    public int? GetFirstFileAtOrAbove(ulong bound)
    {
        lock (_readLock)
        {
            using var command = _reader.CreateCommand();
            command.CommandText = "SELECT file_id FROM log_index WHERE instance_id >= $b ORDER BY instance_id LIMIT 1";
            command.Parameters.AddWithValue("$b", ToKey(bound));
            var value = command.ExecuteScalar();
            return value is long fileId ? (int)fileId : null;
        }
    }

    /// <summary>
    /// Writes a batch of index rows in one transaction (not fsynced; see the class remarks), with the
    /// group's <paramref name="synced"/> mark when given. Allocates nothing but the mark's bytes.
    /// </summary>
    public void Upsert(ReadOnlySpan<IndexEntry> entries, SyncMark? synced = null)
    {
        if (entries.IsEmpty && synced is null)
        {
            return;
        }

        Transport.NetworkTransport.SendHeldBeforeBlocking();
        lock (_writeLock)
        {
            var db = _indexWriter.Handle!;
            Step(db, _begin);
            try
            {
                foreach (var entry in entries)
                {
                    raw.sqlite3_bind_int64(_upsert, 1, checked((long)entry.InstanceId));
                    raw.sqlite3_bind_int64(_upsert, 2, entry.FileId);
                    raw.sqlite3_bind_int64(_upsert, 3, entry.Offset);
                    raw.sqlite3_bind_int64(_upsert, 4, entry.Crc);
                    if (entry.FullCrc >= 0)
                    {
                        raw.sqlite3_bind_int64(_upsert, 5, entry.FullCrc);
                    }
                    else
                    {
                        raw.sqlite3_bind_null(_upsert, 5);
                    }

                    Step(db, _upsert);
                }

                if (synced is { } mark)
                {
                    raw.sqlite3_bind_blob(_setSynced, 1, Encode(mark));
                    Step(db, _setSynced);
                }

                _files.BeforeIndexCommit(Path);
                Step(db, _commit);
            }
            catch
            {
                // Leave the connection usable; the rollback's own failure would only hide the first error.
                raw.sqlite3_step(_rollback);
                raw.sqlite3_reset(_rollback);
                throw;
            }
        }
    }

    /// <summary>
    /// Removes the rows of instances below <paramref name="bound"/> and durably records the delete
    /// floor: the bound and the log position (<paramref name="fileId"/>, <paramref name="offset"/>) up
    /// to which records existed when the rows were removed. Recovery does not re-index records below the
    /// bound that lie before that position, but does re-index later ones.
    /// </summary>
    public void DeleteBelow(ulong bound, int fileId, long offset)
    {
        Transport.NetworkTransport.SendHeldBeforeBlocking();
        lock (_writeLock)
        {
            using var transaction = _durableWriter.BeginTransaction();
            using (var command = _durableWriter.CreateCommand())
            {
                command.Transaction = transaction;
                command.CommandText = "DELETE FROM log_index WHERE instance_id < $b";
                command.Parameters.AddWithValue("$b", ToKey(bound));
                command.ExecuteNonQuery();
            }

            if (bound >= ReadFloor(_durableWriter, transaction).Bound)
            {
                var floor = new byte[20];
                BinaryPrimitives.WriteUInt64LittleEndian(floor, bound);
                BinaryPrimitives.WriteInt32LittleEndian(floor.AsSpan(8), fileId);
                BinaryPrimitives.WriteInt64LittleEndian(floor.AsSpan(12), offset);
                SetVariable(_durableWriter, transaction, FloorKey, floor);
            }

            _files.BeforeIndexCommit(Path);
            transaction.Commit();
        }
    }

    /// <summary>Removes the rows of records at or after a position of the log (used when cutting a torn tail).</summary>
    public void DeleteFrom(int fileId, int offset)
    {
        Transport.NetworkTransport.SendHeldBeforeBlocking();
        lock (_writeLock)
        {
            using var command = _durableWriter.CreateCommand();
            command.CommandText = "DELETE FROM log_index WHERE file_id > $f OR (file_id = $f AND offset >= $o)";
            command.Parameters.AddWithValue("$f", fileId);
            command.Parameters.AddWithValue("$o", offset);
            command.ExecuteNonQuery();
        }
    }

    /// <summary>The stored form of a synced mark: file id (int32) then offset (int64), little-endian.</summary>
    private static byte[] Encode(SyncMark mark)
    {
        var bytes = new byte[12];
        BinaryPrimitives.WriteInt32LittleEndian(bytes, mark.FileId);
        BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(4), mark.Offset);
        return bytes;
    }

    /// <summary>Durably lowers the fsynced-through mark to <paramref name="mark"/> when it lies beyond it.</summary>
    public void LowerSynced(SyncMark mark)
    {
        if (GetSynced() is not { } current || !(current.FileId > mark.FileId || (current.FileId == mark.FileId && current.Offset > mark.Offset)))
        {
            return;
        }

        var bytes = Encode(mark);
        Transport.NetworkTransport.SendHeldBeforeBlocking();
        lock (_writeLock)
        {
            using var command = _durableWriter.CreateCommand();
            command.CommandText = $"INSERT OR REPLACE INTO variables (name, value) VALUES ('{SyncedKey}', $v)";
            command.Parameters.AddWithValue("$v", bytes);
            command.ExecuteNonQuery();
        }
    }

    /// <summary>
    /// Removes every row, the delete floor, the min-chosen mark and the clear-pending mark in one
    /// durable transaction; keeps system and master variables.
    /// </summary>
    public void ClearLog()
    {
        Transport.NetworkTransport.SendHeldBeforeBlocking();
        lock (_writeLock)
        {
            using var command = _durableWriter.CreateCommand();
            command.CommandText = $"BEGIN; DELETE FROM log_index; DELETE FROM variables WHERE name IN ('{MinChosenKey}', '{FloorKey}', '{ClearPendingKey}', '{SyncedKey}'); COMMIT;";
            command.ExecuteNonQuery();
        }
    }

    /// <summary>
    /// Durably marks that a clear of the log has begun, so that a crash between deleting the data files
    /// and clearing the index is finished on the next open instead of being mistaken for lost files.
    /// </summary>
    public void MarkClearPending() => SetVariable(ClearPendingKey, [1]);

    public bool IsClearPending() => GetVariable(ClearPendingKey) is not null;

    public DeleteFloor GetFloor()
    {
        lock (_readLock)
        {
            return ReadFloor(_reader, null);
        }
    }

    /// <summary>The lowest instance id with a row, or null when the index has none.</summary>
    public ulong? GetMinInstanceId()
    {
        lock (_readLock)
        {
            using var command = _reader.CreateCommand();
            command.CommandText = "SELECT MIN(instance_id) FROM log_index";
            return command.ExecuteScalar() is long value ? (ulong)value : null;
        }
    }

    /// <summary>The last stored end of fsynced data, or null when none was stored.</summary>
    public SyncMark? GetSynced()
    {
        var value = GetVariable(SyncedKey);
        return value is { Length: 12 }
            ? new SyncMark(BinaryPrimitives.ReadInt32LittleEndian(value), BinaryPrimitives.ReadInt64LittleEndian(value.AsSpan(4)))
            : null;
    }

    public ulong GetMinChosen()
    {
        var value = GetVariable(MinChosenKey);
        return value is null ? 0 : BinaryPrimitives.ReadUInt64LittleEndian(value);
    }

    public void SetMinChosen(ulong instanceId) => SetVariable(MinChosenKey, EncodeUInt64(instanceId));

    public byte[]? GetVariable(string name)
    {
        lock (_readLock)
        {
            return ReadVariable(_reader, null, name);
        }
    }

    /// <summary>Stores a variable durably (the commit fsyncs the WAL).</summary>
    public void SetVariable(string name, ReadOnlySpan<byte> value)
    {
        Transport.NetworkTransport.SendHeldBeforeBlocking();
        lock (_writeLock)
        {
            _files.BeforeIndexCommit(Path);
            SetVariable(_durableWriter, null, name, value.ToArray());
        }
    }

    public void Dispose()
    {
        _begin?.Dispose();
        _upsert?.Dispose();
        _commit?.Dispose();
        _rollback?.Dispose();
        _setSynced?.Dispose();
        _lookup?.Dispose();
        _indexWriter.Dispose();
        _durableWriter?.Dispose();
        _reader?.Dispose();
    }

    private static long ToKey(ulong bound) => bound > long.MaxValue ? long.MaxValue : (long)bound;

    private static byte[] EncodeUInt64(ulong value)
    {
        var bytes = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, value);
        return bytes;
    }

    private static DeleteFloor ReadFloor(SqliteConnection connection, SqliteTransaction? transaction)
    {
        var value = ReadVariable(connection, transaction, FloorKey);
        return value is { Length: 20 }
            ? new DeleteFloor(
                BinaryPrimitives.ReadUInt64LittleEndian(value),
                BinaryPrimitives.ReadInt32LittleEndian(value.AsSpan(8)),
                BinaryPrimitives.ReadInt64LittleEndian(value.AsSpan(12)))
            : default;
    }

    private static byte[]? ReadVariable(SqliteConnection connection, SqliteTransaction? transaction, string name)
    {
        using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "SELECT value FROM variables WHERE name = $n";
        command.Parameters.AddWithValue("$n", name);
        return command.ExecuteScalar() as byte[];
    }

    private static void SetVariable(SqliteConnection connection, SqliteTransaction? transaction, string name, byte[] value)
    {
        using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "INSERT OR REPLACE INTO variables (name, value) VALUES ($n, $v)";
        command.Parameters.AddWithValue("$n", name);
        command.Parameters.Add("$v", SqliteType.Blob).Value = value;
        command.ExecuteNonQuery();
    }

    private static sqlite3_stmt Prepare(SqliteConnection connection, string sql)
    {
        var rc = raw.sqlite3_prepare_v2(connection.Handle, sql, out var statement);
        SqliteException.ThrowExceptionForRC(rc, connection.Handle);
        return statement;
    }

    /// <summary>Runs a prepared statement to completion and resets it for reuse.</summary>
    private static void Step(sqlite3 db, sqlite3_stmt statement)
    {
        var rc = raw.sqlite3_step(statement);
        raw.sqlite3_reset(statement);
        if (rc != raw.SQLITE_DONE)
        {
            SqliteException.ThrowExceptionForRC(rc, db);
        }
    }

    private static SqliteConnection Open(string connectionString, string synchronous)
    {
        var connection = new SqliteConnection(connectionString);
        try
        {
            connection.Open();
            Execute(connection, $"PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; PRAGMA busy_timeout=10000;");
            return connection;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
