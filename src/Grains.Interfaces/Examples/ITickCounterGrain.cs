namespace Orleans.Paxos.Grains.Examples;

/// <summary>
/// Counts the ticks of its Orleans reminder in its grain state: the end-to-end example of reminders (the reminder
/// table and the state both on Paxos in the silo program).
/// </summary>
[Alias("paxos.ITickCounterGrain")]
public interface ITickCounterGrain : IGrainWithStringKey
{
    /// <summary>Registers (or updates) the reminder with this period; returns the silo (ip:port) serving the call.</summary>
    [Alias("Start")]
    Task<string> StartAsync(TimeSpan period, CancellationToken cancellationToken = default);

    /// <summary>Unregisters the reminder.</summary>
    [Alias("Stop")]
    Task StopAsync(CancellationToken cancellationToken = default);

    /// <summary>The ticks counted so far, read from storage.</summary>
    [Alias("GetTicks")]
    Task<TickState> GetTicksAsync(CancellationToken cancellationToken = default);
}

/// <summary>The state of an <see cref="ITickCounterGrain"/>.</summary>
[GenerateSerializer, Alias("paxos.TickState")]
public sealed class TickState
{
    /// <summary>Ticks counted.</summary>
    [Id(0)]
    public int Count { get; set; }

    /// <summary>When the last tick ran (UTC).</summary>
    [Id(1)]
    public DateTime LastTick { get; set; }

    /// <summary>The silo (ip:port) that ran the last tick.</summary>
    [Id(2)]
    public string LastSilo { get; set; } = string.Empty;
}
