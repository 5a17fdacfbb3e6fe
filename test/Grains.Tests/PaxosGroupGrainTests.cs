using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Paxos.Engine.StateMachines.KeyValue;
using Orleans.Paxos.Grains.Hosting;

namespace Orleans.Paxos.Grains.Tests;

public sealed class PaxosGroupGrainTests(PaxosClusterFixture fixture) : IClassFixture<PaxosClusterFixture>
{
    private IClusterClient Client => fixture.Client;

    private static byte[] B(string s) => Encoding.UTF8.GetBytes(s);

    [Fact]
    public async Task Proposals_from_the_cluster_client_are_chosen_and_reach_every_node()
    {
        var grain = Client.GetGrain<IPaxosGroupGrain>(1);
        var first = await grain.ProposeAsync(B("one"));
        var second = await grain.ProposeAsync(B("two"));
        Assert.Equal(ProposalStatus.Ok, first.Status);
        Assert.Equal(ProposalStatus.Ok, second.Status);
        Assert.True(second.InstanceId > first.InstanceId);
        Assert.Contains(first.Node, fixture.Nodes);

        // The followers learn the values a moment after the proposer; the checks below run on the last status either way.
        var status = await Poll.LastAsync(
            grain.GetStatusAsync,
            s => s.Nodes.Count == 3 && s.Nodes.All(n => n.Reachable && n.NowInstanceId > second.InstanceId && n.Lag == 0),
            TimeSpan.FromSeconds(20));

        Assert.Equal(3, status.Nodes.Count);
        Assert.All(status.Nodes, n => Assert.True(n.NowInstanceId > second.InstanceId, $"{n.Node} is at {n.NowInstanceId}"));
        Assert.Equal(fixture.Nodes.Order(), status.Nodes.Select(n => n.Node).Order());
        // Master lease renewals keep choosing instances, so a node may be one behind for a moment.
        Assert.All(status.Nodes, n => Assert.True(n.Lag <= 1, $"{n.Node} lags {n.Lag}"));
    }

    [Fact]
    public async Task Concurrent_batch_proposals_share_instances_and_report_their_index()
    {
        var grain = Client.GetGrain<IPaxosGroupGrain>(2);
        var results = await Task.WhenAll(Enumerable.Range(0, 20).Select(i => grain.BatchProposeAsync(B("b" + i))));
        Assert.All(results, r => Assert.Equal(ProposalStatus.Ok, r.Status));
        var pairs = results.Select(r => (r.InstanceId, r.BatchIndex)).ToList();
        Assert.Equal(pairs.Count, pairs.Distinct().Count());
        Assert.True(results.Select(r => r.InstanceId).Distinct().Count() < results.Length, "BatchPropose should put several values into one instance");
    }

    [Fact]
    public async Task State_machine_output_comes_back_to_the_caller()
    {
        var r = await Client.GetGrain<IPaxosGroupGrain>(0).ProposeAsync(KeyValueCommand.Put(B("raw"), B("v")), KeyValueStateMachine.DefaultSmId);
        Assert.Equal(ProposalStatus.Ok, r.Status);
        Assert.Equal($"Ok version={r.InstanceId + 1}", r.OutputText);
    }

    [Fact]
    public async Task Bad_requests_get_typed_answers()
    {
        var invalid = await Client.GetGrain<IPaxosGroupGrain>(PaxosClusterFixture.Groups + 5).ProposeAsync(B("x"));
        Assert.Equal(ProposalStatus.InvalidGroup, invalid.Status);

        var tooLarge = await Client.GetGrain<IPaxosGroupGrain>(0).ProposeAsync(new byte[11 * 1024 * 1024]);
        Assert.Equal(ProposalStatus.ValueTooLarge, tooLarge.Status);

        var members = await Client.GetGrain<IPaxosGroupGrain>(0).GetMembersAsync();
        Assert.Equal(ProposalStatus.Ok, members.Status);
        Assert.Equal(fixture.Nodes.Order(), members.Members.Order());

        await Assert.ThrowsAnyAsync<FormatException>(() => Client.GetGrain<IPaxosGroupGrain>(0).AddMemberAsync("not-a-node"));
        Assert.Equal(PaxosClusterFixture.Groups, await Client.GetGrain<IPaxosGroupGrain>(3).GetGroupCountAsync());
    }

