using System.Diagnostics;
using Orleans.Paxos.Engine.Protocol;
using Xunit.Abstractions;

namespace Orleans.Paxos.Engine.Tests.Checkpoints;

/// <summary>
/// Log cleaning and catch-up by checkpoint with real storage and the real key-value state machine, over
/// the in-memory network. A node installs the checkpoint in place: the process (and the other groups) go on.
/// </summary>
public sealed class CheckpointCatchUpTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_node_down_for_20000_instances_receives_a_checkpoint_and_ends_with_the_same_state()
    {
        using var kv = new KvCluster(3, seed: 301, o =>
        {
            o.HoldLogCount = 300;
            o.AutoBatch = false;
        });
        await kv.WriteUntil(0, 50, concurrency: 4);
        await kv.WaitSameInstance(0, 50, TimeSpan.FromSeconds(10));
        kv.Stop(2);

        var watch = Stopwatch.StartNew();
        await kv.WriteUntil(0, 20_100);
        var writeTime = watch.Elapsed;

        // The cleaners of the running nodes drop the old log: node 2 can no longer learn from it.
        await KvCluster.WaitUntil(() => kv.Node(0).GetMinChosenInstanceId(0) > 19_000 && kv.Node(1).GetMinChosenInstanceId(0) > 19_000, "the log to be cleaned", TimeSpan.FromSeconds(20));
        Assert.True(kv.Node(0).GetMinChosenInstanceId(0) + 300 <= kv.Node(0).GetCheckpointInstanceId(0) + 1, "the cleaner keeps 300 instances before the checkpoint");

        watch.Restart();
        kv.Start(2);
        var target = kv.Node(0).GetNowInstanceId(0);
        await kv.WaitSameInstance(0, target, TimeSpan.FromSeconds(30));
        var catchUpTime = watch.Elapsed;

        Assert.Equal(1, kv.Node(2).GetCheckpointsInstalled(0));
        Assert.Null(kv.Node(2).GetGroupStoppedReason(0));
        kv.AssertSameState();

        // The node takes part again: its own proposal is chosen and executed everywhere.
        Assert.True((await kv.Put(2, "k1", "after-catch-up")).IsOk);
        await kv.WaitSameInstance(0, target + 1, TimeSpan.FromSeconds(10));
        kv.AssertSameState();

        // The in-place install is consistent on disk: the node restarts from it without complaint.
        kv.Stop(2);
        kv.Start(2);
        await kv.WaitSameInstance(0, target + 1, TimeSpan.FromSeconds(10));
        Assert.Null(kv.Node(2).GetGroupStoppedReason(0));
        kv.AssertSameState();
        output.WriteLine($"wrote {target} instances in {writeTime.TotalSeconds:F1} s; node 2 caught up by checkpoint in {catchUpTime.TotalMilliseconds:F0} ms");
    }

    [Fact]
    public async Task Installing_a_checkpoint_in_one_group_leaves_the_other_groups_running()
    {
        // Group 0 runs the key-value store (checkpoints, cleaned log); group 1 only the recording state
        // machine (no checkpoint, so its log is kept and node 2 learns it from the log).
        using var kv = new KvCluster(3, seed: 306, o =>
        {
            o.HoldLogCount = 300;
            o.AutoBatch = false;
        }, groups: 2);
        await kv.WriteUntil(0, 10, concurrency: 1);
        kv.Stop(2);
        await kv.WriteUntil(0, 3000);
        for (var n = 0; n < 50; n++)
        {
            Assert.True((await kv.Cluster.Propose(0, 1, $"g1-{n}")).IsOk);
        }

        await KvCluster.WaitUntil(() => kv.Node(0).GetMinChosenInstanceId(0) > 2000 && kv.Node(1).GetMinChosenInstanceId(0) > 2000, "group 0's log to be cleaned", TimeSpan.FromSeconds(20));
        Assert.Equal(0ul, kv.Node(0).GetMinChosenInstanceId(1));

        // Writes continue in group 0 while node 2 fetches the checkpoint; node 2 proposes in group 1 meanwhile.
        using var stop = new CancellationTokenSource();
        var writer = kv.WriteUntil(0, ulong.MaxValue, concurrency: 4, ct: stop.Token);
        kv.Start(2);
        for (var n = 0; n < 20; n++)
        {
            var r = await kv.Cluster.Propose(2, 1, $"from-node-2-{n}");
            Assert.True(r.IsOk, $"group 1 proposal {n} on node 2: {r.Status}\n{string.Join("\n", kv.Logs.Lines)}");
        }

        await KvCluster.WaitUntil(() => kv.Node(2).GetCheckpointsInstalled(0) == 1, "the checkpoint to be installed", TimeSpan.FromSeconds(20));
        var installedAt = kv.Node(2).GetNowInstanceId(0);
        await KvCluster.WaitUntil(() => kv.Node(2).GetNowInstanceId(0) > installedAt + 20, "node 2 to follow the writes that go on after its checkpoint", TimeSpan.FromSeconds(20));
        await stop.CancelAsync();
        await writer;
        await kv.WaitSameInstance(0, 3000, TimeSpan.FromSeconds(20));
        await kv.Cluster.WaitConvergedAsync(1, 70, TimeSpan.FromSeconds(10));
        kv.Cluster.AssertSafety(1);
        kv.AssertSameState();
        Assert.Equal(0, kv.Node(2).GetCheckpointsInstalled(1));
        Assert.Null(kv.Node(2).GetGroupStoppedReason(0));
        Assert.Null(kv.Node(2).GetGroupStoppedReason(1));
    }

    [Fact]
    public async Task A_node_whose_state_machine_is_ahead_of_its_log_learns_the_lost_instances_again_without_executing_them()
    {
        // A crash can take learned records that were not yet fsynced while the key-value store kept their
        // effect. Reproduced exactly: node 2's store is replaced by node 1's, which executed more instances.
        using var kv = new KvCluster(3, seed: 307, o => o.AutoBatch = false);
        await kv.WriteUntil(0, 40, concurrency: 2);
        await kv.WaitSameInstance(0, 40, TimeSpan.FromSeconds(10));
        kv.Stop(2);
        await kv.WriteUntil(0, 120, concurrency: 2);
        await kv.WaitSameInstance(0, 120, TimeSpan.FromSeconds(10));
        kv.Stop(1);
        var store = (int node) => Path.Combine(kv.Cluster.Root, $"node{node}", "g0", "kv");
        Directory.Delete(store(2), recursive: true);
        CopyDirectory(store(1), store(2));
        kv.Start(1);

        kv.Start(2);
        Assert.Null(kv.Node(2).GetGroupStoppedReason(0));

        // The copied store executed up to at least instance 119 (node 1 was at 120 or more) and reports the
        // instance before its last as its checkpoint, in case the last was applied only in part. Node 2 starts where
        // its log ends and learns the instances up to the checkpoint again without executing them: the stores end
        // equal only if none was applied twice.
        var checkpoint = kv.Node(2).GetCheckpointInstanceId(0);
        Assert.True(checkpoint >= 118 && kv.Node(2).GetNowInstanceId(0) <= 41, $"node 2 starts at {kv.Node(2).GetNowInstanceId(0)}, its store's checkpoint is {checkpoint}");
        Assert.Contains(kv.Logs.Lines, l => l.Contains("the state machines' checkpoint is", StringComparison.Ordinal));

        await kv.WriteUntil(2, 200, concurrency: 2);
        await kv.WaitSameInstance(0, 200, TimeSpan.FromSeconds(10));
        kv.AssertSameState();
        for (var i = 0; i < 3; i++)
        {
            Assert.Null(kv.Node(i).GetGroupStoppedReason(0));
        }

        static void CopyDirectory(string from, string to)
        {
            Directory.CreateDirectory(to);
            foreach (var file in Directory.GetFiles(from))
            {
                File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
            }

            foreach (var dir in Directory.GetDirectories(from))
            {
                CopyDirectory(dir, Path.Combine(to, Path.GetFileName(dir)));
            }
        }
    }

    [Fact]
    public async Task A_catch_up_ends_once_the_learner_has_everything_although_the_group_stays_busy()
    {
        // A sender that kept following its learner while values keep being chosen stayed busy for good, so a
        // node that fell behind later found no sender on either peer (seen with Orleans on Paxos under load).
        using var kv = new KvCluster(3, seed: 308, o => o.AutoBatch = false);
        await kv.WriteUntil(0, 20, concurrency: 2);
        kv.Stop(2);
        await kv.WriteUntil(0, 400, concurrency: 2);

        using var stop = new CancellationTokenSource();
        var writer = kv.WriteUntil(0, ulong.MaxValue, concurrency: 2, ct: stop.Token);
        kv.Start(2);
        await KvCluster.WaitUntil(
            () => kv.Logs.Lines.Any(l => l.Contains("caught up (sent up to instance", StringComparison.Ordinal)),
            "the catch-up sender to finish while writes go on",
            TimeSpan.FromSeconds(20));
        var during = kv.Node(0).GetNowInstanceId(0);
        await KvCluster.WaitUntil(() => kv.Node(0).GetNowInstanceId(0) > during + 20, "writes to go on", TimeSpan.FromSeconds(20));
        await stop.CancelAsync();
        await writer;
        Assert.True(kv.Node(2).GetNowInstanceId(0) > 400);
        await kv.WaitSameInstance(0, 400, TimeSpan.FromSeconds(10));
        kv.AssertSameState();
    }

    [Fact]
    public async Task The_log_stays_bounded_while_proposals_continue()
    {
        using var kv = new KvCluster(3, seed: 302, o =>
        {
            o.HoldLogCount = 300;
            o.AutoBatch = false;
            o.DataFileSize = 64 * 1024;
        });
        var maxFiles = 0;
        for (var round = 1; round <= 4; round++)
        {
            await kv.WriteUntil(0, (ulong)(round * 2000));

            // A cleaner pass after the writes: every node keeps only about the hold count before its checkpoint.
            var written = (ulong)(round * 2000);
            await KvCluster.WaitUntil(() => Enumerable.Range(0, 3).All(i => kv.Node(i).GetMinChosenInstanceId(0) + 400 >= written), $"every node to clean its log up to about instance {written - 300}", TimeSpan.FromSeconds(20));
            for (var i = 0; i < 3; i++)
            {
                var (files, _, _) = kv.LogFiles(i);
                maxFiles = Math.Max(maxFiles, files);
            }
        }

        await kv.WaitSameInstance(0, 8_000, TimeSpan.FromSeconds(10));
        await KvCluster.WaitUntil(() => Enumerable.Range(0, 3).All(i => kv.Node(i).GetMinChosenInstanceId(0) > 7_000), "the log to be cleaned everywhere", TimeSpan.FromSeconds(10));
        var final = Enumerable.Range(0, 3).Select(kv.LogFiles).ToList();
        output.WriteLine($"largest file count seen {maxFiles}; now {string.Join(", ", final.Select(f => $"{f.Files} files/{f.Bytes} bytes, highest file {f.HighestId}"))}");

        // 8,000 instances fill about a dozen files of 64 KiB; the 300 kept instances fit in one or two.
        Assert.All(final, f => Assert.InRange(f.Files, 1, 6));
        Assert.All(final, f => Assert.True(f.HighestId >= 8, $"the data files rolled over only {f.HighestId} times"));
        Assert.InRange(maxFiles, 1, 20);
        kv.AssertSameState();
    }

    [Fact]
    public async Task Pausing_the_cleaner_keeps_the_log_and_continuing_cleans_it()
    {
        using var kv = new KvCluster(3, seed: 303, o => o.HoldLogCount = 300);
        for (var i = 0; i < 3; i++)
        {
            kv.Node(i).PauseLogCleaner();
        }

        await kv.WriteUntil(0, 1500, concurrency: 1);

        // A window of more than one cleaner period (500-999 ms) for something that must not happen.
        await Task.Delay(1200);
        Assert.Equal(0ul, kv.Node(0).GetMinChosenInstanceId(0));

        kv.Node(0).ContinueLogCleaner();
        await KvCluster.WaitUntil(() => kv.Node(0).GetMinChosenInstanceId(0) >= 1000, "node 0 to clean", TimeSpan.FromSeconds(5));
        Assert.Equal(0ul, kv.Node(1).GetMinChosenInstanceId(0));
        Assert.InRange(kv.Node(0).GetMinChosenInstanceId(0), 1000ul, kv.Node(0).GetCheckpointInstanceId(0) + 1 - 300);
    }

    [Fact]
    public async Task A_transfer_cut_by_a_partition_is_abandoned_and_a_new_one_succeeds()
    {
        using var kv = await BehindByCheckpoint(seed: 304);
        var cut = 0;
        kv.Cluster.Network.SendObserver = (from, to, frame) =>
        {
            // Cut the link for good after the third chunk of the first transfer; heal a little later.
            if (to == kv.Cluster.Ids[2] && IsCheckpointChunk(frame, 3) && Interlocked.Exchange(ref cut, 1) == 0)
            {
                kv.Cluster.Network.Partition(from, to);
                _ = Task.Delay(500).ContinueWith(_ => kv.Cluster.Network.HealAll(), TaskScheduler.Default);
            }
        };

        var watch = Stopwatch.StartNew();
        kv.Start(2);
        await kv.WaitSameInstance(0, kv.Node(0).GetNowInstanceId(0), TimeSpan.FromSeconds(40));
        var elapsed = watch.ElapsedMilliseconds;
        Assert.Equal(1, cut);
        Assert.Equal(1, kv.Node(2).GetCheckpointsInstalled(0));
        kv.AssertSameState(3000);
        Dump(kv);
        output.WriteLine($"caught up after a cut transfer in {elapsed} ms");
    }

    [Fact]
    public async Task A_receiver_restarted_half_way_starts_a_new_transfer_from_scratch()
    {
        using var kv = await BehindByCheckpoint(seed: 305);
        var restarted = new TaskCompletionSource();
        kv.Cluster.Network.SendObserver = (_, to, frame) =>
        {
            if (to == kv.Cluster.Ids[2] && IsCheckpointChunk(frame, 2))
            {
                // Cut node 2 off before this chunk goes out (the observer runs before partitions apply), so
                // the transfer stops half-way however the chunks before it are timed.
                kv.Cluster.Network.Isolate(kv.Cluster.Ids[2]);
                restarted.TrySetResult();
            }
        };

        kv.Start(2);
        await restarted.Task.WaitAsync(TimeSpan.FromSeconds(20));
        kv.Cluster.Network.SendObserver = null;
        var temp = Path.Combine(kv.Cluster.Root, "node2", "g0");
        await KvCluster.WaitUntil(() => Directory.GetDirectories(temp, "cp_tmp_*").Length > 0, "the first chunks to be written", TimeSpan.FromSeconds(20));
        kv.Stop(2);
        kv.Cluster.Network.HealAll();
        Assert.NotEmpty(Directory.GetDirectories(temp, "cp_tmp_*")); // the transfer really was half-way

        var watch = Stopwatch.StartNew();
        kv.Start(2);
        await kv.WaitSameInstance(0, kv.Node(0).GetNowInstanceId(0), TimeSpan.FromSeconds(40));
        var elapsed = watch.ElapsedMilliseconds;
        Assert.Equal(1, kv.Node(2).GetCheckpointsInstalled(0));
        Assert.Empty(Directory.GetDirectories(Path.Combine(kv.Cluster.Root, "node2", "g0"), "cp_tmp_*"));
        kv.AssertSameState(3000);
        Dump(kv);
        output.WriteLine($"caught up after a receiver restart in {elapsed} ms");
    }

    private void Dump(KvCluster kv)
    {
        foreach (var line in kv.Logs.Lines)
        {
            if (line.Contains("heckpoint", StringComparison.Ordinal) || line.Contains("STOPPED", StringComparison.Ordinal))
            {
                output.WriteLine(line);
            }
        }
    }

    /// <summary>
    /// Three nodes; node 2 stopped while the others write a multi-megabyte key-value store (several chunks)
    /// and clean their log past node 2's position.
    /// </summary>
    private static async Task<KvCluster> BehindByCheckpoint(int seed)
    {
        var kv = new KvCluster(3, seed, o =>
        {
            o.HoldLogCount = 300;
            o.AutoBatch = false;
        });
        try
        {
            await kv.WriteUntil(0, 10, concurrency: 1);
            await kv.WaitSameInstance(0, 10, TimeSpan.FromSeconds(10));
            kv.Stop(2);
            await kv.WriteUntil(0, 3000, keys: 3000, valueBytes: 2000);
            await KvCluster.WaitUntil(() => kv.Node(0).GetMinChosenInstanceId(0) > 2000 && kv.Node(1).GetMinChosenInstanceId(0) > 2000, "the log to be cleaned", TimeSpan.FromSeconds(20));
            return kv;
        }
        catch
        {
            // The caller's using never got the cluster: its nodes would stay registered (and in the shared gauges).
            kv.Dispose();
            throw;
        }
    }

    /// <summary>Whether a frame is the data chunk with sequence <paramref name="sequence"/> of a checkpoint transfer.</summary>
    private static bool IsCheckpointChunk(byte[] frame, ulong sequence) =>
        FrameCodec.TryDecode(frame, FrameCodec.DefaultMaxFrameLength, out var decoded) == FrameError.None
        && decoded!.Checkpoint is { MsgType: (int)CheckpointMsgType.SendFile, Flag: (int)CheckpointSendFileFlag.Ing } chunk
        && chunk.Sequence == sequence;
}
