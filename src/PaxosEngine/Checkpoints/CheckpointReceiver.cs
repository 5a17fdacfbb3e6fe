using System.Globalization;
using Orleans.Paxos.Engine.Hashing;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Checkpoints;

/// <summary>What <see cref="CheckpointReceiver.Receive"/> made of a message.</summary>
internal enum ReceiveOutcome
{
    /// <summary>A BEGIN started a new transfer.</summary>
    Begun,

    /// <summary>A chunk was written.</summary>
    Written,

    /// <summary>A repeat of the last message of the current transfer; acknowledge it again.</summary>
    Duplicate,

    /// <summary>The END of the current transfer: every file is complete.</summary>
    Ended,

    /// <summary>Not part of the current transfer (another sender or uuid): refuse it, keep the transfer.</summary>
    Refused,

    /// <summary>The current transfer cannot continue (gap, bad checksum, bad path, write error).</summary>
    Broken,
}

/// <summary>
/// The receiving side of a checkpoint transfer (PhxPaxos <c>CheckpointReceiver</c>): writes the chunks of
/// one (sender, uuid) transfer to <c>&lt;group dir&gt;/cp_tmp_&lt;smid&gt;/</c>, in order, each verified by its
/// checksum. Owned by the group's loop thread; no locks.
/// </summary>
internal sealed class CheckpointReceiver
{
    /// <summary>Prefix of the temporary folders, one per state machine.</summary>
    public const string TempPrefix = "cp_tmp_";

    private readonly string _groupDirectory;
    private readonly Dictionary<int, List<string>> _files = [];

    public CheckpointReceiver(string groupDirectory) => _groupDirectory = groupDirectory;

    /// <summary>Whether a transfer is under way (a BEGIN was taken).</summary>
    public bool IsActive { get; private set; }

    /// <summary>The node sending the current transfer.</summary>
    public ulong Sender { get; private set; }

    /// <summary>The uuid of the current transfer.</summary>
    public ulong Uuid { get; private set; }

    /// <summary>The last sequence number taken.</summary>
    public ulong Sequence { get; private set; }

    /// <summary>The sender's checkpoint instance id (from BEGIN).</summary>
    public ulong CheckpointInstanceId { get; private set; }

    /// <summary>Bytes written in the current transfer.</summary>
    public long Bytes { get; private set; }

    /// <summary>Files received per state machine id, relative to <see cref="TempDirectory"/>.</summary>
    public IReadOnlyDictionary<int, List<string>> Files => _files;

    /// <summary>The temporary folder of one state machine.</summary>
    public string TempDirectory(int smId) =>
        Path.Combine(_groupDirectory, TempPrefix + smId.ToString(CultureInfo.InvariantCulture));

    /// <summary>Takes one SendFile message; <paramref name="problem"/> says why when refused or broken.</summary>
    public ReceiveOutcome Receive(CheckpointMsg message, out string? problem)
    {
        problem = null;
        var same = IsActive && message.NodeID == Sender && message.UUID == Uuid;
        if (message.Flag == (int)CheckpointSendFileFlag.Begin)
        {
            if (same)
            {
                return ReceiveOutcome.Duplicate;
            }

            if (IsActive)
            {
                problem = $"a transfer from node {new NodeId(Sender)} (uuid {Uuid}) is under way";
                return ReceiveOutcome.Refused;
            }

            Reset();
            IsActive = true;
            Sender = message.NodeID;
            Uuid = message.UUID;
            Sequence = message.Sequence;
            CheckpointInstanceId = message.CheckpointInstanceID;
            return ReceiveOutcome.Begun;
        }

        if (!same)
        {
            problem = IsActive
                ? $"a transfer from node {new NodeId(Sender)} (uuid {Uuid}) is under way"
                : "no transfer was begun";
            return ReceiveOutcome.Refused;
        }

        if (message.Sequence == Sequence)
        {
            return ReceiveOutcome.Duplicate;
        }

        if (message.Sequence != Sequence + 1)
        {
            problem = $"sequence {message.Sequence} arrived after {Sequence}: chunks were lost";
            return ReceiveOutcome.Broken;
        }

        if (message.Flag == (int)CheckpointSendFileFlag.End)
        {
            Sequence = message.Sequence;
            return ReceiveOutcome.Ended;
        }

        if (message.Flag != (int)CheckpointSendFileFlag.Ing)
        {
            problem = $"unknown flag {message.Flag}";
            return ReceiveOutcome.Broken;
        }

        problem = WriteChunk(message);
        if (problem is not null)
        {
            return ReceiveOutcome.Broken;
        }

        Sequence = message.Sequence;
        return ReceiveOutcome.Written;
    }

    /// <summary>Forgets the transfer and deletes every temporary folder of the group.</summary>
    public void Reset()
    {
        IsActive = false;
        Sender = 0;
        Uuid = 0;
        Sequence = 0;
        CheckpointInstanceId = 0;
        Bytes = 0;
        _files.Clear();
        if (!Directory.Exists(_groupDirectory))
        {
            return;
        }

        foreach (var dir in Directory.EnumerateDirectories(_groupDirectory, TempPrefix + "*"))
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private string? WriteChunk(CheckpointMsg message)
    {
        var buffer = message.Buffer.Span;

        // Unlike PhxPaxos, the chunk checksum is verified: a damaged checkpoint must never be installed.
        var checksum = SkipCrc32.Compute(0, buffer, SkipCrc32.ValueSkip);
        if (checksum != message.Checksum)
        {
            return $"chunk {message.Sequence} of '{message.FilePath}' (state machine {message.SMID}, offset {message.Offset}) has checksum {checksum}, the sender computed {message.Checksum}";
        }

        var root = Path.GetFullPath(TempDirectory(message.SMID));
        if (string.IsNullOrEmpty(message.FilePath) || Path.IsPathRooted(message.FilePath))
        {
            return $"file path '{message.FilePath}' is not relative";
        }

        var path = Path.GetFullPath(Path.Combine(root, message.FilePath));
        if (!path.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal))
        {
            return $"file path '{message.FilePath}' leaves the checkpoint folder";
        }

        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            using var file = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.None);
            if ((ulong)file.Length != message.Offset)
            {
                return $"'{path}' holds {file.Length} bytes but the chunk starts at offset {message.Offset}";
            }

            file.Write(buffer);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return $"writing '{path}' failed: {ex.Message}";
        }

        if (!_files.TryGetValue(message.SMID, out var list))
        {
            list = [];
            _files[message.SMID] = list;
        }

        if (!list.Contains(message.FilePath))
        {
            list.Add(message.FilePath);
        }

        Bytes += buffer.Length;
        return null;
    }
}
