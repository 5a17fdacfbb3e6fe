using System.Diagnostics;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>
/// Stopping silo processes of the real Silo program (single-silo mode, Orleans' tables on Paxos) one after another:
/// the last one has no Paxos majority left for its last membership writes and must still exit by itself, promptly,
/// with its node's logs closed cleanly. Runs alone (see <see cref="OrleansOnPaxosProcessTests"/>).
/// </summary>
[Trait("Category", "Process")]
[Collection(nameof(OrleansOnPaxosProcessTests))]
public sealed class SiloStopTests
{
    [Fact]
    public async Task The_last_silo_exits_promptly_after_the_majority_stopped_and_the_cluster_starts_again()
    {
        using var work = new TemporaryDirectory("paxos-stop");
        using var cluster = new SiloCluster(3, work.Path);
        await cluster.StartAsync(TimeSpan.FromSeconds(90));

        // One after the other: each of these two still has a majority (itself and the silos still running) for its
        // last membership writes.
        for (var i = 0; i < 2; i++)
        {
            Assert.True(await cluster.Silos[i].StopAsync(TimeSpan.FromSeconds(60)), $"silo {i} did not stop within 60 s:\n{cluster.Silos[i].Output}");
        }

        // The last one has none: Orleans' retries of its status writes would hold it for minutes. It exits once a
        // table operation found the majority missing (Paxos:Orleans:OperationTimeout, 5 s), well before the harness
        // would kill it.
        var last = cluster.Silos[2];
        var clock = Stopwatch.StartNew();
        var exited = await last.StopAsync(TimeSpan.FromSeconds(20));
        Assert.True(exited, $"the last silo did not exit within 20 s of its stop signal:\n{last.Output}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"the last silo took {clock.Elapsed.TotalSeconds:0.0} s to exit:\n{last.Output}");
        Assert.True(last.ExitCode == 0, last.CurrentOutput);
        Assert.Contains("the silo is stopping without a Paxos majority", last.CurrentOutput, StringComparison.Ordinal);
        Assert.Contains($"Paxos node {cluster.PaxosNodes[2]} stopped.", last.CurrentOutput, StringComparison.Ordinal);

        // Every node's log was closed cleanly: the three start again from their data and form the cluster.
        await cluster.StartAsync(TimeSpan.FromSeconds(90));
        foreach (var silo in cluster.Silos)
        {
            Assert.True(silo.IsRunning, silo.Output);
        }
    }
}
