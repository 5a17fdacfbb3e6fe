using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Paxos.Grains.Storage;
using Orleans.Serialization.Serializers;
using Orleans.Storage;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>
/// The cases of Orleans' grain storage tests (write/read, ETag conflicts, duplicate first writes, clear and
/// delete) against <see cref="PaxosGrainStorage"/> on a three-node Paxos cluster.
/// </summary>
public sealed class PaxosGrainStorageTests(PaxosTrio trio) : IClassFixture<PaxosTrio>
{
    private PaxosGrainStorage Storage(int node, bool deleteOnClear = true) => new(
        "store",
        new PaxosGrainStorageOptions { DeleteStateOnClear = deleteOnClear },
        trio.Access(node),
        new OrleansGrainStorageSerializer(trio.Services[node].GetRequiredService<Orleans.Serialization.Serializer>()),
        trio.Services[node].GetRequiredService<IActivatorProvider>(),
        Options.Create(new ClusterOptions { ServiceId = "svc", ClusterId = "c" }),
        NullLogger<PaxosGrainStorage>.Instance);

    private static GrainId NewGrain() => GrainId.Create("test", Guid.NewGuid().ToString("N"));

    [Fact]
    public async Task Write_then_read_through_another_node_returns_the_state_and_the_etag()
    {
        var grain = NewGrain();
        var state = new GrainState<TestState>(new TestState { Count = 7, Name = "seven" });
        await Storage(0).WriteStateAsync("s", grain, state);
        Assert.True(state.RecordExists);
        Assert.NotNull(state.ETag);

        var read = new GrainState<TestState>();
        await Storage(2).ReadStateAsync("s", grain, read);
        Assert.True(read.RecordExists);
        Assert.Equal(state.ETag, read.ETag);
        Assert.Equal(7, read.State!.Count);
        Assert.Equal("seven", read.State!.Name);
    }

    [Fact]
    public async Task Reading_a_missing_record_gives_a_new_state_and_no_etag()
    {
        var read = new GrainState<TestState>();
        await Storage(1).ReadStateAsync("s", NewGrain(), read);
        Assert.False(read.RecordExists);
        Assert.Null(read.ETag);
        Assert.NotNull(read.State);
        Assert.Equal(0, read.State!.Count);
    }

    [Fact]
    public async Task A_stale_etag_raises_InconsistentStateException_and_changes_nothing()
    {
        var grain = NewGrain();
        var first = new GrainState<TestState>(new TestState { Count = 1 });
        await Storage(0).WriteStateAsync("s", grain, first);
        var other = new GrainState<TestState>();
        await Storage(1).ReadStateAsync("s", grain, other);
        other.State!.Count = 2;
        await Storage(1).WriteStateAsync("s", grain, other);

        first.State!.Count = 99;
        var ex = await Assert.ThrowsAsync<InconsistentStateException>(() => Storage(0).WriteStateAsync("s", grain, first));
        Assert.Equal(other.ETag, ex.StoredEtag);
        var read = new GrainState<TestState>();
        await Storage(2).ReadStateAsync("s", grain, read);
        Assert.Equal(2, read.State!.Count);
    }

    [Fact]
    public async Task A_first_write_without_etag_fails_when_a_record_exists()
    {
        var grain = NewGrain();
        await Storage(0).WriteStateAsync("s", grain, new GrainState<TestState>(new TestState { Count = 1 }));
        await Assert.ThrowsAsync<InconsistentStateException>(() => Storage(1).WriteStateAsync("s", grain, new GrainState<TestState>(new TestState { Count = 2 })));
    }

    [Fact]
    public async Task Clear_deletes_the_record_and_a_new_first_write_succeeds()
    {
        var grain = NewGrain();
        var state = new GrainState<TestState>(new TestState { Count = 5 });
        var storage = Storage(0);
        await storage.WriteStateAsync("s", grain, state);
        await storage.ClearStateAsync("s", grain, state);
        Assert.False(state.RecordExists);
        Assert.Null(state.ETag);
        Assert.Equal(0, state.State!.Count);

        var read = new GrainState<TestState>();
        await Storage(1).ReadStateAsync("s", grain, read);
        Assert.False(read.RecordExists);
        Assert.Null(read.ETag);

        state.State!.Count = 6;
        await storage.WriteStateAsync("s", grain, state);
        await Storage(2).ReadStateAsync("s", grain, read);
        Assert.Equal(6, read.State!.Count);
    }

    [Fact]
    public async Task Clear_with_a_stale_etag_fails_and_clear_without_delete_keeps_a_version()
    {
        var grain = NewGrain();
        var state = new GrainState<TestState>(new TestState { Count = 1 });
        await Storage(0).WriteStateAsync("s", grain, state);
        var stale = new GrainState<TestState> { ETag = state.ETag };
        await Storage(0).WriteStateAsync("s", grain, state);
        await Assert.ThrowsAsync<InconsistentStateException>(() => Storage(1).ClearStateAsync("s", grain, stale));

        var keep = Storage(1, deleteOnClear: false);
        await keep.ClearStateAsync("s", grain, state);
        Assert.False(state.RecordExists);
        Assert.NotNull(state.ETag);
        var read = new GrainState<TestState>();
        await keep.ReadStateAsync("s", grain, read);
        Assert.False(read.RecordExists);
        Assert.Equal(state.ETag, read.ETag);
        read.State!.Count = 3;
        await keep.WriteStateAsync("s", grain, read);
        Assert.True(read.RecordExists);
    }

    [Fact]
    public async Task Concurrent_writers_with_one_etag_admit_exactly_one()
    {
        var grain = NewGrain();
        var seed = new GrainState<TestState>(new TestState());
        await Storage(0).WriteStateAsync("s", grain, seed);
        var outcomes = await Task.WhenAll(Enumerable.Range(0, 9).Select(async i =>
        {
            var s = new GrainState<TestState>(new TestState { Count = i }) { ETag = seed.ETag };
            try
            {
                await Storage(i % 3).WriteStateAsync("s", grain, s);
                return true;
            }
            catch (InconsistentStateException)
            {
                return false;
            }
        }));
        Assert.Single(outcomes, ok => ok);
    }
}

[GenerateSerializer]
public sealed class TestState
{
    [Id(0)]
    public int Count { get; set; }

    [Id(1)]
    public string? Name { get; set; }
}
