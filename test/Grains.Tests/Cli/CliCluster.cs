namespace Orleans.Paxos.Grains.Tests.Cli;

/// <summary>
/// One real local cluster (the Silo program: three silos, real sockets, Prometheus on) shared by every
/// command-line test, and helpers that run the real Client program against it.
/// </summary>
public sealed class CliCluster : IAsyncLifetime
{
    /// <summary>The cluster's largest value, small so that a test can exceed it cheaply.</summary>
    public const int MaxValueSize = 512 * 1024;

    /// <summary>The key-value store's state machine id here (not the default 1).</summary>
    public const int KeyValueSmId = 7;

    private readonly TemporaryDirectory _work = new("paxos-cli");

    public string Work => _work.Path;

    public int PaxosPort { get; } = LoopbackPorts.Range(3);

    public int SiloPort { get; } = LoopbackPorts.Range(3);

    public int GatewayPort { get; } = LoopbackPorts.Range(3);

    public int PrometheusPort { get; } = LoopbackPorts.Next();

    public SiloProcess Silo { get; private set; } = null!;

    /// <summary>The gateways as client arguments.</summary>
    public IEnumerable<string> GatewayArguments => Enumerable.Range(0, 3).SelectMany(i => new[] { "-g", $"127.0.0.1:{GatewayPort + i}" });

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(Path.Combine(Work, "bin"));
        var wrapper = Path.Combine(Work, "bin", "paxos");
        await File.WriteAllTextAsync(wrapper, $"#!/bin/sh\nexec dotnet '{BuiltPrograms.Client}' \"$@\" {string.Join(' ', GatewayArguments)}\n");
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(wrapper, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        Silo = new SiloProcess(Work, [
            $"--LocalCluster:PaxosPort={PaxosPort}", $"--LocalCluster:SiloPort={SiloPort}", $"--LocalCluster:GatewayPort={GatewayPort}",
            "--Paxos:DataFileSize=1048576", $"--Paxos:MaxValueSize={MaxValueSize}", $"--Paxos:KeyValueStore:SmId={KeyValueSmId}",
            $"--Telemetry:PrometheusPort={PrometheusPort}", "--Telemetry:RuntimeMetrics=false",
        ]);
        await Silo.StartAsync(TimeSpan.FromSeconds(60));
    }

    public async Task DisposeAsync()
    {
        await Silo.StopAsync(TimeSpan.FromSeconds(30));
        Silo.Dispose();
        _work.Dispose();
    }

    /// <summary>Runs the client with the cluster's gateways.</summary>
    public Task<ProgramRun> ClientAsync(params string[] args) =>
        ProgramRun.ClientAsync([.. args, .. GatewayArguments], TimeSpan.FromSeconds(60), Work);

    /// <summary>Runs a bash script in the work folder with <c>paxos</c> (the client on this cluster) on the PATH.</summary>
    public Task<ProgramRun> ShellAsync(string script, TimeSpan? timeout = null) =>
        ProgramRun.RunAsync("bash", ["-c", $"export PATH='{Path.Combine(Work, "bin")}':\"$PATH\"\n{script}"], timeout ?? TimeSpan.FromSeconds(60), Work);
}

[CollectionDefinition(Name)]
public sealed class CliClusterCollection : ICollectionFixture<CliCluster>
{
    public const string Name = "cli cluster";
}
