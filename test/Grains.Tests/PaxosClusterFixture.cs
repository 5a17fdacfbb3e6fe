using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Paxos.Engine.Groups;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Grains.Hosting;
using Orleans.TestingHost;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>
/// Three in-process Orleans silos, each with its own real Paxos node: real file storage in a temp
/// folder and the real UDP/TCP transport on free loopback ports.
/// </summary>
public sealed class PaxosClusterFixture : IAsyncLifetime
{
    public const int Groups = 4;

    private readonly ConcurrentDictionary<string, int> _siloIndex = new();
    private int _nextIndex = -1;

    private readonly TemporaryDirectory _root = new("paxos-grains");

    public string[] Nodes { get; } = [.. Enumerable.Range(0, 3).Select(_ => $"127.0.0.1:{LoopbackPorts.Next()}")];

    public InProcessTestCluster Cluster { get; private set; } = null!;

    public IClusterClient Client => Cluster.Client;

    public async Task InitializeAsync()
    {
        var builder = new InProcessTestClusterBuilder(3);
        builder.ConfigureSilo((options, silo) =>
        {
            var index = _siloIndex.GetOrAdd(options.SiloName, _ => Interlocked.Increment(ref _nextIndex));
            silo.AddPaxos(o =>
            {
                o.MyNode = Nodes[index];
                o.Members = [.. Nodes];
                o.GroupCount = Groups;
                o.StoragePath = Path.Combine(_root.Path, "node" + index);
                o.Sync = false;
                o.DataFileSize = 1 << 20;
                o.AskForLearnInterval = TimeSpan.FromMilliseconds(500);
                o.ProposeTimeout = TimeSpan.FromSeconds(10);
                o.UseMaster = true;
                o.UseMembership = true;
                o.MasterLease = TimeSpan.FromSeconds(2);
            });
            silo.AddPaxosKeyValueStore();
        });
        Cluster = builder.Build();
        await Cluster.DeployAsync();
        await WaitUntilSettledAsync();
    }

    /// <summary>
    /// Waits until every group on every silo votes and knows its master: before that, start-up rounds
    /// (master elections, the rounds of a group that surveys its peers) compete with the tests' proposals.
    /// </summary>
    public Task WaitUntilSettledAsync() => Poll.UntilAsync(
        () => Task.FromResult(Unsettled()),
        pending => pending.Count == 0,
        TimeSpan.FromSeconds(60),
        pending => "the test cluster to settle; still " + string.Join("; ", pending ?? []),
        interval: TimeSpan.FromMilliseconds(50));

    /// <summary>What keeps the cluster from being settled: nodes not running, groups not voting or without a master.</summary>
    private List<string> Unsettled()
    {
        var pending = new List<string>();
        foreach (var silo in Cluster.Silos)
        {
            var host = silo.ServiceProvider.GetRequiredService<PaxosEngineHost>();
            if (!host.IsRunning)
            {
                pending.Add($"{host.MyNodeId} not running");
                continue;
            }

            for (var g = 0; g < Groups; g++)
            {
                var (state, reason) = host.Node.GetGroupVotingState(g);
                if (state != VotingState.Voting)
                {
                    pending.Add($"{host.MyNodeId} group {g} {state}: {reason}");
                }
                else if (host.Node.GetMaster(g).Node == NodeId.Null)
                {
                    pending.Add($"{host.MyNodeId} group {g} has no master");
                }
            }
        }

        return pending;
    }

    public async Task DisposeAsync()
    {
        await Cluster.DisposeAsync();
        _root.Dispose();
    }
}
