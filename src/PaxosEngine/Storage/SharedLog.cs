using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>One record of the shared log: a group's acceptor state for an instance.</summary>
internal readonly record struct SharedLogRecord(int GroupIndex, ulong InstanceId, RecordBytes Value);

/// <summary>What <see cref="SharedLog.Read"/> found: the last checkpoint and the records written after it.</summary>
/// <param name="Generation">The checkpoint's generation.</param>
/// <param name="Marks">Per group, where its data files were durable at the checkpoint (file id, offset).</param>
/// <param name="Records">The records after the checkpoint, in the order they were written.</param>
internal sealed record SharedLogContents(uint Generation, SyncMark[] Marks, List<SharedLogRecord> Records);

/// <summary>
/// The node-wide write-ahead log of <see cref="LogStorageOptions.SharedLog"/>: one file, <c>sharedlog</c> in the
/// storage folder, holding every record of every group written since the last checkpoint, so that one
/// <c>fdatasync</c> makes a batch spanning many groups durable. The groups' own data files keep PhxPaxos's format and
/// are fsynced only at checkpoints. Written by one thread at a time (the storage's writer); not thread-safe.
/// </summary>
/// <remarks>
/// <para>Layout: two header slots of <see cref="SlotLength"/> bytes, then records. A header is
/// <c>[magic "PXSL"][version 1][generation][group count][per group: file id int32, offset int64][crc32]</c>, all
/// little-endian; a checkpoint writes generation g+1 into slot (g+1) % 2 and fsyncs it, so a torn header write leaves
/// the other slot, the previous checkpoint, intact. A record is
/// <c>[body length uint32][generation uint32][crc32 of generation and body][group int32][instance uint64][value]</c>.</para>
/// <para>After a checkpoint records are written again from the start of the record area. Reading stops at the
/// first record that is incomplete, fails its CRC or carries another generation: that is the end of what this
/// generation wrote (an older generation's records may follow, and a crash may tear the last, unacknowledged
/// batch). Each batch is fsynced before the next one is written, so only the last batch can be torn.</para>
/// </remarks>
internal sealed class SharedLog : IDisposable
{
    /// <summary>The file's name in the storage folder.</summary>
    public const string FileName = "sharedlog";

    /// <summary>Bytes of one header slot; records start after two of them.</summary>
    public const int SlotLength = 4096;

    /// <summary>Offset of the first record.</summary>
    public const long RecordsStart = 2 * SlotLength;

    /// <summary>Most groups a header slot has room for.</summary>
    public const int MaxGroups = (SlotLength - HeaderFixedLength - 4) / 12;

    private const uint Magic = 0x4C535850; // "PXSL" little-endian
    private const uint Version = 1;
    private const int HeaderFixedLength = 16;
    private const int RecordHeaderLength = 12;
    private const int BodyPrefixLength = 12;

    private readonly LogFileOperations _files;
    private readonly string _path;
    private readonly SafeFileHandle _handle;
    private readonly int _groupCount;
    /// <summary>The file is extended with zeros this far ahead of the records, so that an fdatasync rarely has a new size to commit too.</summary>
    private const int ExtendBytes = 1024 * 1024;

    private static readonly byte[] Zeros = new byte[64 * 1024];

    private byte[] _buffer = new byte[64 * 1024];
    private long _offset = RecordsStart;
    private long _length;

    private SharedLog(LogFileOperations files, string path, SafeFileHandle handle, int groupCount, uint generation)
    {
        _files = files;
        _path = path;
        _handle = handle;
        _groupCount = groupCount;
        Generation = generation;
    }

    /// <summary>The current checkpoint's generation.</summary>
    public uint Generation { get; private set; }

    /// <summary>Bytes of records written since the last checkpoint.</summary>
    public long RecordBytes => _offset - RecordsStart;

    /// <summary>The file's path.</summary>
    public string Path => _path;

