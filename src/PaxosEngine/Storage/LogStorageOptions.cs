using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>Options of <see cref="FileLogStorage"/>.</summary>
public sealed record LogStorageOptions
{
    /// <summary>PhxPaxos's default data file size (<c>LOG_FILE_MAX_SIZE</c>), 100 MiB.</summary>
    public const int DefaultDataFileSize = 104857600;

    /// <summary>The folder holding <c>g0 .. g&lt;GroupCount-1&gt;</c>; created when missing.</summary>
    public required string RootPath { get; init; }

    /// <summary>Number of Paxos groups; at least 1.</summary>
    public required int GroupCount { get; init; }

    /// <summary>
    /// Size in bytes every data file (<c>vfile/&lt;n&gt;.f</c>) is preallocated to; a record that does not fit
    /// in the rest of the current file starts the next one. Default 104857600 (100 MiB) as in PhxPaxos.
    /// Must leave room for the largest record (value size + 12 bytes).
    /// </summary>
    public int DataFileSize { get; init; } = DefaultDataFileSize;

    /// <summary>
    /// Writer threads; groups are spread over them, and each group's writes stay on one thread, in order. 0 (the
    /// default) picks: 1 when <see cref="FlushFilesTogether"/> is in effect or with <see cref="SharedLog"/> (a thread's
    /// batch then makes every group's records durable with one flush of the disk, and the fewer threads, the more
    /// records per flush), otherwise 8, so that different groups' fsyncs overlap. Capped at the group count.
    /// </summary>
    public int WriterThreads { get; init; }

    /// <summary>
    /// Whether one batch of the log writer makes the records of several groups durable with one flush of the disk
    /// (Linux): each data file is written ahead with zeros (1 MiB at a time, fsynced) so that records overwrite
    /// allocated blocks in place; the batch then writes back every group's records (<c>sync_file_range</c>) and one
    /// <c>fdatasync</c> per device flushes the disk's cache for all of them. The files stay PhxPaxos's, byte for byte
    /// (the zeros are what the sparse file read as). Default true; false fsyncs every group's file on its own, as
    /// PhxPaxos does. Ignored with <see cref="SharedLog"/>, which has one file to flush.
    /// </summary>
    public bool FlushFilesTogether { get; init; } = true;

    /// <summary>
    /// Whether the groups share one write-ahead log (<c>sharedlog</c> in <see cref="RootPath"/>): a batch of
    /// records, whatever groups they belong to, is made durable with one <c>fdatasync</c> of that file, and the
    /// groups' data files (still PhxPaxos's format) are fsynced only at checkpoints (every 64 MiB of shared log, at
    /// a data file rollover, at a clear and when the storage closes). Recovery cuts each group's data files back to
    /// the last checkpoint and writes the shared log's records into them again. Uses one writer thread
    /// (<see cref="WriterThreads"/> is ignored). Default false: every group fsyncs its own files, as PhxPaxos does.
    /// </summary>
    /// <remarks>
    /// Opening the folder without this option (or with PhxPaxos) after a crash is safe only through this storage,
    /// which replays and removes the shared log on open whatever this option says.
    /// </remarks>
    public bool SharedLog { get; init; }

    /// <summary>Bytes of shared-log records after which a checkpoint is taken. Default 64 MiB; tests lower it.</summary>
    internal long SharedLogCheckpointBytes { get; init; } = 64L * 1024 * 1024;

    /// <summary>Whether closing the storage takes a checkpoint (default); tests turn it off to model a crash.</summary>
    internal bool SharedLogCheckpointOnClose { get; init; } = true;

    /// <summary>
    /// How long after a roll-over a data file that was left without an fsync (its records were all written without
    /// one) is fsynced in the background. Default 30 s, the kernel's default age of dirty pages it writes back, so the
    /// fsync finds little to write. Tests lower it.
    /// </summary>
    internal TimeSpan UnsyncedFileSyncAge { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Whether closing the storage fsyncs the data files left without one and records written to the current files
    /// without one (default); tests turn it off to model a crash.
    /// </summary>
    internal bool SyncUnsyncedFilesOnClose { get; init; } = true;

    /// <summary>
    /// Longest time the index row of a durable record is held back so that many rows share one SQLite
    /// transaction (a put completes when its record is fsynced, not when it is indexed). A crash loses
    /// nothing: recovery indexes the records after the last index commit from the data files. Default 50 ms.
    /// </summary>
    public TimeSpan IndexFlushInterval { get; init; } = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// Where the storage logs; defaults to none. The storage logs once, at Critical level, when a write
    /// or fsync fails and it stops accepting writes, and at Warning level when it rebuilds a damaged index.
    /// </summary>
    public ILogger Logger { get; init; } = NullLogger.Instance;

    /// <summary>The file operations that can fail on a full or failing disk; the OS calls unless a test injects faults.</summary>
    internal LogFileOperations FileOperations { get; init; } = LogFileOperations.Os;
}
