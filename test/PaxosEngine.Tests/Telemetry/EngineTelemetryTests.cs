using System.Diagnostics;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Telemetry;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Telemetry;

/// <summary>The meter and the activity source are process-wide: these tests run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TelemetryCollection
{
    public const string Name = "Telemetry";
}

[Collection(TelemetryCollection.Name)]
public sealed class EngineTelemetryTests
{
    private const string Node = PaxosMetrics.NodeTag;
    private const string Group = PaxosMetrics.GroupTag;
    private const string Result = PaxosMetrics.ResultTag;

    [Fact]
    public async Task Instruments_follow_proposals_a_master_failover_and_a_catch_up()
    {
        using var capture = new MeterCapture();
        var spans = new List<Activity>();
        using var activityListener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == PaxosTracing.SourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a =>
            {
                lock (spans)
                {
                    spans.Add(a);
                }
            },
        };
        ActivitySource.AddActivityListener(activityListener);
        using var cluster = new TestCluster(3, 2, seed: 71, configure: o =>
        {
            o.UseMaster = true;
            o.MasterLease = TimeSpan.FromSeconds(1);
            o.MaxValueSize = 2048;
        });
        var ids = cluster.Ids.Select(i => i.ToString()).ToArray();

        // Every node stands for master at start, and values proposed meanwhile compete with those elections for
        // instances (three lost instances make a Conflict); once a master holds each group, only its renewals do.
        await WaitUntilAsync(
            () => Enumerable.Range(0, 3).Any(i => cluster.Node(i).IsMaster(0)) && Enumerable.Range(0, 3).Any(i => cluster.Node(i).IsMaster(1)),
            "a master in both groups");

