using System.Buffers.Binary;

namespace Orleans.Paxos.Engine.Protocol;

/// <summary>
/// The TCP stream framing of PhxPaxos: each frame is preceded by <c>uint32 big-endian (frame length + 4)</c>.
/// Stateless and thread-safe.
/// </summary>
public static class TcpFraming
{
    /// <summary>Length of the prefix in bytes.</summary>
    public const int PrefixLength = 4;

    /// <summary>Writes the prefix of a frame of <paramref name="frameLength"/> bytes.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The length is negative or too large for the prefix.</exception>
    public static void WritePrefix(Span<byte> destination, int frameLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(frameLength);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(frameLength, int.MaxValue - PrefixLength);
        BinaryPrimitives.WriteUInt32BigEndian(destination, (uint)(frameLength + PrefixLength));
    }

    /// <summary>
    /// Reads a prefix. Rejects, as PhxPaxos does, a length below zero or above <paramref name="maxFrameLength"/>.
    /// </summary>
    /// <param name="prefix">At least <see cref="PrefixLength"/> bytes.</param>
    /// <param name="maxFrameLength">Largest frame accepted.</param>
    /// <param name="frameLength">The frame length (without the prefix) when the result is true.</param>
    public static bool TryReadFrameLength(ReadOnlySpan<byte> prefix, int maxFrameLength, out int frameLength)
    {
        var length = (long)BinaryPrimitives.ReadUInt32BigEndian(prefix) - PrefixLength;
        if (length < 0 || length > maxFrameLength)
        {
            frameLength = -1;
            return false;
        }

        frameLength = (int)length;
        return true;
    }
}
