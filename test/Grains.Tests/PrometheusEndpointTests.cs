using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>Starts the real Silo program with its Prometheus endpoint on a free loopback port and scrapes it.</summary>
[Trait("Category", "Process")]
public sealed class PrometheusEndpointTests : IDisposable
{
    private readonly string _work = Path.Combine(Path.GetTempPath(), "paxos-prometheus-" + Guid.NewGuid().ToString("N"));

    public PrometheusEndpointTests() => Directory.CreateDirectory(_work);

    public void Dispose()
    {
        try
        {
            Directory.Delete(_work, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    [Fact]
    public async Task Silo_serves_engine_orleans_and_runtime_metrics_to_prometheus()
    {
        var (paxos, silo, gateway, metrics) = (LoopbackPortRange.Free(3), LoopbackPortRange.Free(3), LoopbackPortRange.Free(3), LoopbackPortRange.Free(1));
        using var process = StartSilo(paxos, silo, gateway, metrics);
        var ready = await Task.WhenAny(process.Ready.Task, Task.Delay(TimeSpan.FromSeconds(40)));
        Assert.True(ready == process.Ready.Task, "the silo did not start in 40 s:\n" + process.Output);
        Assert.Contains($"Prometheus scrape endpoint: http://127.0.0.1:{metrics}/metrics", process.Output);

        var propose = await RunClientAsync(gateway, "propose", "0", "hello");
        Assert.True(propose.Code == 0, propose.Output);

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        PrometheusText scrape;
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (true)
        {
            // The exporter caches a scrape for 300 ms; the followers apply the value a moment after the proposer.
            var response = await http.GetAsync(new Uri($"http://127.0.0.1:{metrics}/metrics"));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType ?? string.Empty, StringComparison.Ordinal);
            scrape = PrometheusText.Parse(await response.Content.ReadAsStringAsync());
            var current = scrape.Samples("paxos_group_instance_current", ("paxos_group", "0"));
            if (current.Count == 3 && current.All(s => s.Value >= 1))
            {
                break;
            }

            Assert.True(DateTime.UtcNow < deadline, "group 0 did not reach instance 1 on all three nodes in the scrape:\n" + string.Join("\n", current));
            await Task.Delay(200);
        }

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

    private SiloProcess StartSilo(int paxos, int silo, int gateway, int metrics)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = _work,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(Executable("Silo", "Orleans.Paxos.Silo.dll"));
        psi.ArgumentList.Add($"--LocalCluster:PaxosPort={paxos}");
        psi.ArgumentList.Add($"--LocalCluster:SiloPort={silo}");
        psi.ArgumentList.Add($"--LocalCluster:GatewayPort={gateway}");
        psi.ArgumentList.Add("--Paxos:DataFileSize=1048576");
        psi.ArgumentList.Add($"--Telemetry:PrometheusPort={metrics}");
        psi.ArgumentList.Add("--Telemetry:PrometheusHost=127.0.0.1");
        return new SiloProcess(Process.Start(psi)!);
    }

    private async Task<(int Code, string Output)> RunClientAsync(int gateway, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = _work,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(Executable("Client", "Orleans.Paxos.Client.dll"));
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.ArgumentList.Add("-g");
        psi.ArgumentList.Add($"127.0.0.1:{gateway}");
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(40));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout + await stderr);
    }

    private static string Executable(string project, string dll)
    {
        // test/Grains.Tests/bin/<Configuration>/<tfm>/ → src/<project>/bin/<Configuration>/<tfm>/
        var baseDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var repo = baseDir.Parent!.Parent!.Parent!.Parent!.Parent!.FullName;
        var path = Path.Combine(repo, "src", project, "bin", baseDir.Parent!.Name, baseDir.Name, dll);
        Assert.True(File.Exists(path), $"{path} is missing; build the solution first");
        return path;
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

    private sealed class SiloProcess : IDisposable
    {
        private readonly StringBuilder _output = new();

        public SiloProcess(Process process)
        {
            Process = process;
            process.OutputDataReceived += (_, e) => OnLine(e.Data);
            process.ErrorDataReceived += (_, e) => OnLine(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
        }

        public Process Process { get; }

        public TaskCompletionSource Ready { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public string Output
        {
            get
            {
                lock (_output)
                {
                    return _output.ToString();
                }
            }
        }

        public void Dispose()
        {
            if (!Process.HasExited)
            {
                Process.Kill(entireProcessTree: true);
                Process.WaitForExit(10_000);
            }

            Process.Dispose();
        }

        private void OnLine(string? line)
        {
            if (line is null)
            {
                return;
            }

            lock (_output)
            {
                _output.AppendLine(line);
            }

            if (line.Contains("Press Ctrl+C", StringComparison.Ordinal))
            {
                Ready.TrySetResult();
            }
        }
    }
}
