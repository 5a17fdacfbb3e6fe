namespace Orleans.Paxos.Grains.Examples;

/// <summary>
/// A register whose value is grain state in the cluster's default grain storage (on Paxos in the silo program):
/// the end-to-end example of grain persistence, used by the failover tests and the benchmark.
/// </summary>
[Alias("paxos.IDurableRegisterGrain")]
public interface IDurableRegisterGrain : IGrainWithStringKey
{
    /// <summary>Stores <paramref name="value"/> (and counts the write); returns once the state is durable.</summary>
    [Alias("Write")]
    Task<RegisterState> WriteAsync(long value, CancellationToken cancellationToken = default);

    /// <summary>The stored state, read from storage (not from the activation's copy).</summary>
    [Alias("Read")]
    Task<RegisterState> ReadAsync(CancellationToken cancellationToken = default);
}

/// <summary>The state of an <see cref="IDurableRegisterGrain"/>.</summary>
[GenerateSerializer, Alias("paxos.RegisterState")]
public sealed class RegisterState
{
    /// <summary>The last value written.</summary>
    [Id(0)]
    public long Value { get; set; }

    /// <summary>How many writes were stored.</summary>
    [Id(1)]
    public long Writes { get; set; }

    /// <summary>The silo (ip:port) that served the call.</summary>
    [Id(2)]
    public string Silo { get; set; } = string.Empty;
}
