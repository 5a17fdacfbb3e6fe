using System.Globalization;
using System.Net;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>Starts the real Silo program with its Prometheus endpoint on a free loopback port and scrapes it.</summary>
[Trait("Category", "Process")]
public sealed class PrometheusEndpointTests : IDisposable
{
    private readonly TemporaryDirectory _work = new("paxos-prometheus");

    public void Dispose() => _work.Dispose();

    [Fact]
    public async Task Silo_serves_engine_orleans_and_runtime_metrics_to_prometheus()
    {
        var (paxos, silo, gateway, metrics) = (LoopbackPorts.Range(3), LoopbackPorts.Range(3), LoopbackPorts.Range(3), LoopbackPorts.Next());
        using var process = new SiloProcess(_work.Path, [
            $"--LocalCluster:PaxosPort={paxos}", $"--LocalCluster:SiloPort={silo}", $"--LocalCluster:GatewayPort={gateway}",
            "--Paxos:DataFileSize=1048576", $"--Telemetry:PrometheusPort={metrics}", "--Telemetry:PrometheusHost=127.0.0.1",
        ]);
        await process.StartAsync(TimeSpan.FromSeconds(40));
        Assert.Contains($"Prometheus scrape endpoint: http://127.0.0.1:{metrics}/metrics", process.Output);

        var propose = await ProgramRun.ClientAsync(["propose", "0", "hello", "-g", $"127.0.0.1:{gateway}"], TimeSpan.FromSeconds(40), _work.Path);
        Assert.True(propose.Code == 0, propose.Output);

        // The exporter caches a scrape for 300 ms; the followers apply the value a moment after the proposer.
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var scrape = await Poll.UntilAsync(
            async () =>
            {
                var response = await http.GetAsync(new Uri($"http://127.0.0.1:{metrics}/metrics"));
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType ?? string.Empty, StringComparison.Ordinal);
                return PrometheusText.Parse(await response.Content.ReadAsStringAsync());
            },
            s => s.Samples("paxos_group_instance_current", ("paxos_group", "0")) is { Count: 3 } current && current.All(c => c.Value >= 1),
            TimeSpan.FromSeconds(15),
            s => "group 0 to reach instance 1 on all three nodes in the scrape:\n" + string.Join("\n", s?.Samples("paxos_group_instance_current", ("paxos_group", "0")) ?? []),
            interval: TimeSpan.FromMilliseconds(200));

        // The engine: the proposal, its latency, the gauges of each node and group, the transport.
        // At least the client's proposal: Orleans' membership table (and grain state, reminders) use the log too.
        Assert.True(scrape.Sum("paxos_proposals_total", ("paxos_group", "0"), ("paxos_result", "ok")) >= 1);
        Assert.True(scrape.Sum("paxos_propose_duration_milliseconds_count", ("paxos_group", "0"), ("paxos_result", "ok")) >= 1);
        Assert.True(scrape.Sum("paxos_propose_duration_milliseconds_sum") > 0);
        Assert.Equal(9, scrape.Samples("paxos_group_instance_min_chosen").Count);
        Assert.Equal(0, scrape.Sum("paxos_group_stopped"));
        Assert.True(scrape.Sum("paxos_instances_chosen_total", ("paxos_group", "0")) >= 3, "each node executed the instance");
        Assert.True(scrape.Sum("paxos_transport_frames_sent_total") > 0);
        Assert.True(scrape.Sum("paxos_log_bytes", ("paxos_group", "0")) > 0);
        Assert.Contains("# TYPE paxos_propose_duration_milliseconds histogram", scrape.Text, StringComparison.Ordinal);

        // Orleans' own meter and the runtime's.
        Assert.True(scrape.Sum("orleans_catalog_activation_created_total") >= 1, "Orleans activations are exported");
        Assert.True(scrape.Sum("orleans_app_requests_latency_milliseconds_count") >= 1, "Orleans grain calls are exported");
        Assert.NotEmpty(scrape.Samples("dotnet_gc_collections_total"));
    }

    /// <summary>The samples of a Prometheus text exposition: <c>name{labels} value</c> lines.</summary>
    private sealed class PrometheusText
    {
        private readonly List<(string Name, Dictionary<string, string> Labels, double Value)> _samples = [];

        public required string Text { get; init; }

        public static PrometheusText Parse(string text)
        {
            var result = new PrometheusText { Text = text };
            foreach (var raw in text.Split('\n'))
            {
                var line = raw.Trim();
                if (line.Length == 0 || line[0] == '#')
                {
                    continue;
                }

                var labels = new Dictionary<string, string>(StringComparer.Ordinal);
                string name;
                string rest;
                var brace = line.IndexOf('{', StringComparison.Ordinal);
                if (brace >= 0)
                {
                    name = line[..brace];
                    var close = line.LastIndexOf('}');
                    foreach (var pair in SplitLabels(line[(brace + 1)..close]))
                    {
                        var eq = pair.IndexOf('=', StringComparison.Ordinal);
                        labels[pair[..eq]] = pair[(eq + 1)..].Trim('"');
                    }

                    rest = line[(close + 1)..].Trim();
                }
                else
                {
                    var space = line.IndexOf(' ', StringComparison.Ordinal);
                    name = line[..space];
                    rest = line[(space + 1)..].Trim();
                }

                var valueText = rest.Split(' ')[0];
                var value = valueText switch
                {
                    "+Inf" => double.PositiveInfinity,
                    "-Inf" => double.NegativeInfinity,
                    "NaN" => double.NaN,
                    _ => double.Parse(valueText, NumberStyles.Float, CultureInfo.InvariantCulture),
                };
                result._samples.Add((name, labels, value));
            }

            return result;
        }

        public List<(string Name, Dictionary<string, string> Labels, double Value)> Samples(string name, params (string Key, string Value)[] labels) =>
            [.. _samples.Where(s => s.Name == name && labels.All(l => s.Labels.TryGetValue(l.Key, out var v) && v == l.Value))];

        public double Sum(string name, params (string Key, string Value)[] labels) => Samples(name, labels).Sum(s => s.Value);

        private static IEnumerable<string> SplitLabels(string body)
        {
            var start = 0;
            var quoted = false;
            for (var i = 0; i < body.Length; i++)
            {
                if (body[i] == '"' && (i == 0 || body[i - 1] != '\\'))
                {
                    quoted = !quoted;
                }
                else if (body[i] == ',' && !quoted)
                {
                    yield return body[start..i];
                    start = i + 1;
                }
            }

            if (start < body.Length)
            {
                yield return body[start..];
            }
        }
    }
}
