using Microsoft.Data.Sqlite;

namespace Orleans.Paxos.Engine.StateMachines.KeyValue;

/// <summary>
/// The key-value data of one group in an SQLite database (<c>kv.db</c>). Writes come from the group's
/// loop thread only; stale reads may come from any thread and use their own connections. The
/// position of the last applied operation is stored in the same transaction as its data.
/// </summary>
internal sealed class KeyValueStore : IDisposable
{
    public const string FileName = "kv.db";

    private readonly ReaderWriterLockSlim _swap = new(LockRecursionPolicy.NoRecursion);
    private SqliteConnection _writer;
    private SqliteCommand _select = null!;
    private SqliteCommand _upsert = null!;
    private SqliteCommand _delete = null!;
    private SqliteCommand _position = null!;

    public KeyValueStore(string directory)
    {
        Directory.CreateDirectory(directory);
        DirectoryPath = directory;
        DatabasePath = Path.Combine(directory, FileName);
        _writer = Open();
    }

    public string DirectoryPath { get; }

    public string DatabasePath { get; }

    /// <summary>The last instance an operation was applied from, or null when none.</summary>
    public ulong? LastInstance { get; private set; }

    /// <summary>How many operations of <see cref="LastInstance"/> are applied (a batch holds several).</summary>
    public int AppliedInLastInstance { get; private set; }

    private string ConnectionString(SqliteOpenMode mode) => new SqliteConnectionStringBuilder
    {
        DataSource = DatabasePath,
        Mode = mode,
        Pooling = false,
    }.ToString();

    /// <summary>Reads a key on the writer's connection (loop thread).</summary>
    public KeyValueResult Read(ReadOnlySpan<byte> key)
    {
        _select.Parameters[0].Value = key.ToArray();
        using var reader = _select.ExecuteReader();
        return reader.Read()
            ? new KeyValueResult(KeyValueStatus.Ok, (byte[])reader.GetValue(0), (ulong)reader.GetInt64(1))
            : KeyValueResult.NotFound;
    }

    /// <summary>Reads a key from any thread, on a connection of its own: the last locally applied state.</summary>
    public KeyValueResult ReadStale(ReadOnlySpan<byte> key)
    {
        _swap.EnterReadLock();
        try
        {
            using var connection = new SqliteConnection(ConnectionString(SqliteOpenMode.ReadOnly));
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = "SELECT value, version FROM kv WHERE key = $k";
            command.Parameters.AddWithValue("$k", key.ToArray());
            using var reader = command.ExecuteReader();
            return reader.Read()
                ? new KeyValueResult(KeyValueStatus.Ok, (byte[])reader.GetValue(0), (ulong)reader.GetInt64(1))
                : KeyValueResult.NotFound;
        }
        finally
        {
            _swap.ExitReadLock();
        }
    }

    /// <summary>Applies one write (a null value deletes) and records the position, in one transaction.</summary>
    public void Apply(ReadOnlySpan<byte> key, byte[]? value, ulong instanceId, int appliedInInstance)
    {
        using var tx = _writer.BeginTransaction();
        if (!key.IsEmpty)
        {
            var command = value is null ? _delete : _upsert;
            command.Transaction = tx;
            command.Parameters[0].Value = key.ToArray();
            if (value is not null)
            {
                command.Parameters[1].Value = value;
                command.Parameters[2].Value = (long)instanceId + 1;
            }

            command.ExecuteNonQuery();
        }

        _position.Transaction = tx;
        _position.Parameters[0].Value = (long)instanceId;
        _position.Parameters[1].Value = appliedInInstance;
        _position.ExecuteNonQuery();
        tx.Commit();
        LastInstance = instanceId;
        AppliedInLastInstance = appliedInInstance;
    }

    /// <summary>Writes a consistent copy of the database to <paramref name="path"/> (any thread).</summary>
    public void SnapshotTo(string path)
    {
        _swap.EnterReadLock();
        try
        {
            using var connection = new SqliteConnection(ConnectionString(SqliteOpenMode.ReadWrite));
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = "VACUUM INTO $path";
            command.Parameters.AddWithValue("$path", path);
            command.ExecuteNonQuery();
        }
        finally
        {
            _swap.ExitReadLock();
        }
    }

    /// <summary>Replaces the live database with <paramref name="source"/> in place (loop thread).</summary>
    public void ReplaceWith(string source)
    {
        var staged = DatabasePath + ".incoming";
        File.Copy(source, staged, overwrite: true);
        using (var check = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = staged, Pooling = false }.ToString()))
        {
            check.Open();
            using var command = check.CreateCommand();
            command.CommandText = "SELECT count(*) FROM sqlite_master WHERE name IN ('kv', 'position')";
            if (Convert.ToInt64(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture) != 2)
            {
                throw new InvalidDataException($"'{source}' is not a key-value checkpoint: it lacks the kv and position tables.");
            }
        }

        _swap.EnterWriteLock();
        try
        {
            CloseWriter();
            foreach (var suffix in new[] { "-wal", "-shm", "-journal" })
            {
                File.Delete(DatabasePath + suffix);
            }

            File.Move(staged, DatabasePath, overwrite: true);
            _writer = Open();
        }
        finally
        {
            _swap.ExitWriteLock();
        }
    }

    public void Dispose()
    {
        _swap.EnterWriteLock();
        try
        {
            CloseWriter();
        }
        finally
        {
            _swap.ExitWriteLock();
        }

        _swap.Dispose();
    }

    private SqliteConnection Open()
    {
        var connection = new SqliteConnection(ConnectionString(SqliteOpenMode.ReadWriteCreate));
        connection.Open();
        using (var setup = connection.CreateCommand())
        {
            // WAL without fsync per commit: a lost tail is replayed from the Paxos log, because the
            // position is committed together with the data.
            setup.CommandText = """
                PRAGMA journal_mode=WAL;
                PRAGMA synchronous=NORMAL;
                CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS position (id INTEGER PRIMARY KEY CHECK (id = 0), instance INTEGER NOT NULL, applied INTEGER NOT NULL);
                """;
            setup.ExecuteNonQuery();
        }

        _select = Prepare(connection, "SELECT value, version FROM kv WHERE key = $k", "$k");
        _upsert = Prepare(connection, "INSERT INTO kv (key, value, version) VALUES ($k, $v, $ver) ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = excluded.version", "$k", "$v", "$ver");
        _delete = Prepare(connection, "DELETE FROM kv WHERE key = $k", "$k");
        _position = Prepare(connection, "INSERT INTO position (id, instance, applied) VALUES (0, $i, $a) ON CONFLICT(id) DO UPDATE SET instance = excluded.instance, applied = excluded.applied", "$i", "$a");

        using var read = connection.CreateCommand();
        read.CommandText = "SELECT instance, applied FROM position WHERE id = 0";
        using var reader = read.ExecuteReader();
        if (reader.Read())
        {
            LastInstance = (ulong)reader.GetInt64(0);
            AppliedInLastInstance = reader.GetInt32(1);
        }
        else
        {
            LastInstance = null;
            AppliedInLastInstance = 0;
        }

        return connection;
    }

    private static SqliteCommand Prepare(SqliteConnection connection, string sql, params string[] names)
    {
        var command = connection.CreateCommand();
        command.CommandText = sql;
        foreach (var name in names)
        {
            command.Parameters.Add(new SqliteParameter(name, null));
        }

        command.Prepare();
        return command;
    }

    private void CloseWriter()
    {
        _select?.Dispose();
        _upsert?.Dispose();
        _delete?.Dispose();
        _position?.Dispose();
        _writer.Dispose();
    }
}
