using System.Globalization;

namespace Orleans.Paxos.Grains.Tests.Cli;

/// <summary>The Silo program's start: the data folder lock, the failure line, the Prometheus endpoint.</summary>
[Trait("Category", "Process")]
[Collection(CliClusterCollection.Name)]
public sealed class SiloStartTests(CliCluster cluster)
{
    [Fact]
    public async Task A_second_silo_on_a_running_nodes_data_folder_stops_and_names_the_holder()
    {
        var folder = Path.Combine(cluster.Work, "data", $"node-{cluster.PaxosPort}");
        var me = $"127.0.0.1:{LoopbackPorts.Next()}";
        using var second = SiloProcess.Start(cluster.Work, SingleSilo(me, $"--Paxos:StoragePath={folder}"));
        Assert.Equal(1, await second.WaitForExitAsync(TimeSpan.FromSeconds(60)));
        Assert.Contains($"The data folder {folder} is in use: process {cluster.Silo.Pid} ", second.LastLine);
        Assert.Contains("Paxos node 127.0.0.1:", second.LastLine);

        // The second silo opened none of the running node's stores (a group logs "started" once its log is open).
        Assert.DoesNotContain("started at instance", second.Output);
        Assert.Equal(0, (await cluster.ClientAsync("status")).Code);
    }

    [Fact]
    public async Task A_failed_start_names_the_cause_on_its_last_line()
    {
        using (var bad = SiloProcess.Start(cluster.Work, SingleSilo($"127.0.0.1:{LoopbackPorts.Next()}", "--Paxos:MaxValueSize=10", $"--Paxos:StoragePath={Path.Combine(cluster.Work, "bad-option")}")))
        {
            Assert.Equal(1, await bad.WaitForExitAsync(TimeSpan.FromSeconds(60)));
            Assert.Equal("The silo failed to start: Paxos option MaxValueSize must be at least 1024; it is 10.", bad.LastLine);
        }

        // The local cluster too, where the first silo's failure used to be hidden by stopping the others.
        var ports = LoopbackPorts.Range(3);
        using (var taken = SiloProcess.Start(cluster.Work, [
            $"--LocalCluster:PaxosPort={ports}", $"--LocalCluster:SiloPort={LoopbackPorts.Range(3)}", $"--LocalCluster:GatewayPort={LoopbackPorts.Range(3)}",
            $"--Telemetry:PrometheusPort={cluster.PrometheusPort}", $"--Paxos:StoragePath={Path.Combine(cluster.Work, "taken-port")}",
        ]))
        {
            Assert.Equal(1, await taken.WaitForExitAsync(TimeSpan.FromSeconds(60)));
            Assert.StartsWith("The silo failed to start: PrometheusExporter HttpListener could not be started: Address already in use.", taken.LastLine);
            Assert.EndsWith("Each silo on a host needs its own --Telemetry:PrometheusPort (or 0 for none).", taken.LastLine);
        }
    }

    [Fact]
    public async Task Prometheus_answers_localhost_and_127_0_0_1_with_rare_counters_at_zero()
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(20) };
        foreach (var host in new[] { "localhost", "127.0.0.1" })
        {
            var text = await http.GetStringAsync(new Uri($"http://{host}:{cluster.PrometheusPort.ToString(CultureInfo.InvariantCulture)}/metrics"));
            foreach (var series in new[]
            {
                "paxos_checkpoint_needed_total{", "paxos_checkpoint_transfers_installed_total{", "paxos_checkpoint_transfers_sent_total{",
                "paxos_group_inbound_dropped_total{",
            })
            {
                Assert.Contains(text.Split('\n'), l => l.StartsWith(series, StringComparison.Ordinal) && l.Contains("paxos_group=\"2\"", StringComparison.Ordinal));
            }
        }
    }

    private string[] SingleSilo(string me, params string[] more) =>
    [
        $"--Paxos:MyNode={me}", $"--Paxos:Members:0={me}",
        $"--Orleans:SiloPort={LoopbackPorts.Next()}", $"--Orleans:GatewayPort={LoopbackPorts.Next()}", "--Telemetry:PrometheusPort=0",
        .. more,
    ];
}
