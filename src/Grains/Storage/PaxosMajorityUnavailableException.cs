namespace Orleans.Paxos.Grains.Storage;

/// <summary>
/// An Orleans table operation (membership, grain state, reminders) could not go through the Paxos log
/// because no majority of the group's nodes answered in time: the majority is missing or unreachable.
/// Nothing is wrong with the request; it succeeds again once a majority is back.
/// </summary>
[GenerateSerializer, Alias("paxos.PaxosMajorityUnavailableException")]
public sealed class PaxosMajorityUnavailableException : OrleansException
{
    /// <summary>Creates the exception.</summary>
    public PaxosMajorityUnavailableException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with its cause.</summary>
    public PaxosMajorityUnavailableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception (serialization).</summary>
    public PaxosMajorityUnavailableException()
    {
    }
}

/// <summary>An Orleans table operation failed in the Paxos engine for another reason than a missing majority.</summary>
[GenerateSerializer, Alias("paxos.PaxosTableException")]
public sealed class PaxosTableException : OrleansException
{
    /// <summary>Creates the exception.</summary>
    public PaxosTableException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with its cause.</summary>
    public PaxosTableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception (serialization).</summary>
    public PaxosTableException()
    {
    }
}
