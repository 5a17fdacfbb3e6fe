using System.Globalization;

namespace Orleans.Paxos.Grains.Tests.Interop;

/// <summary>
/// Mixed clusters of real PhxPaxos nodes (its echo sample, <c>phxecho</c>) and our Silo program in one group:
/// values proposed on both sides are executed on every node in the same order, a node of each kind killed
/// with -9 and restarted catches up, and the nodes write byte-identical data files.
/// </summary>
/// <remarks>
/// The files are compared before the kills: while every node is up, each is an acceptor of the same
/// ballots and writes the same records. A node killed meanwhile misses promises and accepts and writes
/// the values it learns afterwards as its own records, so from then on the files differ in their history
/// records (PhxPaxos nodes among themselves alike) while the chosen values, checked here, stay the same.
/// </remarks>
[Trait("Category", "Process")]
public sealed class PhxPaxosInteropTests : IDisposable
{
    private readonly TemporaryDirectory _work = new("paxos-interop");

    public void Dispose() => _work.Dispose();

    [PhxPaxosPeerFact]
    public Task Two_PhxPaxos_nodes_and_one_of_ours() => RunAsync(phxPaxosNodes: 2);

    [PhxPaxosPeerFact]
    public Task One_PhxPaxos_node_and_two_of_ours() => RunAsync(phxPaxosNodes: 1);

    private async Task RunAsync(int phxPaxosNodes)
    {
        var first = LoopbackPorts.Range(3);
        var members = Enumerable.Range(first, 3).Select(p => $"127.0.0.1:{p.ToString(CultureInfo.InvariantCulture)}").ToArray();
        var nodes = Enumerable.Range(0, 3)
            .Select(i => i < phxPaxosNodes ? (IMixedNode)new PhxEchoNode(_work.Path, first + i, string.Join(',', members)) : new SiloNode(_work.Path, first + i, members))
            .ToArray();
        try
        {
            foreach (var node in nodes)
            {
                await node.StartAsync();
            }

            var proposed = new List<string>();
            async Task Propose(int node, string value)
            {
                await nodes[node].ProposeAsync(value);
                proposed.Add(value);
            }

            // Both sides propose, one after the other.
            for (var round = 0; round < 2; round++)
            {
                for (var n = 0; n < nodes.Length; n++)
                {
                    await Propose(n, $"r{round}-n{n}");
                }
            }

            var order = await SameOrderEverywhere(nodes, proposed);
            var hashes = nodes.Select(n => DataFiles.Sha256(n.DataFile)).ToArray();
            Assert.True(hashes.Distinct().Count() == 1, "data files differ: " + string.Join(", ", nodes.Select((n, i) => $"{n.Name} {hashes[i][..12]}")));

            // kill -9 a PhxPaxos node (the first) and then one of ours (the last); each catches up after its restart.
            foreach (var victim in new[] { 0, nodes.Length - 1 })
            {
                nodes[victim].Kill();
                foreach (var n in Enumerable.Range(0, nodes.Length).Where(n => n != victim))
                {
                    await Propose(n, $"without-{victim}-by-{n}");
                }

                await nodes[victim].StartAsync();
                await nodes[victim].ExecutedAsync(proposed.Count, TimeSpan.FromSeconds(90));
                await Propose(victim, $"back-{victim}");
            }

            var final = await SameOrderEverywhere(nodes, proposed);
            Assert.Equal(order, final[..order.Length]);

            if (nodes.OfType<SiloNode>().First() is { } ours)
            {
                // The key-value store is off on these silos: its grain says so instead of misreading PhxPaxos values.
                var kv = await ours.ClientAsync("kv", "get", "anything");
                Assert.True(kv.Code == 1 && kv.Stderr.Contains("no key-value store", StringComparison.Ordinal), kv.ToString());
            }
        }
        finally
        {
            foreach (var node in nodes)
            {
                node.Dispose();
            }
        }
    }

    /// <summary>Every node executed every proposed value once, all in one order; returns that order.</summary>
    private static async Task<string[]> SameOrderEverywhere(IMixedNode[] nodes, List<string> proposed)
    {
        var executed = new List<string[]>();
        foreach (var node in nodes)
        {
            executed.Add(await node.ExecutedAsync(proposed.Count, TimeSpan.FromSeconds(60)));
        }

        for (var i = 1; i < nodes.Length; i++)
        {
            Assert.True(executed[0].SequenceEqual(executed[i]), $"{nodes[0].Name} executed [{string.Join(", ", executed[0])}] but {nodes[i].Name} [{string.Join(", ", executed[i])}]");
        }

        Assert.Equal(proposed.Order(StringComparer.Ordinal), executed[0].Order(StringComparer.Ordinal));
        return executed[0];
    }
}
