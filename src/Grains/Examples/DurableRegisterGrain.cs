namespace Orleans.Paxos.Grains.Examples;

/// <summary><see cref="IDurableRegisterGrain"/> on the default grain storage.</summary>
public sealed class DurableRegisterGrain(
    [PersistentState("register")] IPersistentState<RegisterState> state,
    ILocalSiloDetails silo) : Grain, IDurableRegisterGrain
{
    /// <inheritdoc />
    public async Task<RegisterState> WriteAsync(long value, CancellationToken cancellationToken = default)
    {
        state.State.Value = value;
        state.State.Writes++;
        state.State.Silo = silo.SiloAddress.Endpoint.ToString();
        try
        {
            await state.WriteStateAsync(cancellationToken);
        }
        catch
        {
            // The write may or may not have happened (e.g. no majority): reload so that the next call starts from storage.
            DeactivateOnIdle();
            throw;
        }

        return state.State;
    }

    /// <inheritdoc />
    public async Task<RegisterState> ReadAsync(CancellationToken cancellationToken = default)
    {
        await state.ReadStateAsync(cancellationToken);
        return state.State;
    }
}