    [Fact]
    public async Task Key_value_store_with_versions_through_the_grains()
    {
        var kv = await KeyValueClient.CreateAsync(Client);
        Assert.Equal(PaxosClusterFixture.Groups, kv.GroupCount);

        var put = await kv.PutAsync("color", "red");
        Assert.Equal(KvStatus.Ok, put.Status);
        Assert.Equal(KeyValueClient.GroupOf("color", PaxosClusterFixture.Groups), put.Group);
        Assert.Equal(put.InstanceId + 1, put.Version);

        var get = await kv.GetAsync("color");
        Assert.Equal("red", get.ValueText);
        Assert.Equal(put.Version, get.Version);

        var conflict = await kv.CompareAndSetAsync("color", B("blue"), put.Version + 100);
        Assert.Equal(KvStatus.VersionConflict, conflict.Status);
        Assert.Equal("red", conflict.ValueText);

        var cas = await kv.CompareAndSetAsync("color", B("blue"), put.Version);
        Assert.Equal(KvStatus.Ok, cas.Status);

        var created = await kv.CompareAndSetAsync("shape-" + Guid.NewGuid().ToString("N"), B("round"), 0);
        Assert.Equal(KvStatus.Ok, created.Status);

        Assert.Equal(KvStatus.VersionConflict, (await kv.DeleteAsync("color", put.Version)).Status);
        Assert.Equal(KvStatus.Ok, (await kv.DeleteAsync("color", cas.Version)).Status);
        Assert.Equal(KvStatus.NotFound, (await kv.GetAsync("color")).Status);

        // The stale read comes from one node's store; it catches up with the write.
        await kv.PutAsync("stale", "s1");
        var stale = await Poll.LastAsync(() => kv.GetStaleAsync("stale"), r => r.ValueText == "s1", TimeSpan.FromSeconds(10));
        Assert.Equal("s1", stale.ValueText);
        Assert.Equal(0UL, stale.InstanceId);
    }

    [Fact]
    public async Task Watch_returns_history_then_live_entries()
    {
        var grain = Client.GetGrain<IPaxosGroupGrain>(3);
        var before = await grain.ProposeAsync(B("history"));
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var seen = new List<CommittedEntry>();
        var historySeen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var watching = Task.Run(async () =>
        {
            await foreach (var e in grain.WatchAsync(before.InstanceId, cts.Token))
            {
                seen.Add(e);
                historySeen.TrySetResult();
                if (seen.Count == 2)
                {
                    break;
                }
            }
        });

        // The second value goes out once the watch has delivered the first: it then reaches the watch live.
        await Task.WhenAny(historySeen.Task, watching).WaitAsync(cts.Token);
        var after = await grain.ProposeAsync(B("live"));
        await watching;
        Assert.Equal(["history", "live"], seen.Select(e => Encoding.UTF8.GetString(e.Value)));
        Assert.Equal([before.InstanceId, after.InstanceId], seen.Select(e => e.InstanceId));
    }

    [Fact]
    public async Task The_group_grain_lives_on_the_master_and_follows_it()
    {
        const int group = 1;
        var grain = Client.GetGrain<IPaxosGroupGrain>(group);
        var first = await WaitForView(grain, v => v.Master is not null && v.IsLocalMaster, "the grain on the master's silo");
        Assert.True(first.Supported);

        var hosts = fixture.Cluster.Silos
            .Select(s => s.ServiceProvider.GetRequiredService<PaxosEngineHost>())
            .ToList();
        var masterHost = hosts.Single(h => h.IsMaster(group));
        masterHost.Node.DropMaster(group);

        var second = await WaitForView(grain, v => v.Master is not null && v.Master != first.Master && v.IsLocalMaster, "the grain to follow the new master");
        Assert.NotEqual(first.Node, second.Node);
    }

    private static Task<MasterView> WaitForView(IPaxosGroupGrain grain, Func<MasterView, bool> condition, string what) =>
        Poll.UntilAsync(grain.GetMasterAsync, condition, TimeSpan.FromSeconds(30), view => $"{what}; last view {view}");
}
