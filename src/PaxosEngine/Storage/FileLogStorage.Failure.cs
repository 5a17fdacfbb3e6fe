using System.Diagnostics.Metrics;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Telemetry;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>
/// Fail-stop. The storage is one unit for every group of the node: the groups share the disk, the
/// writer threads and the SQLite library, so a full disk or an I/O error seen by one group's write is
/// taken as the state of all of them. The first failure stops the whole storage, once: it is logged at
/// Critical level, counted in <c>paxos.storage.failures</c> and shown by the <c>paxos.storage.failed</c>
/// gauge; the puts of the failed batch and every later put fail with a <see cref="LogStorageException"/>.
/// </summary>
public sealed partial class FileLogStorage
{
    private static readonly Counter<long> Failures = PaxosMetrics.Meter.CreateCounter<long>(
        "paxos.storage.failures", "{failure}", "Times a log storage stopped because a write, fsync, preallocation, meta or index write failed, by group, operation and error.");

    private readonly ILogger _logger;

    /// <summary>Records the first failure, logs and counts it; returns the failure every waiting put gets.</summary>
    private LogStorageException Fail(LogStorageException failure)
    {
        if (Interlocked.CompareExchange(ref _failure, failure, null) is not null)
        {
            // Another writer thread stopped the storage first; that failure was reported.
            return failure;
        }

        var operation = failure.Operation?.ToString().ToLowerInvariant() ?? "writer";
        var error = ErrorName(failure.InnerException);
        Failures.Add(
            1,
            new(PaxosMetrics.GroupTag, failure.GroupIndex >= 0 ? EngineInstruments.GroupTagValue(failure.GroupIndex) : "none"),
            new("operation", operation),
            new("error", error));
        LogStorageStopped(failure.GroupIndex, operation, failure.File ?? "(unknown file)", error, failure.Message, failure);
        return failure;
    }

    /// <summary>
    /// A short name of the OS or SQLite error: <c>ENOSPC</c>, <c>EIO</c>, <c>EDQUOT</c>, <c>EROFS</c>,
    /// <c>SQLITE_FULL</c>, <c>SQLITE_IOERR</c>, <c>errno N</c>, or <c>other</c>.
    /// </summary>
    internal static string ErrorName(Exception? error) => error switch
    {
        SqliteException { SqliteErrorCode: 13 } => "SQLITE_FULL",
        SqliteException { SqliteErrorCode: 10 } => "SQLITE_IOERR",
        SqliteException { SqliteErrorCode: 11 } => "SQLITE_CORRUPT",
        SqliteException e => "SQLITE " + e.SqliteErrorCode.ToString(System.Globalization.CultureInfo.InvariantCulture),

        // On Unix an IOException from a failed system call carries the errno as its HResult.
        IOException e when !OperatingSystem.IsWindows() => e.HResult switch
        {
            28 => "ENOSPC",
            5 => "EIO",
            122 => "EDQUOT",
            30 => "EROFS",
            > 0 and < 4096 => "errno " + e.HResult.ToString(System.Globalization.CultureInfo.InvariantCulture),
            _ => "other",
        },
        _ => "other",
    };

    [LoggerMessage(Level = LogLevel.Critical, Message = "Log storage for group {Group} stopped: {Operation} failed on {File} ({Error}). {Detail} No write of any group on this node is acknowledged from now on and each group stops at its next write. Free space or replace the disk, then restart the node; it catches up from its peers.")]
    private partial void LogStorageStopped(int group, string operation, string file, string error, string detail, Exception cause);
}
