using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Engine.Tests.Storage;

/// <summary>
/// Behaviour every <see cref="ILogStorage"/> must show, written once against the interface. A derived
/// class supplies <see cref="OpenStorage"/>, which must reopen the same durable state on every call
/// within one test.
/// </summary>
public abstract class LogStorageConformanceTests : IDisposable
{
    private readonly List<ILogStorage> _opened = [];

    /// <summary>Opens (or reopens after a dispose) the storage under test with this many groups.</summary>
    protected abstract ILogStorage CreateStorage(int groupCount);

    public virtual void Dispose()
    {
        foreach (var storage in _opened)
        {
            storage.Dispose();
        }

        GC.SuppressFinalize(this);
    }

    protected ILogStorage OpenStorage(int groupCount = 2)
    {
        var storage = CreateStorage(groupCount);
        _opened.Add(storage);
        return storage;
    }

    [Fact]
    public async Task PutThenGetRoundTrips()
    {
        var storage = OpenStorage();
        var record = StorageTestData.EchoAccept(7, "hello", 42);
        await storage.PutAsync(1, 7, record, sync: true);

        Assert.Equal(record, storage.Get(1, 7));
        Assert.Null(storage.Get(0, 7));
        Assert.Null(storage.Get(1, 8));
    }

    [Fact]
    public async Task PutCopiesTheCallersMemoryAndPutOwnedKeepsTheHandedOverArray()
    {
        var storage = OpenStorage();
        var lent = StorageTestData.EchoAccept(4, "lent", 1);
        var expected = lent.ToArray();
        var lentDone = new CompletedPut();
        storage.Put(0, 4, lent, sync: true, lentDone);
        Array.Clear(lent); // the caller reuses its buffer at once: the storage must have copied it
        await lentDone.Done;
        var owned = StorageTestData.EchoAccept(5, "owned", 2);
        var ownedDone = new CompletedPut();
        storage.PutOwned(0, 5, owned, sync: true, ownedDone);
        await ownedDone.Done;

        Assert.Equal(expected, storage.Get(0, 4));
        Assert.Equal(owned, storage.Get(0, 5));
        storage.Dispose();
        storage = OpenStorage();
        Assert.Equal(expected, storage.Get(0, 4));
        Assert.Equal(owned, storage.Get(0, 5));
    }

    [Fact]
    public async Task PutRentedKeepsExactlyTheGivenLengthOfTheHandedOverArray()
    {
        var storage = OpenStorage();
        var record = StorageTestData.Sized(6, 3000, 6);
        var rented = RecordPool.Rent(record.Length);
        Assert.True(rented.Length > record.Length, "the pool hands out a longer array, which this test relies on");
        rented.AsSpan().Fill(0xEE);
        record.CopyTo(rented, 0);
        var done = new CompletedPut();
        storage.PutRented(1, 6, rented, record.Length, sync: true, done);
        await done.Done;

        Assert.Equal(record, storage.Get(1, 6));
        storage.Dispose();
        storage = OpenStorage();
        Assert.Equal(record, storage.Get(1, 6));
    }

    [Fact]
    public async Task LastRecordOfAnInstanceWins()
    {
        var storage = OpenStorage();
        var promise = StorageTestData.Promise(3);
        var accept = StorageTestData.EchoAccept(3, "value", 9);
        await storage.PutAsync(0, 3, promise, sync: true);
        Assert.Equal(promise, storage.Get(0, 3));
        await storage.PutAsync(0, 3, accept, sync: true);

        Assert.Equal(accept, storage.Get(0, 3));
    }

    [Fact]
    public async Task MaxInstanceIdIsNullWhenEmptyAndFollowsPuts()
    {
        var storage = OpenStorage();
        Assert.Null(storage.GetMaxInstanceId(0));
        for (ulong i = 0; i < 5; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Promise(i), sync: i % 2 == 0);
        }

