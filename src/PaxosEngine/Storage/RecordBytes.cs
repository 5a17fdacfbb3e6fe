namespace Orleans.Paxos.Engine.Storage;

/// <summary>
/// A record's bytes as the storage holds them between a put and its index row: the first <see cref="Length"/>
/// bytes of <see cref="Array"/>. A <see cref="Rented"/> array came from <see cref="RecordPool"/> and goes back to it
/// once the record is indexed and no reader can reach it any more.
/// </summary>
/// <remarks>
/// Records of large values are the biggest allocations a node makes (one per accepted value on every node); a
/// fresh large array costs page faults and a full collection's worth of large-object-heap budget, a reused one
/// neither.
/// </remarks>
internal readonly record struct RecordBytes(byte[] Array, int Length, bool Rented)
{
    /// <summary>An array the storage keeps as it is and never returns to a pool.</summary>
    public static RecordBytes Owned(byte[] array) => new(array, array.Length, Rented: false);

    /// <summary>A copy of <paramref name="bytes"/> in an array rented from <see cref="RecordPool"/>.</summary>
    public static RecordBytes RentedCopyOf(ReadOnlySpan<byte> bytes)
    {
        var array = RecordPool.Rent(bytes.Length);
        bytes.CopyTo(array);
        return new RecordBytes(array, bytes.Length, Rented: true);
    }

    /// <summary>The record's bytes.</summary>
    public ReadOnlySpan<byte> Span => Array.AsSpan(0, Length);

    /// <summary>
    /// Gives a rented array back to the pool; nothing may read it afterwards. An array the pool refuses (one a caller
    /// did not rent from it) is left to the garbage collector: releasing never throws.
    /// </summary>
    public void Release()
    {
        if (Rented)
        {
            try
            {
                RecordPool.Return(Array);
            }
            catch (ArgumentException)
            {
                // Not one of the pool's sizes: nothing to give back.
            }
        }
    }
}
