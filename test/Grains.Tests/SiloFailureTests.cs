using System.Text;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>Runs on a cluster of its own, since it kills a silo.</summary>
public sealed class SiloFailureTests : IAsyncLifetime
{
    private readonly PaxosClusterFixture _fixture = new();

    public Task InitializeAsync() => _fixture.InitializeAsync();

    public Task DisposeAsync() => _fixture.DisposeAsync();

    [Fact]
    public async Task Killing_a_silo_keeps_proposals_and_the_key_value_store_going()
    {
        var kv = await KeyValueClient.CreateAsync(_fixture.Client);
        Assert.True((await kv.PutAsync("before", "1")).IsOk);
        for (var g = 0; g < PaxosClusterFixture.Groups; g++)
        {
            Assert.True((await _fixture.Client.GetGrain<IPaxosGroupGrain>(g).ProposeAsync(Encoding.UTF8.GetBytes("warm"))).IsOk);
        }

        // Kill a non-primary silo (the primary holds the test membership view).
        var victim = _fixture.Cluster.Silos[^1];
        await _fixture.Cluster.KillSiloAsync(victim);

        var deadline = DateTime.UtcNow.AddSeconds(60);
        for (var g = 0; g < PaxosClusterFixture.Groups; g++)
        {
            var grain = _fixture.Client.GetGrain<IPaxosGroupGrain>(g);

            // A grain that was on the dead silo fails its calls until the cluster declares that silo dead.
            await Poll.UntilAsync(
                async () => (await grain.ProposeAsync(Encoding.UTF8.GetBytes("after-kill"))).IsOk,
                deadline - DateTime.UtcNow,
                $"group {g} to accept proposals after a silo was killed",
                retryOn: ex => ex is OrleansException or TimeoutException,
                interval: TimeSpan.FromMilliseconds(200));
        }

        var after = await kv.PutAsync("after", "2");
        Assert.True(after.IsOk, after.Status.ToString());
        Assert.Equal("1", (await kv.GetAsync("before")).ValueText);
    }
}
