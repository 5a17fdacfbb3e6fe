using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;
using Orleans.Paxos.Grains.Clustering;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>
/// Three silo processes of the real Silo program in single-silo mode (a <see cref="SiloCluster"/>: each its own
/// Paxos node, Orleans clustering, grain storage and reminders on Paxos, no primary silo), and an Orleans client
/// that follows them through <see cref="PaxosGatewayListProvider"/>.
/// </summary>
internal sealed class SiloProcessCluster : IAsyncDisposable
{
    private readonly TemporaryDirectory _work = new("paxos-silos");
    private readonly SiloCluster _silos;
    private IHost? _clientHost;

    public SiloProcessCluster()
    {
        _silos = new SiloCluster(3, _work.Path, moreArguments: _ =>
        [
            "--Orleans:ReminderOptions:MinimumReminderPeriod=00:00:01",
            "--Paxos:Orleans:MajorityLossLogPeriod=00:00:10",
        ]);
    }

    public IReadOnlyList<SiloProcess> Silos => _silos.Silos;

    public IClusterClient Client => _clientHost!.Services.GetRequiredService<IClusterClient>();

    public int GatewayPort(int i) => _silos.GatewayPort(i);

    /// <summary>Every output line of every silo incarnation so far (for assertions over the whole run).</summary>
    public string AllOutput() => _silos.Output();

    /// <summary>Starts the silos together (each joins once a Paxos majority is up) and then the client.</summary>
    public async Task StartAsync()
    {
        await Task.WhenAll(Enumerable.Range(0, 3).Select(StartSiloAsync));
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
                o.Gateways = [.. _silos.Gateways];
                o.RefreshPeriod = TimeSpan.FromSeconds(5);
            });
        });
        _clientHost = builder.Build();
        await _clientHost.StartAsync();
    }

    /// <summary>Starts silo <paramref name="i"/> and waits until it reports being up; a silo that does not comes with the groups' status.</summary>
    public async Task StartSiloAsync(int i)
    {
        try
        {
            await Silos[i].StartAsync(TimeSpan.FromSeconds(90));
        }
        catch (TimeoutException ex) when (_clientHost is not null)
        {
            throw new TimeoutException(ex.Message + "\n" + await StatusAsync(), ex);
        }
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

    /// <summary>kill -9 of silo <paramref name="i"/> (no shutdown, no last membership write); returns when it was killed.</summary>
    public DateTime Kill(int i)
    {
        Silos[i].Kill();
        return DateTime.UtcNow;
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

        _silos.Dispose();

        // Kept for a look after a failure: every silo incarnation's output.
        await File.WriteAllTextAsync(Path.Combine(Path.GetTempPath(), "paxos-silos-last-run.log"), AllOutput());
        _work.Dispose();
    }
}
