using Orleans.Paxos.Grains.Hosting;
using Orleans.Placement;
using Orleans.Runtime.MembershipService.SiloMetadata;
using Orleans.Runtime.Placement;

namespace Orleans.Paxos.Grains.Placement;

/// <summary>Places a grain keyed by a group index on the silo whose Paxos node is the group's master.</summary>
[GenerateSerializer, Immutable, SuppressReferenceTracking, Alias("paxos.PaxosMasterPlacement")]
public sealed class PaxosMasterPlacement : PlacementStrategy;

/// <summary>Selects <see cref="PaxosMasterPlacement"/> for a grain class (integer key = group index).</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class PaxosMasterPlacementAttribute() : PlacementAttribute(new PaxosMasterPlacement());

/// <summary>
/// Finds the silo whose node (silo metadata <see cref="PaxosSiloBuilderExtensions.NodeMetadataKey"/>) is
/// the group's master as this silo's node sees it; without a master (or without that silo) it keeps the
/// activation local, or picks a random compatible silo. Thread-safe.
/// </summary>
public sealed class PaxosMasterPlacementDirector(PaxosEngineHost host, ISiloMetadataCache metadata) : IPlacementDirector
{
    /// <inheritdoc />
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var silos = context.GetCompatibleSilos(target);
        var group = (int)target.GrainIdentity.GetIntegerKey();
        if (host.IsRunning && (uint)group < (uint)host.GroupCount)
        {
            var master = host.GetMaster(group).Master;
            if (!master.IsNull && FindSilo(silos, master.ToString()) is { } silo)
            {
                return Task.FromResult(silo);
            }
        }

        if (Array.IndexOf(silos, context.LocalSilo) >= 0)
        {
            return Task.FromResult(context.LocalSilo);
        }

        return Task.FromResult(silos[Random.Shared.Next(silos.Length)]);
    }

    /// <summary>The silo among <paramref name="silos"/> that publishes Paxos node <paramref name="node"/>, or null.</summary>
    public SiloAddress? FindSilo(SiloAddress[] silos, string node)
    {
        ArgumentNullException.ThrowIfNull(silos);
        foreach (var silo in silos)
        {
            if (metadata.GetSiloMetadata(silo).Metadata.TryGetValue(PaxosSiloBuilderExtensions.NodeMetadataKey, out var value)
                && string.Equals(value, node, StringComparison.Ordinal))
            {
                return silo;
            }
        }

        return null;
    }
}

/// <summary>Places a grain keyed by a silo address (<c>SiloAddress.ToParsableString()</c>) on that silo.</summary>
[GenerateSerializer, Immutable, SuppressReferenceTracking, Alias("paxos.PaxosSiloPlacement")]
public sealed class PaxosSiloPlacement : PlacementStrategy;

/// <summary>Selects <see cref="PaxosSiloPlacement"/> for a grain class (string key = silo address).</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class PaxosSiloPlacementAttribute() : PlacementAttribute(new PaxosSiloPlacement());

/// <summary>Places the grain on the silo named by its key; fails when that silo is not in the cluster.</summary>
public sealed class PaxosSiloPlacementDirector : IPlacementDirector
{
    /// <inheritdoc />
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var key = target.GrainIdentity.Key.ToString();
        var silos = context.GetCompatibleSilos(target);
        foreach (var silo in silos)
        {
            if (string.Equals(silo.ToParsableString(), key, StringComparison.Ordinal))
            {
                return Task.FromResult(silo);
            }
        }

        throw new OrleansException($"Silo {key} is not an active member of the cluster; its Paxos node cannot be asked.");
    }
}
