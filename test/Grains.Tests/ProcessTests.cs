using System.Diagnostics;
using System.Text;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>Starts the real Silo program and drives it with the real Client program.</summary>
[Trait("Category", "Process")]
public sealed class ProcessTests : IDisposable
{
    private readonly string _work = Path.Combine(Path.GetTempPath(), "paxos-process-" + Guid.NewGuid().ToString("N"));
    private readonly int _paxosPort;
    private readonly int _siloPort;
    private readonly int _gatewayPort;

    public ProcessTests()
    {
        Directory.CreateDirectory(_work);
        (_paxosPort, _siloPort, _gatewayPort) = (LoopbackPortRange.Free(3), LoopbackPortRange.Free(3), LoopbackPortRange.Free(3));
    }

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
    public async Task Silo_program_serves_the_client_program_and_resumes_from_its_data()
    {
        using (var silo = await StartSiloAsync())
        {
            var propose = await ClientAsync("propose", "0", "hello");
            Assert.True(propose.Code == 0, propose.Output);
            Assert.Contains("chosen: group 0 instance", propose.Output);

            var put = await ClientAsync("kv", "put", "city", "paris");
            Assert.True(put.Code == 0, put.Output);
            var get = await ClientAsync("kv", "get", "city", "--json");
            Assert.True(get.Code == 0, get.Output);
            Assert.Contains("\"ValueText\":\"paris\"", get.Output);
            Assert.Contains("\"Status\":\"Ok\"", get.Output);

            var missing = await ClientAsync("kv", "get", "no-such-key");
            Assert.Equal(1, missing.Code);
            Assert.Contains("not found", missing.Output);

            var status = await ClientAsync("status");
            Assert.True(status.Code == 0, status.Output);
            Assert.Contains($"127.0.0.1:{_paxosPort + 2}", status.Output);

            var usage = await ClientAsync("frobnicate");
            Assert.Equal(2, usage.Code);

            await StopSiloAsync(silo);
        }

        // Nothing listens on these gateways now.
        var unreachable = await ClientAsync("kv", "get", "city");
        Assert.Equal(3, unreachable.Code);

        using (var silo = await StartSiloAsync())
        {
            var get = await ClientAsync("kv", "get", "city");
            Assert.True(get.Code == 0, get.Output);
            Assert.Contains("paris", get.Output);
            await StopSiloAsync(silo);
        }
    }

    private async Task<SiloProcess> StartSiloAsync()
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = _work,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(Executable("Silo", "Orleans.Paxos.Silo.dll"));
        psi.ArgumentList.Add($"--LocalCluster:PaxosPort={_paxosPort}");
        psi.ArgumentList.Add($"--LocalCluster:SiloPort={_siloPort}");
        psi.ArgumentList.Add($"--LocalCluster:GatewayPort={_gatewayPort}");
        psi.ArgumentList.Add("--Paxos:DataFileSize=1048576");
        psi.ArgumentList.Add("--Telemetry:PrometheusPort=0");
        var process = Process.Start(psi)!;
        var silo = new SiloProcess(process);
        var ready = await Task.WhenAny(silo.Ready.Task, Task.Delay(TimeSpan.FromSeconds(40)));
        Assert.True(ready == silo.Ready.Task, "the silo did not start in 40 s:\n" + silo.Output);
        return silo;
    }

    private static async Task StopSiloAsync(SiloProcess silo)
    {
        using (var kill = Process.Start("kill", ["-INT", silo.Process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
        {
            await kill.WaitForExitAsync();
        }

        // Silos stop within StopAsync's 20 s and the node barrier's 30 s even on a loaded machine.
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await silo.Process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            Assert.Fail("the silo did not stop within 60 s of SIGINT:\n" + silo.Output);
        }

        Assert.True(silo.Process.ExitCode == 0, silo.Output);
        Assert.Contains("Stopped.", silo.Output);
    }

    private async Task<(int Code, string Output)> ClientAsync(params string[] args)
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

        for (var i = 0; i < 3; i++)
        {
            psi.ArgumentList.Add("-g");
            psi.ArgumentList.Add($"127.0.0.1:{_gatewayPort + i}");
        }

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
        var tfm = baseDir.Name;
        var configuration = baseDir.Parent!.Name;
        var repo = baseDir.Parent!.Parent!.Parent!.Parent!.Parent!.FullName;
        var path = Path.Combine(repo, "src", project, "bin", configuration, tfm, dll);
        Assert.True(File.Exists(path), $"{path} is missing; build the solution first");
        return path;
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
