using System.Collections.Concurrent;
using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Engine.Tests.Storage;

/// <summary>The runner the log writer fsyncs several groups' files with, at the same time.</summary>
public sealed class ParallelFsyncsTests
{
    [Fact]
    public void Every_item_runs_once_per_round_on_several_threads_at_once()
    {
        using var runner = new ParallelFsyncs<string>("test");
        for (var round = 0; round < 50; round++)
        {
            var items = Enumerable.Range(0, 2 + (round % 9)).Select(i => $"{round}/{i}").ToList();
            var ran = new ConcurrentBag<string>();
            runner.Run(items, ran.Add);
            Assert.Equal(items.Order(), ran.Order());
        }

        // Four at once: each waits until all four have started, which one thread alone never reaches.
        var started = 0;
        var threads = new ConcurrentDictionary<int, bool>();
        runner.Run(["a", "b", "c", "d"], _ =>
        {
            threads[Environment.CurrentManagedThreadId] = true;
            Interlocked.Increment(ref started);
            Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref started) == 4, TimeSpan.FromSeconds(30)));
        });
        Assert.Equal(4, threads.Count);
    }

    [Fact]
    public void A_failure_is_thrown_to_the_caller_after_every_other_item_has_run()
    {
        using var runner = new ParallelFsyncs<int>("test");
        var ran = new ConcurrentBag<int>();
        var error = Assert.Throws<IOException>(() => runner.Run([1, 2, 3, 4, 5], i =>
        {
            ran.Add(i);
            if (i == 3)
            {
                throw new IOException("fsync failed: 3");
            }
        }));
        Assert.Equal("fsync failed: 3", error.Message);
        Assert.Equal([1, 2, 3, 4, 5], ran.Order());

        // The runner goes on working after a failure.
        ran.Clear();
        runner.Run([6, 7], ran.Add);
        Assert.Equal([6, 7], ran.Order());
    }

    [Fact]
    public void A_single_item_runs_on_the_callers_thread_and_a_disposed_runner_refuses_more()
    {
        var runner = new ParallelFsyncs<int>("test");
        var thread = -1;
        runner.Run([1], _ => thread = Environment.CurrentManagedThreadId);
        Assert.Equal(Environment.CurrentManagedThreadId, thread);

        runner.Run([1, 2], _ => { });
        runner.Dispose();
        Assert.Throws<ObjectDisposedException>(() => runner.Run([1, 2], _ => { }));
    }
}
