using System.Diagnostics;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;
using Orleans.Paxos.Grains.Clustering;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>
/// Three silo processes of the real Silo program in single-silo mode (each its own Paxos node, Orleans clustering,
/// grain storage and reminders on Paxos, no primary silo), and an Orleans client that follows them through
/// <see cref="PaxosGatewayListProvider"/>.
/// </summary>
internal sealed class SiloProcessCluster : IAsyncDisposable
{
    private readonly string _work = Path.Combine(Path.GetTempPath(), "paxos-silos-" + Guid.NewGuid().ToString("N"));
    private readonly int _paxosPort = LoopbackPortRange.Free(3);
    private readonly int _siloPort = LoopbackPortRange.Free(3);
    private readonly int _gatewayPort = LoopbackPortRange.Free(3);
    private IHost? _clientHost;

    public SiloProcessCluster()
    {
        Directory.CreateDirectory(_work);
    }

    public SiloProcess?[] Silos { get; } = new SiloProcess?[3];

    public IClusterClient Client => _clientHost!.Services.GetRequiredService<IClusterClient>();

    public int GatewayPort(int i) => _gatewayPort + i;

    /// <summary>Every output line of every silo incarnation so far (for assertions over the whole run).</summary>
    public StringBuilder AllOutput { get; } = new();

    /// <summary>Starts the silos together (each joins once a Paxos majority is up) and then the client.</summary>
    public async Task StartAsync()
    {
        var starts = Enumerable.Range(0, 3).Select(StartSiloAsync).ToArray();
        await Task.WhenAll(starts);
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.UseOrleansClient(c =>
        {
            c.Configure<ClusterOptions>(o =>
            {
                o.ClusterId = "paxos";
                o.ServiceId = "paxos";
            });
            c.Configure<ClientMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromSeconds(5));
            c.UsePaxosClustering(o =>
            {
                o.Gateways = [.. Enumerable.Range(0, 3).Select(i => $"127.0.0.1:{GatewayPort(i)}")];
                o.RefreshPeriod = TimeSpan.FromSeconds(5);
            });
        });
        _clientHost = builder.Build();
        await _clientHost.StartAsync();
    }

    /// <summary>Starts silo <paramref name="i"/> and waits until it reports being up.</summary>
    public async Task StartSiloAsync(int i)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = _work,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(Executable("Silo", "Orleans.Paxos.Silo.dll"));
        psi.ArgumentList.Add($"--Paxos:MyNode=127.0.0.1:{_paxosPort + i}");
        for (var m = 0; m < 3; m++)
        {
            psi.ArgumentList.Add($"--Paxos:Members:{m}=127.0.0.1:{_paxosPort + m}");
        }

        psi.ArgumentList.Add("--Paxos:GroupCount=3");
        psi.ArgumentList.Add("--Paxos:StoragePath=node" + i.ToString(CultureInfo.InvariantCulture));
        psi.ArgumentList.Add("--Paxos:DataFileSize=1048576");
        psi.ArgumentList.Add($"--Orleans:SiloPort={_siloPort + i}");
        psi.ArgumentList.Add($"--Orleans:GatewayPort={_gatewayPort + i}");
        psi.ArgumentList.Add("--Orleans:ReminderOptions:MinimumReminderPeriod=00:00:01");
        psi.ArgumentList.Add("--Paxos:Orleans:MajorityLossLogPeriod=00:00:10");
        psi.ArgumentList.Add("--Telemetry:PrometheusPort=0");
        var silo = new SiloProcess(Process.Start(psi)!, i, AllOutput);
        Silos[i] = silo;
        var ready = await Task.WhenAny(silo.Ready.Task, Task.Delay(TimeSpan.FromSeconds(90)));
        if (ready != silo.Ready.Task && _clientHost is not null)
        {
            lock (AllOutput)
            {
                AllOutput.AppendLine(StatusAsync().GetAwaiter().GetResult());
            }
        }

        Assert.True(ready == silo.Ready.Task, $"silo {i} did not start in 90 s (exited: {silo.Process.HasExited}):\n" + silo.Output);
    }

    /// <summary>Every group's instance on every node, as the cluster reports it (for failure messages).</summary>
    public async Task<string> StatusAsync()
    {
        var text = new StringBuilder();
        for (var g = 0; g < 3; g++)
        {
            try
            {
                var status = await Client.GetGrain<IPaxosGroupGrain>(g).GetStatusAsync().WaitAsync(TimeSpan.FromSeconds(10));
                foreach (var n in status.Nodes)
                {
                    text.AppendLine($"status group {g} node {n.Node} reachable {n.Reachable} now {n.NowInstanceId} lag {n.Lag} {n.StoppedReason}");
                }
            }
            catch (Exception ex) when (ex is OrleansException or TimeoutException)
            {
                text.AppendLine($"status group {g}: {ex.Message}");
            }
        }

        return text.ToString();
    }

    /// <summary>kill -9 of silo <paramref name="i"/>.</summary>
    public DateTime Kill(int i)
    {
        var silo = Silos[i]!;
        silo.Process.Kill(); // SIGKILL on Linux: no shutdown, no last membership write
        var at = DateTime.UtcNow;
        silo.Process.WaitForExit(10_000);
        return at;
    }

    public async ValueTask DisposeAsync()
    {
        if (_clientHost is not null)
        {
            try
            {
                using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                await _clientHost.StopAsync(stop.Token);
            }
            catch (OperationCanceledException)
            {
            }

            _clientHost.Dispose();
        }

        foreach (var s in Silos)
        {
            s?.Dispose();
        }

        lock (AllOutput)
        {
            // Kept for a look after a failure: every silo incarnation's output, prefixed with its index.
            File.WriteAllText(Path.Combine(Path.GetTempPath(), "paxos-silos-last-run.log"), AllOutput.ToString());
        }

        try
        {
            Directory.Delete(_work, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Waits until <paramref name="condition"/> holds, polling every 100 ms, or fails after <paramref name="timeout"/>.</summary>
    public static async Task WaitUntilAsync(Func<Task<bool>> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            try
            {
                if (await condition())
                {
                    return;
                }
            }
            catch (Exception ex) when (ex is OrleansException or TimeoutException or InvalidOperationException or OperationCanceledException)
            {
            }

            Assert.True(DateTime.UtcNow < deadline, $"timed out after {timeout.TotalSeconds} s waiting for {what}");
            await Task.Delay(100);
        }
    }

    private static string Executable(string project, string dll)
    {
        var baseDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var tfm = baseDir.Name;
        var configuration = baseDir.Parent!.Name;
        var repo = baseDir.Parent!.Parent!.Parent!.Parent!.Parent!.FullName;
        var path = Path.Combine(repo, "src", project, "bin", configuration, tfm, dll);
        Assert.True(File.Exists(path), $"{path} is missing; build the solution first");
        return path;
    }

    internal sealed class SiloProcess : IDisposable
    {
        private readonly StringBuilder _output = new();
        private readonly StringBuilder _all;

        public SiloProcess(Process process, int index, StringBuilder all)
        {
            Process = process;
            Index = index;
            _all = all;
            process.OutputDataReceived += (_, e) => OnLine(e.Data);
            process.ErrorDataReceived += (_, e) => OnLine(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
        }

        public Process Process { get; }

        public int Index { get; }

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

            lock (_all)
            {
                _all.Append('[').Append(Index).Append("] ").AppendLine(line);
            }

            if (line.StartsWith("Silo up:", StringComparison.Ordinal))
            {
                Ready.TrySetResult();
            }
        }
    }
}
