using System.Buffers.Binary;
using System.Diagnostics;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>
/// The data files of a group, other than its current one, that may hold writes no fsync covered yet, with where
/// each one's records end (<c>vfile/unsynced</c>). Not a PhxPaxos file; PhxPaxos ignores it.
/// </summary>
/// <remarks>
/// <para>
/// A group whose records are written without fsync moves to its next data file without fsyncing the one it leaves,
/// as PhxPaxos does (an fsync of 100 MiB stalls the group's writer for a few hundred milliseconds). Before
/// <c>meta</c> names the next file, the file left and its end are added here, durably. Recovery then knows which
/// files besides the last one a power loss may have torn and where each one must end: a file that ends early is cut
/// there and every later file is dropped, so the log never has a hole. Any other file is one that was fsynced
/// whole, and damage in it is reported, never cut.
/// </para>
/// <para>
/// An entry is removed only after its file was fsynced: when a synchronous record is about to be acknowledged
/// (everything before it must be durable too), a while after the roll-over (the kernel has written the pages back by
/// then, so the fsync is short), when the list is full, and when the storage is opened or closed.
/// </para>
/// <para>
/// Format: two 4 KiB slots written in turn, each <c>[uint32 magic][uint64 sequence][int32 count]</c> then
/// <c>count</c> times <c>[int32 file id][int64 end]</c> and a CRC-32 of everything before it. The valid slot with
/// the higher sequence holds the list; a torn write can spoil only the slot it was writing.
/// </para>
/// </remarks>
internal sealed class UnsyncedFiles
{
    /// <summary>The file's name in a group's <c>vfile</c> folder.</summary>
    public const string FileName = "unsynced";

    /// <summary>Files listed at most; a roll-over past it first fsyncs the oldest.</summary>
    public const int MaxEntries = 64;

    private const int SlotLength = 4096;
    private const uint Magic = 0x53555850; // "PXUS"
    private const int HeaderLength = 16;
    private const int EntryLength = 12;

    private readonly List<Entry> _entries = [];
    private readonly LogFileOperations _files;
    private long _sequence;
    private bool _created;

    public UnsyncedFiles(string path, LogFileOperations files)
    {
        Path = path;
        _files = files;
    }

    /// <summary>The file's path.</summary>
    public string Path { get; }

    /// <summary>Guards the list and the file; taken after the group's write lock when both are held.</summary>
    public Lock Gate { get; } = new();

    /// <summary>The listed files, oldest first. Under <see cref="Gate"/>.</summary>
    public IReadOnlyList<Entry> Entries => _entries;

    /// <summary>
    /// Reads the list from disk (empty when the file is missing, empty, or holds no valid slot) and keeps it as the
    /// current one.
    /// </summary>
    /// <remarks>
    /// Slots are written in turn, so once one is valid one stays valid; no valid slot means the first write of the file
    /// was torn, before anything it listed could matter (<c>meta</c> moves only after it). Read as empty, every file
    /// counts as fsynced, whose damage recovery reports rather than cuts: the safe side if both slots were damaged.
    /// </remarks>
    public void Load()
    {
        lock (Gate)
        {
            _entries.Clear();
            _sequence = 0;
            _created = false;
            if (!File.Exists(Path))
            {
                return;
            }

            var bytes = File.ReadAllBytes(Path);
            _created = bytes.Length >= 2 * SlotLength;
            (long Sequence, List<Entry> Entries)? best = null;
            for (var slot = 0; slot < 2; slot++)
            {
                if (TryParse(bytes.AsSpan(Math.Min(bytes.Length, slot * SlotLength), Math.Clamp(bytes.Length - (slot * SlotLength), 0, SlotLength))) is { } parsed
                    && (best is null || parsed.Sequence > best.Value.Sequence))
                {
                    best = parsed;
                }
            }

            if (best is { } found)
            {
                _sequence = found.Sequence;
                _entries.AddRange(found.Entries);
            }
        }
    }