        Assert.Equal(4UL, storage.GetMaxInstanceId(0));
        Assert.Null(storage.GetMaxInstanceId(1));
    }

    [Fact]
    public async Task RecordsAndMaxSurviveReopen()
    {
        var storage = OpenStorage();
        for (ulong i = 0; i < 20; i++)
        {
            await storage.PutAsync((int)(i % 2), i, StorageTestData.Sized(i, (int)i * 10, (int)i), sync: i % 3 == 0);
        }

        storage.Dispose();
        storage = OpenStorage();
        for (ulong i = 0; i < 20; i++)
        {
            Assert.Equal(StorageTestData.Sized(i, (int)i * 10, (int)i), storage.Get((int)(i % 2), i));
        }

        Assert.Equal(18UL, storage.GetMaxInstanceId(0));
        Assert.Equal(19UL, storage.GetMaxInstanceId(1));
    }

    [Fact]
    public async Task DeleteBeforeForgetsLowerInstancesOnly()
    {
        var storage = OpenStorage();
        for (ulong i = 0; i < 10; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Promise(i), sync: false);
        }

        storage.DeleteBefore(0, 6);
        for (ulong i = 0; i < 10; i++)
        {
            Assert.Equal(i >= 6, storage.Get(0, i) is not null);
        }

        Assert.Equal(9UL, storage.GetMaxInstanceId(0));
        storage.Dispose();
        storage = OpenStorage();
        Assert.Null(storage.Get(0, 5));
        Assert.Equal(StorageTestData.Promise(6), storage.Get(0, 6));
    }

    [Fact]
    public void VariablesAndMinChosenRoundTripAndSurviveReopen()
    {
        var storage = OpenStorage();
        Assert.Null(storage.GetSystemVariables(0));
        Assert.Null(storage.GetMasterVariables(0));
        Assert.Equal(0UL, storage.GetMinChosenInstanceId(0));

        storage.SetSystemVariables(0, [1, 2, 3]);
        storage.SetMasterVariables(0, [4, 5]);
        storage.SetMinChosenInstanceId(0, 1234);
        storage.SetSystemVariables(1, [9]);
        storage.Dispose();

        storage = OpenStorage();
        Assert.Equal([1, 2, 3], storage.GetSystemVariables(0));
        Assert.Equal([4, 5], storage.GetMasterVariables(0));
        Assert.Equal(1234UL, storage.GetMinChosenInstanceId(0));
        Assert.Equal([9], storage.GetSystemVariables(1));
        Assert.Null(storage.GetMasterVariables(1));
        Assert.Equal(0UL, storage.GetMinChosenInstanceId(1));
    }

    [Fact]
    public async Task ClearAllLogDropsRecordsAndKeepsVariables()
    {
        var storage = OpenStorage();
        for (ulong i = 0; i < 5; i++)
        {
            await storage.PutAsync(0, i, StorageTestData.Promise(i), sync: true);
        }

        await storage.PutAsync(1, 0, StorageTestData.Promise(0), sync: true);
        storage.SetSystemVariables(0, [7]);
        storage.SetMasterVariables(0, [8]);
        storage.SetMinChosenInstanceId(0, 3);

        storage.ClearAllLog(0);
        Assert.Null(storage.GetMaxInstanceId(0));
        Assert.Null(storage.Get(0, 4));
        Assert.Equal([7], storage.GetSystemVariables(0));
        Assert.Equal([8], storage.GetMasterVariables(0));
        Assert.Equal(0UL, storage.GetMinChosenInstanceId(0));
        Assert.NotNull(storage.Get(1, 0));

        await storage.PutAsync(0, 100, StorageTestData.Promise(100), sync: true);
        storage.Dispose();
        storage = OpenStorage();
        Assert.Equal(100UL, storage.GetMaxInstanceId(0));
        Assert.Null(storage.Get(0, 4));
        Assert.Equal([7], storage.GetSystemVariables(0));
    }

    [Fact]
    public async Task ConcurrentSyncPutsAllCompleteAndReadBack()
    {
        var storage = OpenStorage(groupCount: 3);
        const int Writers = 32;
        const int PutsPerWriter = 20;

        // Each writer owns instance ids writer, writer + Writers, ...: ids in a group grow over time
        // only per writer, so the writers of one group are kept apart by group and by rounds.
        var tasks = new List<Task>();
        for (var group = 0; group < 3; group++)
        {
            var g = group;
            tasks.Add(Task.Run(async () =>
            {
                for (var round = 0; round < PutsPerWriter; round++)
                {
                    var puts = new Task[Writers];
                    for (var w = 0; w < Writers; w++)
                    {
                        var id = (ulong)(round * Writers + w);
                        puts[w] = storage.PutAsync(g, id, StorageTestData.Sized(id, 40 + w, g * 100000 + (int)id), sync: true);
                    }

                    await Task.WhenAll(puts);
                }
            }));
        }

        await Task.WhenAll(tasks);
        storage.Dispose();
        storage = OpenStorage(groupCount: 3);
        for (var g = 0; g < 3; g++)
        {
            for (var id = 0; id < Writers * PutsPerWriter; id++)
            {
                Assert.Equal(StorageTestData.Sized((ulong)id, 40 + (id % Writers), g * 100000 + id), storage.Get(g, (ulong)id));
            }
        }
    }

    [Fact]
    public void GroupIndexOutOfRangeIsRejected()
    {
        var storage = OpenStorage();
        Assert.Throws<ArgumentOutOfRangeException>(() => storage.Get(2, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => storage.GetMaxInstanceId(-1));
    }
}
