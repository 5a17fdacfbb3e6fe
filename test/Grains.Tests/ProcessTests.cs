namespace Orleans.Paxos.Grains.Tests;

/// <summary>Starts the real Silo program and drives it with the real Client program.</summary>
[Trait("Category", "Process")]
public sealed class ProcessTests : IDisposable
{
    private readonly TemporaryDirectory _work = new("paxos-process");
    private readonly int _paxosPort = LoopbackPorts.Range(3);
    private readonly int _siloPort = LoopbackPorts.Range(3);
    private readonly int _gatewayPort = LoopbackPorts.Range(3);

    public void Dispose() => _work.Dispose();

    [Fact]
    public async Task Silo_program_serves_the_client_program_and_resumes_from_its_data()
    {
        using var silo = new SiloProcess(_work.Path, [
            $"--LocalCluster:PaxosPort={_paxosPort}", $"--LocalCluster:SiloPort={_siloPort}", $"--LocalCluster:GatewayPort={_gatewayPort}",
            "--Paxos:DataFileSize=1048576", "--Telemetry:PrometheusPort=0",
        ]);
        await silo.StartAsync(TimeSpan.FromSeconds(40));
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

        // Nothing listens on these gateways now.
        var unreachable = await ClientAsync("kv", "get", "city");
        Assert.Equal(3, unreachable.Code);

        await silo.StartAsync(TimeSpan.FromSeconds(40));
        var again = await ClientAsync("kv", "get", "city");
        Assert.True(again.Code == 0, again.Output);
        Assert.Contains("paris", again.Output);
        await StopSiloAsync(silo);
    }

    private static async Task StopSiloAsync(SiloProcess silo)
    {
        // Silos stop within StopAsync's 20 s and the node barrier's 30 s even on a loaded machine.
        Assert.True(await silo.StopAsync(TimeSpan.FromSeconds(60)), "the silo did not stop within 60 s of its stop signal:\n" + silo.Output);
        Assert.True(silo.ExitCode == 0, silo.CurrentOutput);
        Assert.Contains("Stopped.", silo.CurrentOutput);
    }

    private Task<ProgramRun> ClientAsync(params string[] args) =>
        ProgramRun.ClientAsync([.. args, .. Enumerable.Range(0, 3).SelectMany(i => new[] { "-g", $"127.0.0.1:{_gatewayPort + i}" })], TimeSpan.FromSeconds(40), _work.Path);
}
