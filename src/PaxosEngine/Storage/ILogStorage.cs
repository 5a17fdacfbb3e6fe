namespace Orleans.Paxos.Engine.Storage;

/// <summary>
/// The durable Paxos log of every group of one node, with PhxPaxos's <c>LogStorage</c> operations.
/// Records are serialized <see cref="Protocol.AcceptorStateData"/> keyed by instance id; several
/// records may be written for one instance (a promise, then an accept) and the last one wins.
/// </summary>
/// <remarks>
/// Implementations are thread-safe. <see cref="PutAsync"/> may be called from many threads at
/// once and completes on a storage thread; callers that own single-threaded state must hop back to
/// their own thread.
/// </remarks>
public interface ILogStorage : IDisposable
{
    /// <summary>Number of groups this storage holds (indices <c>0 .. GroupCount-1</c>).</summary>
    int GroupCount { get; }

    /// <summary>The folder of a group (<c>g&lt;N&gt;</c> under the root); checkpoint files may be kept beneath it.</summary>
    string GetGroupDirectory(int groupIndex);

    /// <summary>
    /// Appends a record for <paramref name="instanceId"/>. The task completes once the record is on
    /// disk when <paramref name="sync"/> is true (it shares one fsync with every record waiting at the
    /// same time), or once it is written to the operating system otherwise.
    /// </summary>
    /// <exception cref="LogStorageException">The write failed; the record is not durable.</exception>
    Task PutAsync(int groupIndex, ulong instanceId, ReadOnlyMemory<byte> acceptorStateData, bool sync);

    /// <summary>
    /// Appends a record like <see cref="PutAsync"/> but reports completion through
    /// <paramref name="callback"/>, which may run on a storage thread or on the calling thread before this
    /// method returns (an implementation may write on the caller's thread, so the call may take as long as
    /// an fsync): it must be quick, must not block and must not throw. Saves thread hops on the acceptor's
    /// persist-then-reply path.
    /// </summary>
    void Put(int groupIndex, ulong instanceId, ReadOnlyMemory<byte> acceptorStateData, bool sync, IPutCallback callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        PutAsync(groupIndex, instanceId, acceptorStateData, sync).ContinueWith(
            static (t, state) => ((IPutCallback)state!).OnPutCompleted(t.Exception?.GetBaseException()),
            callback,
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
    }

    /// <summary>
    /// Appends a record like <see cref="Put"/>, handing <paramref name="acceptorStateData"/> over to the storage:
    /// the caller never changes the array afterwards, so the storage may keep it (for readers, until the record
    /// is indexed) instead of copying it. For records of large values this saves a copy per write.
    /// </summary>
    void PutOwned(int groupIndex, ulong instanceId, byte[] acceptorStateData, bool sync, IPutCallback callback) =>
        Put(groupIndex, instanceId, acceptorStateData, sync, callback);

    /// <summary>
    /// Appends the first <paramref name="length"/> bytes of <paramref name="rented"/> like <see cref="Put"/>, handing the
    /// array over: it was rented from a <see cref="System.Buffers.ArrayPool{T}"/> (the engine's own record pool), the
    /// caller never touches it again, and the storage gives it back to a pool once it no longer needs it. Records then
    /// reuse memory instead of each taking a new array (fresh pages from the large object heap for large values, and
    /// objects that live just long enough to need full collections for small ones). The array is given up even when
    /// the call throws. The default copies the bytes, gives the array back at once and calls <see cref="PutOwned"/>.
    /// </summary>
    void PutRented(int groupIndex, ulong instanceId, byte[] rented, int length, bool sync, IPutCallback callback)
    {
        ArgumentNullException.ThrowIfNull(rented);
        var copy = rented.AsSpan(0, length).ToArray();
        new RecordBytes(rented, length, Rented: true).Release();
        PutOwned(groupIndex, instanceId, copy, sync, callback);
    }

    /// <summary>Reads the last record of an instance, or null when the log holds none.</summary>
    /// <exception cref="LogStorageException">The record exists but is damaged (names file and offset).</exception>
    byte[]? Get(int groupIndex, ulong instanceId);

    /// <summary>The highest instance id with a record, or null when the group's log is empty.</summary>
    ulong? GetMaxInstanceId(int groupIndex);

    /// <summary>
    /// Forgets every instance below <paramref name="instanceId"/>; whole data files are deleted once no
    /// record in them is needed. Used by the cleaner.
    /// </summary>
    void DeleteBefore(int groupIndex, ulong instanceId);

    /// <summary>The smallest instance still kept (0 when never set).</summary>
    ulong GetMinChosenInstanceId(int groupIndex);

    /// <summary>Durably records the smallest instance still kept.</summary>
    void SetMinChosenInstanceId(int groupIndex, ulong instanceId);

    /// <summary>The serialized <see cref="Protocol.SystemVariables"/>, or null when never set.</summary>
    byte[]? GetSystemVariables(int groupIndex);

    /// <summary>Durably stores the serialized <see cref="Protocol.SystemVariables"/>.</summary>
    void SetSystemVariables(int groupIndex, ReadOnlySpan<byte> value);

    /// <summary>The serialized <see cref="Protocol.MasterVariables"/>, or null when never set.</summary>
    byte[]? GetMasterVariables(int groupIndex);

    /// <summary>Durably stores the serialized <see cref="Protocol.MasterVariables"/>.</summary>
    void SetMasterVariables(int groupIndex, ReadOnlySpan<byte> value);

    /// <summary>Removes every log record and the min-chosen mark of a group, keeping its system and master variables.</summary>
    void ClearAllLog(int groupIndex);

    /// <summary>
    /// Whether the group's index was built anew at open from data files that held records (the index was
    /// lost, damaged, or the folder came from PhxPaxos): what only the index kept may be gone.
    /// </summary>
    bool WasIndexRebuilt(int groupIndex) => false;

    /// <summary>
    /// Whether recovery at open cut a torn tail from the group's last data file. With a rebuilt index (no record
    /// of what was fsynced) such a tail cannot be told from damaged durable records.
    /// </summary>
    bool WasTailCutAtOpen(int groupIndex) => false;

    /// <summary>
    /// Whether the group was left not voting (rebuilding its state) when the node stopped: it must learn again
    /// before it votes, even though its log now holds records it learned meanwhile.
    /// </summary>
    bool IsRebuilding(int groupIndex) => false;

    /// <summary>Durably records whether the group is rebuilding (see <see cref="IsRebuilding"/>).</summary>
    void SetRebuilding(int groupIndex, bool rebuilding)
    {
    }
}

/// <summary>Completion of <see cref="ILogStorage.Put"/>.</summary>
public interface IPutCallback
{
    /// <summary>The record is durable (or written, without sync) when <paramref name="error"/> is null; otherwise it is not.</summary>
    void OnPutCompleted(Exception? error);

    /// <summary>
    /// Whether the storage may write the record on the thread that calls <see cref="ILogStorage.Put"/> (when it
    /// has nothing else to write) and so complete before <c>Put</c> returns. A thread that serves other work
    /// answers false for a put that needs an fsync, so as not to wait for the disk. Default true.
    /// </summary>
    bool AllowsCallerWrite => true;
}
