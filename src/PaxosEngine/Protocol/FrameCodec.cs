using System.Buffers.Binary;
using Google.Protobuf;
using Orleans.Paxos.Engine.Hashing;

namespace Orleans.Paxos.Engine.Protocol;

/// <summary>Why a frame was refused by <see cref="FrameCodec.TryDecode"/>.</summary>
public enum FrameError
{
    /// <summary>The frame is valid.</summary>
    None = 0,

    /// <summary>Fewer bytes than the fixed prefix (group index and header length) plus a header.</summary>
    TooShort,

    /// <summary>Larger than the configured maximum frame size.</summary>
    TooLarge,

    /// <summary>The header length points past the end of the frame or exceeds its bound.</summary>
    BadHeaderLength,

    /// <summary>The header is not a valid <see cref="Header"/>.</summary>
    BadHeader,

    /// <summary>The trailing checksum does not match the bytes.</summary>
    ChecksumMismatch,

    /// <summary>The header names a command other than PaxosMsg or CheckpointMsg.</summary>
    UnknownCommand,

    /// <summary>The body does not parse as the message the header names.</summary>
    BadBody,
}

/// <summary>A decoded, checksum-verified frame.</summary>
/// <param name="GroupIndex">The target group (first four bytes of the frame).</param>
/// <param name="Header">The envelope header.</param>
/// <param name="Paxos">The body when <see cref="Header.Cmdid"/> is <see cref="MessageCommand.PaxosMsg"/>.</param>
/// <param name="Checkpoint">The body when <see cref="Header.Cmdid"/> is <see cref="MessageCommand.CheckpointMsg"/>.</param>
public sealed record DecodedFrame(int GroupIndex, Header Header, PaxosMsg? Paxos, CheckpointMsg? Checkpoint);

/// <summary>
/// Encodes and decodes PhxPaxos message frames:
/// <c>[int32 LE group index][uint16 LE header length][Header][body][uint32 LE crc32(all previous bytes, skip 7)]</c>.
/// Stateless and thread-safe.
/// </summary>
public static class FrameCodec
{
    /// <summary>Bytes before the header: group index (4) and header length (2).</summary>
    public const int PrefixLength = 6;

    /// <summary>Length of the trailing checksum.</summary>
    public const int ChecksumLength = 4;

    /// <summary>Largest header accepted; a PhxPaxos header is at most about 30 bytes.</summary>
    public const int MaxHeaderLength = 256;

    /// <summary>Default largest frame: PhxPaxos's <c>MAX_VALUE_SIZE</c> (10 MiB) plus room for the envelope.</summary>
    public const int DefaultMaxFrameLength = (10 * 1024 * 1024) + 4096;

    /// <summary>Header version written by PhxPaxos: a version of 1 or more means the frame carries a checksum.</summary>
    public const int HeaderVersion = 1;

    /// <summary>Builds the header PhxPaxos sends: <c>{gid, rid = 0, cmdid, version = 1}</c>.</summary>
    public static Header CreateHeader(ulong gid, MessageCommand command) =>
        new() { Gid = gid, Rid = 0, Cmdid = (int)command, Version = HeaderVersion };

    /// <summary>Encodes a Paxos message for <paramref name="groupIndex"/> under cluster id <paramref name="gid"/>.</summary>
    public static byte[] Encode(int groupIndex, ulong gid, PaxosMsg body) =>
        Encode(groupIndex, CreateHeader(gid, MessageCommand.PaxosMsg), body);

    /// <summary>Encodes a checkpoint message for <paramref name="groupIndex"/> under cluster id <paramref name="gid"/>.</summary>
    public static byte[] Encode(int groupIndex, ulong gid, CheckpointMsg body) =>
        Encode(groupIndex, CreateHeader(gid, MessageCommand.CheckpointMsg), body);