    /// <summary>Adds a file left by a roll-over. Under <see cref="Gate"/>; <see cref="Write"/> makes it durable.</summary>
    public void Add(int fileId, long end) => _entries.Add(new Entry(fileId, end, Stopwatch.GetTimestamp()));

    /// <summary>Removes an entry (by identity: a clear may have replaced the list meanwhile). Under <see cref="Gate"/>.</summary>
    public bool Remove(Entry entry) => _entries.Remove(entry);

    /// <summary>Empties the list. Under <see cref="Gate"/>; <see cref="Write"/> makes it durable.</summary>
    public void Clear() => _entries.Clear();

    /// <summary>Writes the list to the next slot and fsyncs it. Under <see cref="Gate"/>.</summary>
    public void Write()
    {
        Span<byte> slot = stackalloc byte[SlotLength];
        slot.Clear();
        var sequence = _sequence + 1;
        BinaryPrimitives.WriteUInt32LittleEndian(slot, Magic);
        BinaryPrimitives.WriteInt64LittleEndian(slot[4..], sequence);
        BinaryPrimitives.WriteInt32LittleEndian(slot[12..], _entries.Count);
        var offset = HeaderLength;
        foreach (var entry in _entries)
        {
            BinaryPrimitives.WriteInt32LittleEndian(slot[offset..], entry.FileId);
            BinaryPrimitives.WriteInt64LittleEndian(slot[(offset + 4)..], entry.End);
            offset += EntryLength;
        }

        BinaryPrimitives.WriteUInt32LittleEndian(slot[offset..], System.IO.Hashing.Crc32.HashToUInt32(slot[..offset]));
        using var handle = File.OpenHandle(Path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
        if (!_created)
        {
            // Both slots exist before either is relied on: later writes overwrite in place and change no metadata.
            _files.Write(handle, Path, new byte[2 * SlotLength], 0);
            _files.Flush(handle, Path, dataOnly: false);
            _created = true;
        }

        _files.Write(handle, Path, slot, (sequence % 2) * SlotLength);
        _files.Flush(handle, Path, dataOnly: true);
        _sequence = sequence;
    }

    private static (long Sequence, List<Entry> Entries)? TryParse(ReadOnlySpan<byte> slot)
    {
        if (slot.Length < HeaderLength + 4 || BinaryPrimitives.ReadUInt32LittleEndian(slot) != Magic)
        {
            return null;
        }

        var sequence = BinaryPrimitives.ReadInt64LittleEndian(slot[4..]);
        var count = BinaryPrimitives.ReadInt32LittleEndian(slot[12..]);
        var crcOffset = HeaderLength + ((long)count * EntryLength);
        if (count < 0 || count > MaxEntries || crcOffset + 4 > slot.Length
            || BinaryPrimitives.ReadUInt32LittleEndian(slot[(int)crcOffset..]) != System.IO.Hashing.Crc32.HashToUInt32(slot[..(int)crcOffset]))
        {
            return null;
        }

        var entries = new List<Entry>(count);
        for (var i = 0; i < count; i++)
        {
            var at = HeaderLength + (i * EntryLength);
            entries.Add(new Entry(BinaryPrimitives.ReadInt32LittleEndian(slot[at..]), BinaryPrimitives.ReadInt64LittleEndian(slot[(at + 4)..]), 0));
        }

        return (sequence, entries);
    }

    /// <summary>A data file that may hold unsynced writes: its id, where its records end, and when it was left (timestamp).</summary>
    public sealed class Entry(int fileId, long end, long leftAt)
    {
        /// <summary>The data file's id.</summary>
        public int FileId { get; } = fileId;

        /// <summary>Where its records end: the write position when the writer left it.</summary>
        public long End { get; } = end;

        /// <summary>When the writer left it (<see cref="Stopwatch.GetTimestamp"/>; 0 when read from disk).</summary>
        public long LeftAt { get; } = leftAt;
    }
}
