namespace Orleans.Paxos.Engine.Hashing;

/// <summary>
/// PhxPaxos's CRC-32 variant: the standard reflected CRC-32 (polynomial 0xEDB88320, zlib-compatible
/// chaining) computed over only every <c>skip</c>-th byte (indices 0, skip, 2·skip, …).
/// With <c>skip = 1</c> it equals zlib's <c>crc32</c>. Thread-safe; allocates nothing.
/// </summary>
public static class SkipCrc32
{
    /// <summary>Skip used for network frame checksums (PhxPaxos <c>NET_CRC32SKIP</c>).</summary>
    public const int NetworkSkip = 7;

    /// <summary>Skip used for value checksums, vfile records and checkpoint chunks (PhxPaxos <c>CRC32SKIP</c>).</summary>
    public const int ValueSkip = 8;

    /// <summary>Skip used for the vfile <c>meta</c> file (every byte).</summary>
    public const int MetaSkip = 1;

    private static readonly uint[] Table = BuildTable();

    /// <summary>
    /// Continues the checksum <paramref name="crc"/> (0 to start) over every
    /// <paramref name="skip"/>-th byte of <paramref name="data"/>.
    /// </summary>
    /// <param name="crc">The checksum so far; 0 for a fresh one.</param>
    /// <param name="data">The bytes to hash.</param>
    /// <param name="skip">Stride between hashed bytes; must be at least 1.</param>
    /// <returns>The new checksum.</returns>
    public static uint Compute(uint crc, ReadOnlySpan<byte> data, int skip)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(skip, 1);
        var table = Table;
        crc ^= 0xFFFFFFFFu;
        if (skip == 1)
        {
            foreach (var b in data)
            {
                crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8);
            }
        }
        else
        {
            for (var i = 0; i < data.Length; i += skip)
            {
                crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
            }
        }

        return crc ^ 0xFFFFFFFFu;
    }

    private static uint[] BuildTable()
    {
        var table = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            var c = i;
            for (var k = 0; k < 8; k++)
            {
                c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            }

            table[i] = c;
        }

        return table;
    }
}
