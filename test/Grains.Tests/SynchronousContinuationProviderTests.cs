namespace Orleans.Paxos.Grains.Tests;

/// <summary>A <see cref="PaxosTrio"/> whose nodes let callers continue on engine threads.</summary>
public sealed class SynchronousContinuationsTrio : PaxosTrio
{
    /// <inheritdoc />
    protected override bool SynchronousContinuations => true;
}

/// <summary>
/// With <c>Paxos:AllowSynchronousContinuations</c> the engine completes proposals on its own threads; the Orleans
/// table providers must still hand Orleans' code back on the thread pool, never on an engine thread.
/// </summary>
public sealed class SynchronousContinuationProviderTests(SynchronousContinuationsTrio trio) : IClassFixture<SynchronousContinuationsTrio>
{
    [Fact]
    public async Task Membership_table_calls_return_on_the_thread_pool_and_work()
    {
        var table = trio.MembershipTable(0, "c-" + Guid.NewGuid().ToString("N"));
        var threads = await Task.Run(async () =>
        {
            var seen = new List<(bool Pool, string? Name)>();
            for (var i = 0; i < 5; i++)
            {
                var data = await table.ReadAll().ConfigureAwait(false);
                seen.Add((Thread.CurrentThread.IsThreadPoolThread, Thread.CurrentThread.Name));
                Assert.Equal(0, data.Version.Version);
            }

            return seen;
        });

        Assert.All(threads, t => Assert.True(t.Pool && !(t.Name ?? string.Empty).StartsWith("paxos", StringComparison.OrdinalIgnoreCase), $"continued on {t.Name}"));
    }
}
