
namespace Orleans.Paxos.Grains.Hosting;

/// <summary>
/// Starts the silo's Paxos node early (stage <see cref="Stage"/>, before <see cref="ServiceLifecycleStage.RuntimeInitialize"/>),
/// because the Paxos-backed Orleans providers need it: Orleans membership reads its table at
/// <see cref="ServiceLifecycleStage.RuntimeGrainServices"/>, before any grain exists. On the way down it stops at the
/// same stage, after grains have deactivated and the silo has written its last membership row; with a
/// <see cref="PaxosNodeStopBarrier"/> registered, only once every silo sharing it got that far.
/// </summary>
public sealed class PaxosEngineLifecycle(PaxosEngineHost host, PaxosNodeStopBarrier? barrier = null) : ILifecycleParticipant<ISiloLifecycle>
{
    /// <summary>The lifecycle stage the node starts and stops at.</summary>
    public const int Stage = ServiceLifecycleStage.RuntimeInitialize - 1;

    /// <inheritdoc />
    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe<PaxosEngineLifecycle>(
            Stage,
            _ =>
            {
                // Opening the logs and replaying state machines is blocking work: keep it off the caller.
                return Task.Run(host.Start);
            },
            async ct =>
            {
                if (barrier is not null)
                {
                    await barrier.ArriveAndWaitAsync(ct);
                }

                await host.StopAsync();
            });
}
