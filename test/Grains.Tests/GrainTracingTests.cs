using System.Diagnostics;
using System.Text;
using Orleans.Paxos.Engine.Telemetry;
using Orleans.Paxos.Grains.Hosting;
using Orleans.TestingHost;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>With activity propagation on, the engine's proposal span joins the trace of the client's grain call.</summary>
public sealed class GrainTracingTests
{
    [Fact]
    public async Task A_proposal_through_the_grain_is_traced_inside_the_callers_trace()
    {
        using var root = new TemporaryDirectory("paxos-tracing");
        var node = $"127.0.0.1:{LoopbackPorts.Next()}";
        var stopped = new List<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == PaxosTracing.SourceName || s.Name.StartsWith("Microsoft.Orleans", StringComparison.Ordinal),
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a =>
            {
                lock (stopped)
                {
                    stopped.Add(a);
                }
            },
        };
        ActivitySource.AddActivityListener(listener);

        var builder = new InProcessTestClusterBuilder(1);
        builder.ConfigureSilo((_, silo) =>
        {
            silo.AddActivityPropagation();
            silo.AddPaxos(o =>
            {
                o.MyNode = node;
                o.Members = [node];
                o.GroupCount = 1;
                o.StoragePath = root.Path;
                o.Sync = false;
                o.DataFileSize = 1 << 20;
            });
        });
        builder.ConfigureClient(client => client.AddActivityPropagation());
        await using var cluster = builder.Build();
        try
        {
            await cluster.DeployAsync();
            var grain = cluster.Client.GetGrain<IPaxosGroupGrain>(0);
            ActivityTraceId trace;
            using (var caller = new Activity("client-operation").Start())
            {
                trace = caller.TraceId;
                var result = await grain.ProposeAsync(Encoding.UTF8.GetBytes("traced"), null);
                Assert.True(result.IsOk, result.Status.ToString());
            }

            List<Activity> spans;
            lock (stopped)
            {
                spans = [.. stopped.Where(a => a.TraceId == trace)];
            }

            var propose = Assert.Single(spans, a => a.OperationName == PaxosTracing.ProposeActivityName);
            Assert.Equal("ok", propose.GetTagItem(PaxosTracing.ResultTag));
            Assert.Equal(0, propose.GetTagItem(PaxosTracing.GroupTag));
            Assert.Equal(node, propose.GetTagItem(PaxosTracing.NodeTag));

            // Its parent is the silo's handling of the grain call, itself under the client's call.
            var parent = Assert.Single(spans, a => a.SpanId == propose.ParentSpanId);
            Assert.StartsWith("Microsoft.Orleans", parent.Source.Name, StringComparison.Ordinal);
        }
        finally
        {
            await cluster.StopAllSilosAsync();
        }
    }
}
