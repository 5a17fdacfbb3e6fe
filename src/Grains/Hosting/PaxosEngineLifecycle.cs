
namespace Orleans.Paxos.Grains.Hosting;

/// <summary>
/// Starts the silo's Paxos node before grains can activate (stage <see cref="ServiceLifecycleStage.ApplicationServices"/>)
/// and stops it after they have deactivated (the same stage on the way down).
/// </summary>
public sealed class PaxosEngineLifecycle(PaxosEngineHost host) : ILifecycleParticipant<ISiloLifecycle>
{
    /// <inheritdoc />
    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe<PaxosEngineLifecycle>(
            ServiceLifecycleStage.ApplicationServices,
            _ =>
            {
                // Opening the logs and replaying state machines is blocking work: keep it off the caller.
                return Task.Run(host.Start);
            },
            _ => host.StopAsync());
}
