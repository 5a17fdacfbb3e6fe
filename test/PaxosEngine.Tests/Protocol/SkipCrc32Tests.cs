using System.Buffers.Binary;
using System.Text;
using Orleans.Paxos.Engine.Hashing;

namespace Orleans.Paxos.Engine.Tests.Protocol;

public sealed class SkipCrc32Tests
{
    private static readonly byte[] Check = Encoding.ASCII.GetBytes("123456789");

    [Theory]
    [InlineData(1, 3421780262u)]
    [InlineData(7, 2944839123u)]
    [InlineData(8, 3632373061u)]
    public void Published_vectors_for_123456789(int skip, uint expected)
    {
        Assert.Equal(expected, SkipCrc32.Compute(0, Check, skip));
    }

    [Fact]
    public void Chains_from_a_previous_value_like_phxpaxos()
    {
        var data = Encoding.ASCII.GetBytes("hello paxos");
        var first = SkipCrc32.Compute(0, data, SkipCrc32.ValueSkip);
        Assert.Equal(2988640862u, first);
        Assert.Equal(1993220537u, SkipCrc32.Compute(first, data, SkipCrc32.ValueSkip));
    }

    [Theory]
    [InlineData(0, 558161692u)]
    [InlineData(1, 2583214201u)]
    [InlineData(5, 0x169a2f2eu)]
    public void Meta_file_checksum_of_a_file_id(int fileId, uint expected)
    {
        var bytes = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(bytes, fileId);
        Assert.Equal(expected, SkipCrc32.Compute(0, bytes, SkipCrc32.MetaSkip));
    }

    [Fact]
    public void Skip_one_equals_the_framework_crc32()
    {
        var random = new Random(1234);
        var data = new byte[1000];
        random.NextBytes(data);
        Assert.Equal(System.IO.Hashing.Crc32.HashToUInt32(data), SkipCrc32.Compute(0, data, 1));
    }
}
