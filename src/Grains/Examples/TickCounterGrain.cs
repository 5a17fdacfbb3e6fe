namespace Orleans.Paxos.Grains.Examples;

/// <summary><see cref="ITickCounterGrain"/>: a reminder whose ticks are counted in the default grain storage.</summary>
public sealed class TickCounterGrain(
    [PersistentState("ticks")] IPersistentState<TickState> state,
    ILocalSiloDetails silo) : Grain, ITickCounterGrain, IRemindable
{
    private const string ReminderName = "tick";

    /// <inheritdoc />
    public async Task<string> StartAsync(TimeSpan period, CancellationToken cancellationToken = default)
    {
        await this.RegisterOrUpdateReminder(ReminderName, period, period);
        return silo.SiloAddress.Endpoint.ToString();
    }

    /// <inheritdoc />
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        var reminder = await this.GetReminder(ReminderName);
        if (reminder is not null)
        {
            await this.UnregisterReminder(reminder);
        }
    }

    /// <inheritdoc />
    public async Task<TickState> GetTicksAsync(CancellationToken cancellationToken = default)
    {
        await state.ReadStateAsync(cancellationToken);
        return state.State;
    }

    /// <inheritdoc />
    public async Task ReceiveReminder(string reminderName, TickStatus status)
    {
        state.State.Count++;
        state.State.LastTick = DateTime.UtcNow;
        state.State.LastSilo = silo.SiloAddress.Endpoint.ToString();
        try
        {
            await state.WriteStateAsync();
        }
        catch
        {
            DeactivateOnIdle();
            throw;
        }
    }
}
