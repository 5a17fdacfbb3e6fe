using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Engine.Tests.Simulation;

/// <summary>
/// One node's log in memory, with a page cache and a disk: a put is visible at once and durable only when
/// its simulated fsync completes (a scheduled event) or, without sync, never until a later fsync of the
/// same group. <see cref="Crash"/> keeps only what is durable. Puts complete through the simulation's event
/// queue, so a reply waits for its record exactly as it waits for a writer thread in production.
/// </summary>
internal sealed class SimulatedDisk : ILogStorage
{
    private readonly Simulation _sim;
    private readonly Group[] _groups;
    private int _generation;
    private long _lastCompletionMs;

    public SimulatedDisk(Simulation sim, int groupCount)
    {
        _sim = sim;
        _groups = new Group[groupCount];
        for (var g = 0; g < groupCount; g++)
        {
            _groups[g] = new Group();
        }
    }

    public int GroupCount => _groups.Length;

    /// <summary>Whether the next open reports a rebuilt index for every group (the index was lost).</summary>
    public bool IndexLost { get; set; }

    /// <summary>The durable record of an instance, or null (for the persist-before-send check).</summary>
    public AcceptorStateData? DurableRecord(int groupIndex, ulong instanceId) =>
        _groups[groupIndex].Durable.TryGetValue(instanceId, out var bytes) ? AcceptorStateData.Parser.ParseFrom(bytes) : null;

    /// <summary>Loses everything not yet durable; puts still in flight never complete.</summary>
    public void Crash()
    {
        _generation++;
        foreach (var group in _groups)
        {
            group.Visible.Clear();
            foreach (var (instance, bytes) in group.Durable)
            {
                group.Visible[instance] = bytes;
            }

            group.Pending.Clear();
        }
    }

    public string GetGroupDirectory(int groupIndex) => $"/simulated/g{groupIndex}";

    public Task PutAsync(int groupIndex, ulong instanceId, ReadOnlyMemory<byte> acceptorStateData, bool sync)
    {
        var done = new TaskCompletionSource();
        Put(groupIndex, instanceId, acceptorStateData, sync, new TaskCallback(done));
        return done.Task;
    }

    public void Put(int groupIndex, ulong instanceId, ReadOnlyMemory<byte> acceptorStateData, bool sync, IPutCallback callback)
    {
        var group = _groups[groupIndex];
        var bytes = acceptorStateData.ToArray();
        group.Visible[instanceId] = bytes;
        var write = new PendingWrite(instanceId, bytes);
        group.Pending.Add(write);

        // One writer per disk: puts complete in the order they were made, each after a random disk time.
        var generation = _generation;
        _lastCompletionMs = Math.Max(_lastCompletionMs, _sim.NowMs + _sim.Random.Next(0, sync ? 4 : 2));
        _sim.ScheduleAt(_lastCompletionMs, () =>
        {
            if (generation != _generation)
            {
                return;
            }

            if (sync)
            {
                // An fsync makes this write and every earlier one of the group durable.
                var upTo = group.Pending.IndexOf(write);
                for (var i = 0; i <= upTo; i++)
                {
                    group.Durable[group.Pending[i].Instance] = group.Pending[i].Bytes;
                }

                group.Pending.RemoveRange(0, upTo + 1);
            }

            callback.OnPutCompleted(null);
        });
    }

    public byte[]? Get(int groupIndex, ulong instanceId) => _groups[groupIndex].Visible.GetValueOrDefault(instanceId);

    public ulong? GetMaxInstanceId(int groupIndex) => _groups[groupIndex].Visible.Count == 0 ? null : _groups[groupIndex].Visible.Keys.Max();

    public void DeleteBefore(int groupIndex, ulong instanceId)
    {
        var group = _groups[groupIndex];
        foreach (var map in new[] { group.Visible, group.Durable })
        {
            foreach (var key in map.Keys.Where(k => k < instanceId).ToList())
            {
                map.Remove(key);
            }
        }

        group.Pending.RemoveAll(w => w.Instance < instanceId);
    }

    public ulong GetMinChosenInstanceId(int groupIndex) => _groups[groupIndex].MinChosen;

    public void SetMinChosenInstanceId(int groupIndex, ulong instanceId) => _groups[groupIndex].MinChosen = instanceId;

    public byte[]? GetSystemVariables(int groupIndex) => _groups[groupIndex].SystemVariables;

    public void SetSystemVariables(int groupIndex, ReadOnlySpan<byte> value) => _groups[groupIndex].SystemVariables = value.ToArray();

    public byte[]? GetMasterVariables(int groupIndex) => _groups[groupIndex].MasterVariables;

    public void SetMasterVariables(int groupIndex, ReadOnlySpan<byte> value) => _groups[groupIndex].MasterVariables = value.ToArray();

    public void ClearAllLog(int groupIndex)
    {
        var group = _groups[groupIndex];
        group.Visible.Clear();
        group.Durable.Clear();
        group.Pending.Clear();
        group.MinChosen = 0;
    }

    public bool WasIndexRebuilt(int groupIndex) => IndexLost && _groups[groupIndex].Visible.Count > 0;

    public bool IsRebuilding(int groupIndex) => _groups[groupIndex].Rebuilding;

    public void SetRebuilding(int groupIndex, bool rebuilding) => _groups[groupIndex].Rebuilding = rebuilding;

    public void Dispose()
    {
    }

    private sealed class Group
    {
        public SortedDictionary<ulong, byte[]> Visible { get; } = [];

        public SortedDictionary<ulong, byte[]> Durable { get; } = [];

        /// <summary>Writes not yet durable, oldest first.</summary>
        public List<PendingWrite> Pending { get; } = [];

        public ulong MinChosen { get; set; }

        public byte[]? SystemVariables { get; set; }

        public byte[]? MasterVariables { get; set; }

        public bool Rebuilding { get; set; }
    }

    private sealed class PendingWrite(ulong instance, byte[] bytes)
    {
        public ulong Instance => instance;

        public byte[] Bytes => bytes;
    }

    private sealed class TaskCallback(TaskCompletionSource done) : IPutCallback
    {
        public void OnPutCompleted(Exception? error)
        {
            if (error is null)
            {
                done.TrySetResult();
            }
            else
            {
                done.TrySetException(error);
            }
        }
    }
}