    /// <summary>
    /// Opens (creating when missing) the shared log at <paramref name="path"/> and writes a first checkpoint of
    /// <paramref name="generation"/> with <paramref name="marks"/>, fsynced (with the folder, when the file is new).
    /// </summary>
    /// <exception cref="IOException">The file cannot be created, written or flushed.</exception>
    public static SharedLog Open(LogFileOperations files, string path, uint generation, ReadOnlySpan<SyncMark> marks)
    {
        if (marks.Length > MaxGroups)
        {
            throw new ArgumentOutOfRangeException(nameof(marks), marks.Length, $"The shared log holds at most {MaxGroups} groups.");
        }

        var isNew = !File.Exists(path);
        var handle = File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
        var log = new SharedLog(files, path, handle, marks.Length, generation - 1) { _length = RandomAccess.GetLength(handle) };
        try
        {
            log.Checkpoint(marks);
            if (isNew)
            {
                DataSync.FlushDirectory(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!);
            }

            return log;
        }
        catch
        {
            log.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads the shared log at <paramref name="path"/>: null when there is none, or when it was never given a complete
    /// header (created, then a crash before its first checkpoint was durable: nothing was written to it).
    /// </summary>
    /// <exception cref="LogStorageException">Both header slots are damaged, or the header is for another group count.</exception>
    public static SharedLogContents? Read(string path, int groupCount)
    {
        if (!File.Exists(path))
        {
            return null;
        }

        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var length = RandomAccess.GetLength(handle);
        var slots = new byte[RecordsStart];
        var read = RandomAccess.Read(handle, slots, 0);
        var best = -1;
        uint bestGeneration = 0;
        SyncMark[]? bestMarks = null;
        for (var slot = 0; slot < 2; slot++)
        {
            if (TryParseHeader(slots.AsSpan(slot * SlotLength, SlotLength), out var generation, out var marks)
                && (best < 0 || generation > bestGeneration))
            {
                best = slot;
                bestGeneration = generation;
                bestMarks = marks;
            }
        }

        if (bestMarks is null)
        {
            if (!slots.AsSpan(0, read).ContainsAnyExcept((byte)0))
            {
                // Created but its first header never became durable: no record was written after it.
                return null;
            }

            throw new LogStorageException(
                $"The shared log {path} is damaged: neither of its two header slots holds a valid checkpoint. The records it holds cannot be placed; restore the folder from a backup, or move the node's folder aside and let the node rebuild from its peers (README, \"Replacing a disk\").",
                -1,
                path,
                0);
        }

        if (bestMarks.Length != groupCount)
        {
            throw new LogStorageException(
                $"The shared log {path} was written for {bestMarks.Length} groups; this storage has {groupCount}. Open it with the group count it was written with.",
                -1,
                path,
                0);
        }

        var records = new List<SharedLogRecord>();
        var offset = RecordsStart;
        Span<byte> header = stackalloc byte[RecordHeaderLength];
        Span<byte> generationBytes = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(generationBytes, bestGeneration);
        while (offset + RecordHeaderLength + BodyPrefixLength <= length)
        {
            RandomAccess.Read(handle, header, offset);
            var bodyLength = BinaryPrimitives.ReadUInt32LittleEndian(header);
            var generation = BinaryPrimitives.ReadUInt32LittleEndian(header[4..]);
            if (generation != bestGeneration || bodyLength < BodyPrefixLength || offset + RecordHeaderLength + bodyLength > length)
            {
                break;
            }

            var body = new byte[bodyLength];
            if (RandomAccess.Read(handle, body, offset + RecordHeaderLength) != body.Length)
            {
                break;
            }

            var crc = new System.IO.Hashing.Crc32();
            crc.Append(generationBytes);
            crc.Append(body);
            if (crc.GetCurrentHashAsUInt32() != BinaryPrimitives.ReadUInt32LittleEndian(header[8..]))
            {
                break;
            }

            var group = BinaryPrimitives.ReadInt32LittleEndian(body);
            if ((uint)group >= (uint)groupCount)
            {
                throw new LogStorageException(
                    $"The shared log {path} holds a valid record for group {group} at offset {offset}, but the storage has {groupCount} groups.", -1, path, offset);
            }

            records.Add(new SharedLogRecord(group, BinaryPrimitives.ReadUInt64LittleEndian(body.AsSpan(4)), Storage.RecordBytes.Owned(body.AsSpan(BodyPrefixLength).ToArray())));
            offset += RecordHeaderLength + bodyLength;
        }

        return new SharedLogContents(bestGeneration, bestMarks, records);
    }

    /// <summary>Appends the records with one write (not flushed: see <see cref="Flush"/>).</summary>
    /// <exception cref="IOException">The write failed.</exception>
    public void Append(ReadOnlySpan<SharedLogRecord> records)
    {
        var total = 0;
        foreach (var record in records)
        {
            total += RecordHeaderLength + BodyPrefixLength + record.Value.Length;
        }

        if (_buffer.Length < total)
        {
            _buffer = new byte[Math.Max(total, _buffer.Length * 2)];
        }

        var position = 0;
        foreach (var record in records)
        {
            var bodyLength = BodyPrefixLength + record.Value.Length;
            var span = _buffer.AsSpan(position, RecordHeaderLength + bodyLength);
            BinaryPrimitives.WriteUInt32LittleEndian(span, (uint)bodyLength);
            BinaryPrimitives.WriteUInt32LittleEndian(span[4..], Generation);
            var body = span[RecordHeaderLength..];
            BinaryPrimitives.WriteInt32LittleEndian(body, record.GroupIndex);
            BinaryPrimitives.WriteUInt64LittleEndian(body[4..], record.InstanceId);
            record.Value.Span.CopyTo(body[BodyPrefixLength..]);
            var crc = new System.IO.Hashing.Crc32();
            crc.Append(span.Slice(4, 4));
            crc.Append(body);
            BinaryPrimitives.WriteUInt32LittleEndian(span[8..], crc.GetCurrentHashAsUInt32());
            position += span.Length;
        }

        if (_offset + total > _length)
        {
            // Zeros first, flushed with the records: past the end, the size changes once per megabyte, not per batch.
            var end = _offset + total + ExtendBytes;
            for (var at = Math.Max(_length, _offset); at < end; at += Zeros.Length)
            {
                _files.Write(_handle, _path, Zeros.AsSpan(0, (int)Math.Min(Zeros.Length, end - at)), at);
            }

            _length = end;
        }

        _files.Write(_handle, _path, _buffer.AsSpan(0, total), _offset);
        _offset += total;
    }

    /// <summary>Makes every record appended so far durable (<c>fdatasync</c>).</summary>
    /// <exception cref="IOException">The flush failed: what was appended since the last flush may be lost.</exception>
    public void Flush() => _files.Flush(_handle, _path, dataOnly: true);

    /// <summary>
    /// Starts a new generation: writes a header with <paramref name="marks"/> (where every group's data files are
    /// durable now) into the other slot and fsyncs it. Records written before it are then obsolete.
    /// </summary>
    /// <exception cref="IOException">The write or the flush failed; the previous checkpoint still stands.</exception>
    public void Checkpoint(ReadOnlySpan<SyncMark> marks)
    {
        if (marks.Length != _groupCount)
        {
            throw new ArgumentException($"A checkpoint needs a mark for each of the {_groupCount} groups.", nameof(marks));
        }

        var generation = Generation + 1;
        var slot = new byte[SlotLength];
        BinaryPrimitives.WriteUInt32LittleEndian(slot, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(slot.AsSpan(4), Version);
        BinaryPrimitives.WriteUInt32LittleEndian(slot.AsSpan(8), generation);
        BinaryPrimitives.WriteInt32LittleEndian(slot.AsSpan(12), marks.Length);
        var position = HeaderFixedLength;
        foreach (var mark in marks)
        {
            BinaryPrimitives.WriteInt32LittleEndian(slot.AsSpan(position), mark.FileId);
            BinaryPrimitives.WriteInt64LittleEndian(slot.AsSpan(position + 4), mark.Offset);
            position += 12;
        }

        BinaryPrimitives.WriteUInt32LittleEndian(slot.AsSpan(position), System.IO.Hashing.Crc32.HashToUInt32(slot.AsSpan(0, position)));
        _files.Write(_handle, _path, slot, (generation % 2) * SlotLength);
        _files.Flush(_handle, _path, dataOnly: false);
        Generation = generation;
        _offset = RecordsStart;
    }

    /// <inheritdoc/>
    public void Dispose() => _handle.Dispose();

    private static bool TryParseHeader(ReadOnlySpan<byte> slot, out uint generation, out SyncMark[] marks)
    {
        generation = 0;
        marks = [];
        if (BinaryPrimitives.ReadUInt32LittleEndian(slot) != Magic || BinaryPrimitives.ReadUInt32LittleEndian(slot[4..]) != Version)
        {
            return false;
        }

        var count = BinaryPrimitives.ReadInt32LittleEndian(slot[12..]);
        if (count < 1 || count > MaxGroups)
        {
            return false;
        }

        var end = HeaderFixedLength + (count * 12);
        if (System.IO.Hashing.Crc32.HashToUInt32(slot[..end]) != BinaryPrimitives.ReadUInt32LittleEndian(slot[end..]))
        {
            return false;
        }

        generation = BinaryPrimitives.ReadUInt32LittleEndian(slot[8..]);
        marks = new SyncMark[count];
        for (var i = 0; i < count; i++)
        {
            var at = HeaderFixedLength + (i * 12);
            marks[i] = new SyncMark(BinaryPrimitives.ReadInt32LittleEndian(slot[at..]), BinaryPrimitives.ReadInt64LittleEndian(slot[(at + 4)..]));
        }

        return true;
    }
}
