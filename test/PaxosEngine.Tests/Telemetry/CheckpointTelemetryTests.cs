using Orleans.Paxos.Engine.Telemetry;
using Orleans.Paxos.Engine.Tests.Checkpoints;

namespace Orleans.Paxos.Engine.Tests.Telemetry;

[Collection(TelemetryCollection.Name)]
public sealed class CheckpointTelemetryTests
{
    private const string Group = PaxosMetrics.GroupTag;
    private const string Result = PaxosMetrics.ResultTag;

    [Fact]
    public async Task A_checkpoint_transfer_is_counted_on_both_sides()
    {
        using var capture = new MeterCapture();
        using var kv = new KvCluster(3, seed: 311, o =>
        {
            o.HoldLogCount = 300;
            o.AutoBatch = false;
        });
        await kv.WriteUntil(0, 10, concurrency: 1);
        kv.Stop(2);
        await kv.WriteUntil(0, 3000);
        await KvCluster.WaitUntil(() => kv.Node(0).GetMinChosenInstanceId(0) > 2000 && kv.Node(1).GetMinChosenInstanceId(0) > 2000, "group 0's log to be cleaned", TimeSpan.FromSeconds(20));

        kv.Start(2);
        await KvCluster.WaitUntil(() => kv.Node(2).GetCheckpointsInstalled(0) == 1, "the checkpoint to be installed", TimeSpan.FromSeconds(20));
        await KvCluster.WaitUntil(() => capture.Sum("paxos.checkpoint.transfers.sent", (Group, "0"), (Result, "ok")) >= 1, "the sender to finish", TimeSpan.FromSeconds(10));

        Assert.Equal(1, capture.Sum("paxos.checkpoint.transfers.installed", (Group, "0"), (Result, "ok")));
        Assert.Equal(0, capture.Sum("paxos.checkpoint.transfers.installed", (Result, "failed")));
        Assert.True(capture.Sum("paxos.checkpoint.needed", (Group, "0")) >= 1, "the lagging node noticed that it needs a checkpoint");
        var sent = capture.Sum("paxos.checkpoint.bytes", (Group, "0"), ("direction", "sent"));
        var received = capture.Sum("paxos.checkpoint.bytes", (Group, "0"), ("direction", "received"));
        Assert.True(received > 0, "installed bytes were counted");
        Assert.True(sent >= received, $"sent {sent} bytes, installed {received}");
    }
}
