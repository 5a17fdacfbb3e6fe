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

    [Fact]
    public void Long_inputs_hash_the_same_as_the_table_loop_for_every_skip_length_and_starting_value()
    {
        var random = new Random(20261204);
        var buffer = new byte[(2048 * 9 * 3) + 64];
        random.NextBytes(buffer);
        var lengths = new List<int> { 0, 1, 7, 8, 255, 256, 2047, 2048, 2049, 4096, 102_400, 102_407, buffer.Length - 3 };
        for (var i = 0; i < 40; i++)
        {
            lengths.Add(random.Next(buffer.Length - 3));
        }

        var checkedCount = 0;
        for (var skip = 1; skip <= 9; skip++)
        {
            // Around the gather threshold and the chunk edges for this skip, in hashed bytes.
            foreach (var hashed in new[] { 255, 256, 257, 2047, 2048, 2049, 4095, 4096, 4097 })
            {
                lengths.Add(((hashed - 1) * skip) + 1);
                lengths.Add(hashed * skip);
            }

            foreach (var length in lengths)
            {
                if (length > buffer.Length - 3)
                {
                    continue;
                }

                var start = random.Next(4);
                var data = buffer.AsSpan(start, length);
                var seed = random.Next(3) == 0 ? 0u : (uint)random.NextInt64(uint.MaxValue + 1L);
                Assert.True(
                    SkipCrc32.ComputeBytewise(seed, data, skip) == SkipCrc32.Compute(seed, data, skip),
                    $"skip {skip}, length {length}, start {start}, seed {seed}");
                checkedCount++;
            }
        }

        Assert.True(checkedCount > 500, $"only {checkedCount} inputs were compared");
    }

    [Fact]
    public void A_damaged_byte_that_is_hashed_changes_the_fast_checksum_and_one_that_is_skipped_does_not()
    {
        var random = new Random(7);
        var data = new byte[102_400];
        random.NextBytes(data);
        var clean = SkipCrc32.Compute(0, data, SkipCrc32.ValueSkip);
        data[8 * 5000] ^= 0x10;
        Assert.NotEqual(clean, SkipCrc32.Compute(0, data, SkipCrc32.ValueSkip));
        data[8 * 5000] ^= 0x10;
        data[(8 * 5000) + 3] ^= 0x10;
        Assert.Equal(clean, SkipCrc32.Compute(0, data, SkipCrc32.ValueSkip));
    }
}