    /// <summary>Encodes any header and body into one frame with its checksum.</summary>
    public static byte[] Encode(int groupIndex, Header header, IMessage body)
    {
        ArgumentNullException.ThrowIfNull(header);
        ArgumentNullException.ThrowIfNull(body);
        var headerLength = header.CalculateSize();
        if (headerLength > ushort.MaxValue)
        {
            throw new ArgumentException("Header too large.", nameof(header));
        }

        var bodyLength = body.CalculateSize();
        var frame = GC.AllocateUninitializedArray<byte>(PrefixLength + headerLength + bodyLength + ChecksumLength); // every byte is written below
        var span = frame.AsSpan();
        BinaryPrimitives.WriteInt32LittleEndian(span, groupIndex);
        BinaryPrimitives.WriteUInt16LittleEndian(span[4..], (ushort)headerLength);
        header.WriteTo(span.Slice(PrefixLength, headerLength));
        body.WriteTo(span.Slice(PrefixLength + headerLength, bodyLength));
        var covered = frame.Length - ChecksumLength;
        var crc = SkipCrc32.Compute(0, span[..covered], SkipCrc32.NetworkSkip);
        BinaryPrimitives.WriteUInt32LittleEndian(span[covered..], crc);
        return frame;
    }

    /// <summary>Reads the group index of a frame without validating the rest.</summary>
    /// <returns>False when the frame is shorter than four bytes.</returns>
    public static bool TryPeekGroupIndex(ReadOnlySpan<byte> frame, out int groupIndex)
    {
        if (frame.Length < 4)
        {
            groupIndex = -1;
            return false;
        }

        groupIndex = BinaryPrimitives.ReadInt32LittleEndian(frame);
        return true;
    }

    /// <summary>
    /// Validates and decodes a frame. Never throws on malformed input; the reason is returned instead.
    /// </summary>
    /// <param name="frame">The complete frame (a UDP datagram, or a TCP message without its length prefix).</param>
    /// <param name="maxFrameLength">Largest frame accepted.</param>
    /// <param name="decoded">The decoded frame when the result is <see cref="FrameError.None"/>.</param>
    public static FrameError TryDecode(ReadOnlySpan<byte> frame, int maxFrameLength, out DecodedFrame? decoded)
    {
        decoded = null;
        if (frame.Length > maxFrameLength)
        {
            return FrameError.TooLarge;
        }

        if (frame.Length <= PrefixLength)
        {
            return FrameError.TooShort;
        }

        var groupIndex = BinaryPrimitives.ReadInt32LittleEndian(frame);
        int headerLength = BinaryPrimitives.ReadUInt16LittleEndian(frame[4..]);
        var bodyStart = PrefixLength + headerLength;
        if (headerLength > MaxHeaderLength || bodyStart > frame.Length)
        {
            return FrameError.BadHeaderLength;
        }

        Header header;
        try
        {
            header = Header.Parser.ParseFrom(frame.Slice(PrefixLength, headerLength));
        }
        catch (InvalidProtocolBufferException)
        {
            return FrameError.BadHeader;
        }

        if (!header.HasCmdid)
        {
            return FrameError.BadHeader;
        }

        var bodyEnd = frame.Length;
        if (header.Version >= 1)
        {
            if (frame.Length - bodyStart < ChecksumLength)
            {
                return FrameError.TooShort;
            }

            bodyEnd = frame.Length - ChecksumLength;
            var expected = BinaryPrimitives.ReadUInt32LittleEndian(frame[bodyEnd..]);
            if (SkipCrc32.Compute(0, frame[..bodyEnd], SkipCrc32.NetworkSkip) != expected)
            {
                return FrameError.ChecksumMismatch;
            }
        }

        var body = frame[bodyStart..bodyEnd];
        try
        {
            switch ((MessageCommand)header.Cmdid)
            {
                case MessageCommand.PaxosMsg:
                    var paxos = PaxosMsg.Parser.ParseFrom(body);
                    if (!paxos.HasMsgType)
                    {
                        return FrameError.BadBody;
                    }

                    decoded = new DecodedFrame(groupIndex, header, paxos, null);
                    return FrameError.None;
                case MessageCommand.CheckpointMsg:
                    var checkpoint = CheckpointMsg.Parser.ParseFrom(body);
                    if (!checkpoint.HasMsgType || !checkpoint.HasNodeID || !checkpoint.HasUUID || !checkpoint.HasSequence)
                    {
                        return FrameError.BadBody;
                    }

                    decoded = new DecodedFrame(groupIndex, header, null, checkpoint);
                    return FrameError.None;
                default:
                    return FrameError.UnknownCommand;
            }
        }
        catch (InvalidProtocolBufferException)
        {
            return FrameError.BadBody;
        }
    }
}