        // Proposals: counted by node, group and result, timed, and traced under the caller's activity.
        ActivityTraceId traceId;
        using (var parent = new Activity("caller").Start())
        {
            traceId = parent.TraceId;
            for (var i = 0; i < 10; i++)
            {
                Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(0, 0, $"a{i}")).Status);
            }
        }

        for (var i = 0; i < 4; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(1, 1, $"b{i}")).Status);
        }

        Assert.Equal(10, capture.Sum("paxos.proposals", (Node, ids[0]), (Group, "0"), (Result, "ok")));
        Assert.Equal(4, capture.Sum("paxos.proposals", (Node, ids[1]), (Group, "1"), (Result, "ok")));
        Assert.Equal(10, capture.Count("paxos.propose.duration", (Node, ids[0]), (Group, "0"), (Result, "ok")));
        Assert.True(capture.Sum("paxos.propose.duration", (Node, ids[0])) > 0);
        Assert.True(capture.Count("paxos.acceptor.persist.duration", (Group, "0")) >= 10 * 2, "a majority persisted each accept before replying");

        // Refused proposals.
        Assert.Equal(ProposeStatus.ValueTooLarge, (await cluster.Node(0).ProposeAsync(0, new byte[4096])).Status);
        Assert.Equal(ProposeStatus.InvalidGroup, (await cluster.Node(0).ProposeAsync(9, new byte[1])).Status);
        Assert.Equal(1, capture.Sum("paxos.proposals.rejected", (Node, ids[0]), (Result, "value_too_large")));
        Assert.Equal(1, capture.Sum("paxos.proposals.rejected", (Node, ids[0]), (Result, "invalid_group")));
        Assert.Equal(10 + 2, capture.Sum("paxos.proposals", (Node, ids[0])));

        // One span per proposal, children of the caller's trace, tagged with group, instance, result and retries.
        List<Activity> traced;
        lock (spans)
        {
            traced = [.. spans.Where(s => s.TraceId == traceId)];
        }

        Assert.Equal(10, traced.Count);
        Assert.All(traced, s =>
        {
            Assert.Equal(PaxosTracing.ProposeActivityName, s.OperationName);
            Assert.Equal(0, s.GetTagItem(PaxosTracing.GroupTag));
            Assert.Equal("ok", s.GetTagItem(PaxosTracing.ResultTag));
            Assert.InRange(Assert.IsType<int>(s.GetTagItem(PaxosTracing.RetriesTag)), 0, 2); // the master's lease values may win an instance
            Assert.IsType<long>(s.GetTagItem(PaxosTracing.InstanceTag));
        });
        Assert.Equal(10, traced.Select(s => s.GetTagItem(PaxosTracing.InstanceTag)).Distinct().Count());

        // Gauges and the chosen counter agree with the node's own view.
        var master = await WaitForMasterAsync(cluster, [0, 1, 2], exceptNode: -1);
        AssertGaugesMatchNodes(cluster, capture, ids, [0, 1, 2]);
        Assert.Equal(1, capture.Gauge("paxos.group.master.is_self", (Node, ids[master]), (Group, "0")));
        Assert.Equal(1, capture.GaugeSeries("paxos.group.master.is_self", (Group, "0")).Sum(kv => kv.Value));
        Assert.True(capture.Gauge("paxos.log.bytes", (Node, ids[master]), (Group, "0")) > 0);
        Assert.Equal(1, capture.Gauge("paxos.log.files", (Node, ids[master]), (Group, "0")));
        Assert.Equal(0, capture.Gauge("paxos.group.stopped", (Node, ids[master]), (Group, "0")));

        // Failover: the stopped node leaves the gauges, another takes the lease and the survivors count the change.
        int[] survivors = [.. Enumerable.Range(0, 3).Where(i => i != master)];
        var changesBefore = survivors.Sum(i => capture.Sum("paxos.master.changes", (Node, ids[i]), (Group, "0")));
        cluster.Stop(master);
        capture.ObserveGauges();
        Assert.Empty(capture.GaugeSeries("paxos.group.instance.current", (Node, ids[master])));
        var newMaster = await WaitForMasterAsync(cluster, survivors, exceptNode: master);
        Assert.True(survivors.Sum(i => capture.Sum("paxos.master.changes", (Node, ids[i]), (Group, "0"))) > changesBefore, "the survivors counted the master change");

        var proposer = survivors[0];
        var okBefore = capture.Sum("paxos.proposals", (Node, ids[proposer]), (Group, "0"), (Result, "ok"));
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(proposer, 0, $"c{i}")).Status);
        }

        Assert.Equal(okBefore + 5, capture.Sum("paxos.proposals", (Node, ids[proposer]), (Group, "0"), (Result, "ok")));

        // Catch-up: the restarted node learns what it missed from a peer, and its lag goes back to zero.
        var learnedBefore = capture.Sum("paxos.learn.values.received", (Group, "0"));
        var target = cluster.Node(newMaster).GetNowInstanceId(0);
        cluster.Start(master);
        await WaitUntilAsync(() => cluster.Node(master).GetNowInstanceId(0) >= target, "the restarted node caught up");
        Assert.True(capture.Sum("paxos.learn.values.received", (Group, "0")) > learnedBefore, "catch-up values were counted");
        Assert.True(capture.Sum("paxos.learn.values.sent", (Group, "0")) > 0);
        await WaitUntilAsync(
            () =>
            {
                capture.ObserveGauges();
                return capture.Gauge("paxos.group.catchup.lag", (Node, ids[master]), (Group, "0")) == 0;
            },
            "the lag gauge returned to 0");
        AssertGaugesMatchNodes(cluster, capture, ids, [0, 1, 2], restarted: master);
    }

    private static void AssertGaugesMatchNodes(TestCluster cluster, MeterCapture capture, string[] ids, int[] nodes, int restarted = -1)
    {
        var before = nodes.Select(i => new[] { cluster.Node(i).GetNowInstanceId(0), cluster.Node(i).GetNowInstanceId(1) }).ToArray();
        capture.ObserveGauges();
        for (var n = 0; n < nodes.Length; n++)
        {
            var node = cluster.Node(nodes[n]);
            for (var g = 0; g < 2; g++)
            {
                var tags = new[] { (Node, ids[nodes[n]]), (Group, g.ToString(System.Globalization.CultureInfo.InvariantCulture)) };
                var after = node.GetNowInstanceId(g);
                var gauge = capture.Gauge("paxos.group.instance.current", tags);
                Assert.NotNull(gauge);
                Assert.InRange((ulong)gauge!.Value, before[n][g], after);
                Assert.Equal(node.GetMinChosenInstanceId(g), (ulong)capture.Gauge("paxos.group.instance.min_chosen", tags)!.Value);
                Assert.True(capture.Gauge("paxos.group.catchup.lag", tags) >= 0);
                Assert.True(capture.Gauge("paxos.group.proposals.waiting", tags) >= 0);
                Assert.True(capture.Gauge("paxos.group.queue.inbound", tags) >= 0);

                // Each executed instance is counted just after the node moves past it. A restarted node may
                // execute again the last instances whose records had not reached its disk, and count them twice.
                var chosen = capture.Sum("paxos.instances.chosen", tags);
                var now = node.GetNowInstanceId(g);
                Assert.InRange(chosen, (double)before[n][g] - 1, nodes[n] == restarted ? double.MaxValue : now);
            }
        }
    }

    private static async Task<int> WaitForMasterAsync(TestCluster cluster, int[] nodes, int exceptNode)
    {
        var master = -1;
        await WaitUntilAsync(
            () =>
            {
                master = nodes.FirstOrDefault(i => i != exceptNode && cluster.Node(i).IsMaster(0), -1);
                return master >= 0;
            },
            "a master was elected");
        return master;
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting until {what} (seed 71)");
            await Task.Delay(20);
        }
    }
}
