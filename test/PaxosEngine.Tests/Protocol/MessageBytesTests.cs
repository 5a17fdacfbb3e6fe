using Google.Protobuf;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Tests.Protocol;

public sealed class MessageBytesTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(100)]
    [InlineData(4096)]
    [InlineData(102_400)]
    public void Writes_the_same_bytes_as_protobuf(int valueLength)
    {
        var random = new Random(valueLength);
        for (var i = 0; i < 8; i++)
        {
            // Dirty large-object memory that a fresh uninitialized array may be carved from.
            GC.KeepAlive(Enumerable.Repeat((byte)0xA5, valueLength + 64).ToArray());
            var value = new byte[valueLength];
            random.NextBytes(value);
            var record = new AcceptorStateData
            {
                InstanceID = (ulong)random.NextInt64(),
                PromiseID = (ulong)i,
                PromiseNodeID = 0x0100007F0000_2B67,
                AcceptedID = (ulong)i,
                AcceptedNodeID = 0x0100007F0000_2B67,
                AcceptedValue = ByteString.CopyFrom(value),
                Checksum = (uint)random.Next(),
            };

            Assert.Equal(record.ToByteArray(), MessageBytes.ToArray(record));
        }
    }
}
