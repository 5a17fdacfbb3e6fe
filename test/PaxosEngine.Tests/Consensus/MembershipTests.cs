using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Consensus;

public sealed class MembershipTests
{
    private static TestCluster FiveIdsThreeMembers(int seed) => new(5, 1, seed, configure: null, configureNode: (i, o) =>
    {
        o.UseMembership = true;
        o.Members = [.. o.Members.Take(3)];
    }, startNodes: 3);

    [Fact]
    public async Task Without_managed_membership_changes_report_no_gid()
    {
        using var cluster = new TestCluster(3, 1, seed: 11);
        var r = await cluster.Node(0).AddMemberAsync(0, Engine.Protocol.NodeId.Parse("127.0.0.1:29999"));
        Assert.Equal(MembershipStatus.NoGid, r.Status);
    }

    [Fact]
    public async Task First_proposal_creates_the_cluster_id_on_every_node()
    {
        using var cluster = FiveIdsThreeMembers(12);
        Assert.True((await cluster.Propose(0, 0, "first")).IsOk);
        await cluster.WaitConvergedAsync(0, 1, TimeSpan.FromSeconds(10));
        var gid = cluster.Node(0).GetMembership(0).Gid;
        Assert.NotEqual(0ul, gid);
        for (var i = 1; i < 3; i++)
        {
            await WaitUntil(() => cluster.Node(i).GetMembership(0).Gid == gid, "gid everywhere");
        }
    }

    [Fact]
    public async Task Grow_three_to_five_and_shrink_back_while_proposals_run()
    {
        using var cluster = FiveIdsThreeMembers(13);
        Assert.True((await cluster.Propose(0, 0, "start")).IsOk);
        using var stop = new CancellationTokenSource();
        var paused = 0;
        var chosen = 0;
        var load = Task.Run(async () =>
        {
            var n = 0;
            while (!stop.IsCancellationRequested)
            {
                if (Volatile.Read(ref paused) == 1)
                {
                    await Task.Delay(5);
                    continue;
                }

                var r = await cluster.Propose(n % 2, 0, $"load-{n++}");
                if (r.IsOk)
                {
                    Interlocked.Increment(ref chosen);
                }
            }
        });

        // The load goes on choosing values at each step of the change: waits on the count of chosen
        // load values, not on how many fit in some stretch of wall-clock time.
        async Task LoadChoosesMore(string when)
        {
            var from = Volatile.Read(ref chosen);
            await WaitUntil(() => Volatile.Read(ref chosen) >= from + 3, $"load values chosen {when}");
        }

        cluster.Start(3);
        cluster.Start(4);
        Assert.Equal(MembershipStatus.Ok, (await cluster.Node(0).AddMemberAsync(0, cluster.Ids[3])).Status);
        Assert.Equal(MembershipStatus.Ok, (await cluster.Node(0).AddMemberAsync(0, cluster.Ids[4])).Status);
        await WaitUntil(() => Enumerable.Range(0, 5).All(i => cluster.Node(i).GetMembership(0).Members.Count == 5), "five members everywhere");
        await LoadChoosesMore("with five members");

        // A new member proposes too. Dueling with the load's proposers it can lose round after round
        // (Conflict) on a loaded machine, so the load pauses while it gets its value chosen.
        Volatile.Write(ref paused, 1);
        var fromNew = ProposeResult.Timeout;
        for (var attempt = 0; attempt < 10 && !fromNew.IsOk; attempt++)
        {
            fromNew = await cluster.Propose(3, 0, $"from-new-member-{attempt}");
        }

        Assert.True(fromNew.IsOk, fromNew.Status.ToString());
        Volatile.Write(ref paused, 0);
        await LoadChoosesMore("after the new member's value");

        Assert.Equal(MembershipStatus.Ok, (await cluster.Node(0).RemoveMemberAsync(0, cluster.Ids[4])).Status);
        Assert.Equal(MembershipStatus.Ok, (await cluster.Node(0).RemoveMemberAsync(0, cluster.Ids[3])).Status);
        await LoadChoosesMore("after shrinking to three");
        await stop.CancelAsync();
        await load;
        await WaitUntil(() => Enumerable.Range(0, 3).All(i => cluster.Node(i).GetMembership(0).Members.Count == 3), "three members again");

        // A removed node can no longer propose.
        await WaitUntil(() => cluster.Node(3).GetMembership(0).Members.Count == 3, "node 3 learns its removal");
        Assert.Equal(ProposeStatus.NotMember, (await cluster.Propose(3, 0, "removed")).Status);

        var target = cluster.Machines.Take(3).Max(m => m[0].Count);
        await WaitUntil(() => Enumerable.Range(0, 3).All(i => cluster.Machines[i][0].Count == target), "members converge");
        cluster.AssertSafety(0);
    }

    [Fact]
    public async Task Concurrent_conflicting_changes_one_wins_the_other_gets_a_version_conflict()
    {
        using var cluster = FiveIdsThreeMembers(14);
        Assert.True((await cluster.Propose(0, 0, "start")).IsOk);
        await WaitUntil(() => Enumerable.Range(0, 3).All(i => cluster.Node(i).GetMembership(0).Gid != 0), "gid everywhere");
        var a = cluster.Node(0).AddMemberAsync(0, cluster.Ids[3]);
        var b = cluster.Node(1).AddMemberAsync(0, cluster.Ids[4]);
        var results = await Task.WhenAll(a, b);
        Assert.Equal(1, results.Count(r => r.Status == MembershipStatus.Ok));
        Assert.Equal(1, results.Count(r => r.Status == MembershipStatus.VersionConflict || r.ProposeStatus == ProposeStatus.Conflict));
        await WaitUntil(() => cluster.Node(2).GetMembership(0).Members.Count == 4, "exactly one node added");
    }

    [Fact]
    public async Task Messages_from_a_removed_node_are_refused()
    {
        using var cluster = new TestCluster(3, 1, seed: 15, configure: o => o.UseMembership = true);
        Assert.True((await cluster.Propose(0, 0, "start")).IsOk);
        Assert.Equal(MembershipStatus.Ok, (await cluster.Node(0).RemoveMemberAsync(0, cluster.Ids[2])).Status);
        await WaitUntil(() => cluster.Node(1).GetMembership(0).Members.Count == 2, "removal everywhere");

        // Node 2 may still believe it is a member until it learns the change; whatever it proposes now
        // cannot be chosen by the two remaining members, which refuse its Prepare and Accept.
        var before = cluster.Node(0).GetNowInstanceId(0);
        using var quick = new CancellationTokenSource(TimeSpan.FromSeconds(3));
        cluster.Network.Isolate(cluster.Ids[2]);
        cluster.Network.HealAll();
        var r = await cluster.Propose(2, 0, "from-removed", quick.Token);
        Assert.NotEqual(ProposeStatus.Ok, r.Status);
        var still = await cluster.Propose(0, 0, "still-works");
        Assert.True(still.IsOk, still.Status.ToString());
        Assert.True(cluster.Node(0).GetNowInstanceId(0) > before);
        Assert.DoesNotContain(cluster.Machines[0][0].Snapshot(), e => System.Text.Encoding.UTF8.GetString(e.Value) == "from-removed");
    }

    private static async Task WaitUntil(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"timed out waiting for {what}");
            }

            await Task.Delay(25);
        }
    }
}
