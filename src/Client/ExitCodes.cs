namespace Orleans.Paxos.Client;

/// <summary>The client's exit codes (stable: scripts depend on them).</summary>
public static class ExitCodes
{
    /// <summary>The command succeeded.</summary>
    public const int Ok = 0;

    /// <summary>The cluster answered but the operation failed (not chosen, not found, version conflict, ...).</summary>
    public const int OperationFailed = 1;

    /// <summary>The command line is wrong.</summary>
    public const int UsageError = 2;

    /// <summary>No gateway of the cluster could be reached.</summary>
    public const int ClusterUnreachable = 3;

    /// <summary>The exit code of a kind of failure.</summary>
    internal static int For(ErrorKind kind) => kind switch
    {
        ErrorKind.Usage => UsageError,
        ErrorKind.Unreachable => ClusterUnreachable,
        _ => OperationFailed,
    };
}
