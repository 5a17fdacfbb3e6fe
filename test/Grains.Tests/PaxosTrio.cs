using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Serialization;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.StateMachines.KeyValue;
using Orleans.Paxos.Grains.Clustering;
using Orleans.Paxos.Grains.Hosting;
using Orleans.Paxos.Grains.Storage;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>
/// Three real Paxos nodes (UDP/TCP on loopback, files in a temp folder) hosted by <see cref="PaxosEngineHost"/>
/// as silos host them, with the membership table and the key-value store mounted, without Orleans silos:
/// the providers' contract runs against them.
/// </summary>
public class PaxosTrio : IAsyncLifetime
{
    public const int Groups = 3;

    private readonly List<ServiceProvider> _providers = [];

    private readonly TemporaryDirectory _root = new("paxos-trio");

    public string[] Nodes { get; } = [.. Enumerable.Range(0, 3).Select(_ => $"127.0.0.1:{LoopbackPorts.Next()}")];

    public PaxosEngineHost[] Hosts { get; } = new PaxosEngineHost[3];

    public IServiceProvider[] Services => [.. _providers];

    public Task InitializeAsync()
    {
        for (var i = 0; i < 3; i++)
        {
            _providers.Add(Build(i, "paxos"));
        }

        return Task.WhenAll(_providers.Select((sp, i) => Task.Run(() =>
        {
            Hosts[i] = sp.GetRequiredService<PaxosEngineHost>();
            Hosts[i].Start();
        })));
    }

    public async Task DisposeAsync()
    {
        foreach (var h in Hosts)
        {
            if (h is not null)
            {
                await h.StopAsync();
            }
        }

        foreach (var sp in _providers)
        {
            await sp.DisposeAsync();
        }

        _root.Dispose();
    }

    /// <summary>A membership table of <paramref name="clusterId"/> reached through node <paramref name="node"/>.</summary>
    public PaxosMembershipTable MembershipTable(int node, string clusterId) =>
        new(Access(node), Options.Create(new PaxosClusteringOptions()), Options.Create(new ClusterOptions { ClusterId = clusterId, ServiceId = "svc" }));

    public PaxosTableAccess Access(int node) => _providers[node].GetRequiredService<PaxosTableAccess>();

    /// <summary>The nodes' <see cref="PaxosNodeOptions.AllowSynchronousContinuations"/>.</summary>
    protected virtual bool SynchronousContinuations => false;

    private ServiceProvider Build(int index, string serviceId)
    {
        var services = new ServiceCollection();
        services.AddLogging(b => b.SetMinimumLevel(LogLevel.Warning));
        services.AddSerializer();
        services.Configure<ClusterOptions>(o =>
        {
            o.ClusterId = "trio";
            o.ServiceId = serviceId;
        });
        services.Configure<PaxosNodeOptions>(o =>
        {
            o.MyNode = Nodes[index];
            o.Members = [.. Nodes];
            o.GroupCount = Groups;
            o.StoragePath = Path.Combine(_root.Path, "node" + index);
            o.Sync = false;
            o.DataFileSize = 1 << 20;
            o.AskForLearnInterval = TimeSpan.FromMilliseconds(500);
            o.AllowSynchronousContinuations = SynchronousContinuations;
        });
        services.Configure<PaxosTableOptions>(o => o.OperationTimeout = TimeSpan.FromSeconds(10));
        services.AddSingleton<PaxosEngineHost>();
        services.AddSingleton<PaxosTableAccess>();
        services.AddSingleton(new PaxosStateMachineRegistration(0, (sp, o) =>
            new MembershipStateMachine(o.StoragePath, MembershipStateMachine.DefaultSmId, sp.GetService<ILoggerFactory>()?.CreateLogger<MembershipStateMachine>())));
        services.AddSingleton(new PaxosStateMachineRegistration(null, (sp, o) => new KeyValueStateMachine(o.StoragePath)));
        return services.BuildServiceProvider();
    }
}
