using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Crc32 = System.IO.Hashing.Crc32;

namespace Orleans.Paxos.Engine.Hashing;

/// <summary>
/// PhxPaxos's CRC-32 variant: the standard reflected CRC-32 (polynomial 0xEDB88320, zlib-compatible
/// chaining) computed over only every <c>skip</c>-th byte (indices 0, skip, 2·skip, …).
/// With <c>skip = 1</c> it equals zlib's <c>crc32</c>. Thread-safe; allocates nothing.
/// </summary>
/// <remarks>
/// A bytewise table loop is one dependent lookup per hashed byte, about 25 µs for a 100 KiB value with
/// <see cref="ValueSkip"/>, and every value is hashed several times on its way to three disks. Longer inputs
/// therefore gather the hashed bytes into a stack buffer, hash each buffer with the framework's vectorized
/// CRC-32, and chain the pieces with the CRC's linearity (zlib's <c>crc32_combine</c>): the same checksum,
/// several times faster.
/// </remarks>
public static class SkipCrc32
{
    /// <summary>Skip used for network frame checksums (PhxPaxos <c>NET_CRC32SKIP</c>).</summary>
    public const int NetworkSkip = 7;

    /// <summary>Skip used for value checksums, vfile records and checkpoint chunks (PhxPaxos <c>CRC32SKIP</c>).</summary>
    public const int ValueSkip = 8;

    /// <summary>Skip used for the vfile <c>meta</c> file (every byte).</summary>
    public const int MetaSkip = 1;

    /// <summary>The reflected CRC-32 polynomial.</summary>
    private const uint Polynomial = 0xEDB88320u;

    /// <summary>Below this many hashed bytes the table loop is faster than gathering and combining.</summary>
    private const int GatherThreshold = 256;

    /// <summary>Hashed bytes gathered per piece; the buffer lives on the stack.</summary>
    private const int ChunkSize = 2048;

    private static readonly uint[] Table = BuildTable();

    /// <summary>x^(2^k) modulo the polynomial, for k = 0..31 (zlib's <c>x2n_table</c>).</summary>
    private static readonly uint[] PowersOfX = BuildPowersOfX();

    /// <summary>The operator that shifts a checksum past <see cref="ChunkSize"/> bytes.</summary>
    private static readonly uint ShiftPastChunk = ShiftOperator(ChunkSize);

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
        var hashed = data.IsEmpty ? 0 : ((data.Length - 1) / skip) + 1;
        if (hashed < GatherThreshold)
        {
            return ComputeBytewise(crc, data, skip);
        }

        if (skip == 1)
        {
            return Combine(crc, Crc32.HashToUInt32(data), ShiftOperator(data.Length));
        }

        Span<byte> gathered = stackalloc byte[ChunkSize];
        ref var source = ref MemoryMarshal.GetReference(data);
        nint offset = 0;
        while (hashed >= ChunkSize)
        {
            Gather(ref Unsafe.Add(ref source, offset), skip, gathered);
            crc = Combine(crc, Crc32.HashToUInt32(gathered), ShiftPastChunk);
            offset += (nint)ChunkSize * skip;
            hashed -= ChunkSize;
        }

        if (hashed > 0)
        {
            var tail = gathered[..hashed];
            Gather(ref Unsafe.Add(ref source, offset), skip, tail);
            crc = Combine(crc, Crc32.HashToUInt32(tail), ShiftOperator(hashed));
        }

        return crc;
    }

    /// <summary>The table loop: one lookup per hashed byte. Also the reference the tests hold the fast path to.</summary>
    internal static uint ComputeBytewise(uint crc, ReadOnlySpan<byte> data, int skip)
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

    /// <summary>
    /// Copies bytes 0, skip, 2·skip, … starting at <paramref name="source"/> into <paramref name="destination"/>,
    /// one per destination byte. The caller guarantees the source holds <c>(destination.Length - 1) · skip + 1</c> bytes.
    /// </summary>
    private static void Gather(ref byte source, int skip, Span<byte> destination)
    {
        ref var target = ref MemoryMarshal.GetReference(destination);
        nint position = 0;
        for (var i = 0; i < destination.Length; i++)
        {
            Unsafe.Add(ref target, i) = Unsafe.Add(ref source, position);
            position += skip;
        }
    }

    /// <summary>
    /// The checksum of A followed by B, from the checksum of A, the checksum of B alone and the operator
    /// for B's length (zlib's <c>crc32_combine</c>; any 32-bit value is the checksum of some A).
    /// </summary>
    private static uint Combine(uint first, uint second, uint shiftPastSecond) =>
        MultiplyModulo(shiftPastSecond, first) ^ second;

    /// <summary>x^(8·<paramref name="bytes"/>) modulo the polynomial (zlib's <c>x2nmodp(bytes, 3)</c>).</summary>
    private static uint ShiftOperator(long bytes)
    {
        var product = 1u << 31; // x^0
        var k = 3;
        while (bytes != 0)
        {
            if ((bytes & 1) != 0)
            {
                product = MultiplyModulo(PowersOfX[k & 31], product);
            }

            bytes >>= 1;
            k++;
        }

        return product;
    }

    /// <summary>a·b modulo the polynomial, both in the reflected bit order; <paramref name="a"/> must not be 0.</summary>
    private static uint MultiplyModulo(uint a, uint b)
    {
        var m = 1u << 31;
        var product = 0u;
        while (true)
        {
            if ((a & m) != 0)
            {
                product ^= b;
                if ((a & (m - 1)) == 0)
                {
                    return product;
                }
            }

            m >>= 1;
            b = (b & 1) != 0 ? (b >> 1) ^ Polynomial : b >> 1;
        }
    }

    private static uint[] BuildPowersOfX()
    {
        var powers = new uint[32];
        var p = 1u << 30; // x^1
        powers[0] = p;
        for (var n = 1; n < 32; n++)
        {
            powers[n] = p = MultiplyModulo(p, p);
        }

        return powers;
    }

    private static uint[] BuildTable()
    {
        var table = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            var c = i;
            for (var k = 0; k < 8; k++)
            {
                c = (c & 1) != 0 ? Polynomial ^ (c >> 1) : c >> 1;
            }

            table[i] = c;
        }

        return table;
    }
}
