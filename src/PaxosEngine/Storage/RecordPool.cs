using System.Buffers;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>
/// The arrays records are serialized into and held in until their index rows are written
/// (<see cref="ILogStorage.PutRented"/>, <see cref="RecordBytes"/>).
/// </summary>
/// <remarks>
/// A record waits for its index row for up to <see cref="LogStorageOptions.IndexFlushInterval"/> (or 1,024 rows, or
/// 4 MiB), so a busy node has hundreds of record arrays out at once. <see cref="ArrayPool{T}.Shared"/> keeps only a
/// few arrays of a size per core and drops the rest when they come back; those records were then new arrays every
/// time, which lived just long enough to be promoted and had to be cleared by full collections. This pool keeps as
/// many as <see cref="ArraysPerSize"/> of every size up to <see cref="MaxPooledLength"/>: what it holds is bounded by the
/// most records that were ever waiting for their rows at once, which the storage's flush bounds keep to a few MiB
/// per writer.
/// </remarks>
internal static class RecordPool
{
    /// <summary>Largest array this pool keeps; <see cref="Rent"/> takes larger ones from <see cref="ArrayPool{T}.Shared"/>.</summary>
    public const int MaxPooledLength = 256 * 1024;

    /// <summary>Arrays kept per size: the rows an index flush writes at most.</summary>
    public const int ArraysPerSize = 1024;

    private static readonly ArrayPool<byte> Pool = Create();

    /// <summary>
    /// An array of at least <paramref name="length"/> bytes: from this pool, or for a record larger than it
    /// keeps (a batch of large values), from <see cref="ArrayPool{T}.Shared"/>, which keeps a few large arrays.
    /// </summary>
    public static byte[] Rent(int length) =>
        length > MaxPooledLength ? ArrayPool<byte>.Shared.Rent(length) : Pool.Rent(length);

    /// <summary>Gives back an array from <see cref="Rent"/> to the pool it came from.</summary>
    /// <exception cref="ArgumentException">The array's length is none of the pools' sizes.</exception>
    public static void Return(byte[] array)
    {
        if (array.Length > MaxPooledLength)
        {
            ArrayPool<byte>.Shared.Return(array);
        }
        else
        {
            Pool.Return(array);
        }
    }

    /// <summary>A pool configured like this one (tests use their own).</summary>
    public static ArrayPool<byte> Create() => ArrayPool<byte>.Create(MaxPooledLength, ArraysPerSize);
}
