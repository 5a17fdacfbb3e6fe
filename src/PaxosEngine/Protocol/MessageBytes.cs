using Google.Protobuf;

namespace Orleans.Paxos.Engine.Protocol;

/// <summary>Serializes messages the way <see cref="MessageExtensions.ToByteArray"/> does, without zeroing the array first.</summary>
internal static class MessageBytes
{
    /// <summary>
    /// The message's bytes in a new array. Every byte is written: protobuf's span writer fails when the message
    /// does not fill the span exactly, so nothing of the array's earlier memory can remain.
    /// </summary>
    public static byte[] ToArray(IMessage message)
    {
        var bytes = GC.AllocateUninitializedArray<byte>(message.CalculateSize());
        message.WriteTo(bytes.AsSpan());
        return bytes;
    }

    /// <summary>
    /// The message's bytes at the start of an array rented from <see cref="Storage.RecordPool"/>, which may be longer;
    /// <paramref name="length"/> says how many bytes are the message's. For a storage that takes the array over
    /// (<see cref="Storage.ILogStorage.PutRented"/>).
    /// </summary>
    public static byte[] Rent(IMessage message, out int length)
    {
        length = message.CalculateSize();
        var bytes = Storage.RecordPool.Rent(length);
        message.WriteTo(bytes.AsSpan(0, length));
        return bytes;
    }
}
