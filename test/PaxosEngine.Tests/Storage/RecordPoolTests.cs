using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Engine.Tests.Storage;

public sealed class RecordPoolTests
{
    [Theory]
    [InlineData(100)]
    [InlineData(5_000)]
    [InlineData(100 * 1024)]
    public void The_records_a_full_index_flush_gives_back_are_all_rented_again(int recordLength)
    {
        // As many records as wait for one index flush at most, all out at once, then all back: the next round gets
        // the same arrays instead of new ones (the framework's shared pool keeps only a few per size and core).
        // A pool of its own, configured like the engine's: other tests rent from the engine's at the same time.
        var pool = RecordPool.Create();
        var count = recordLength >= 100 * 1024 ? 64 : RecordPool.ArraysPerSize;
        var first = Enumerable.Range(0, count).Select(_ => pool.Rent(recordLength)).ToList();
        Assert.All(first, a => Assert.True(a.Length >= recordLength));
        foreach (var array in first)
        {
            pool.Return(array);
        }

        var second = Enumerable.Range(0, count).Select(_ => pool.Rent(recordLength)).ToList();
        var reused = second.Count(a => first.Any(f => ReferenceEquals(f, a)));

        Assert.Equal(count, reused);
    }

    [Fact]
    public void Records_larger_than_the_pool_keeps_go_to_the_shared_pool_and_come_back_from_it()
    {
        // A batch of large values: from the framework's shared pool, which keeps a few arrays of every size.
        var large = RecordPool.Rent(RecordPool.MaxPooledLength + 1);
        Assert.True(large.Length > RecordPool.MaxPooledLength);
        new RecordBytes(large, large.Length, Rented: true).Release();
        RecordPool.Return(RecordPool.Rent(RecordPool.MaxPooledLength * 2));
        new RecordBytes(new byte[1000], 1000, Rented: true).Release();
    }
}
