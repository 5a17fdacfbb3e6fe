using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Tests.Protocol;

public sealed class TcpFramingTests
{
    [Fact]
    public void Prefix_is_big_endian_length_plus_four_as_captured()
    {
        // The 34-byte Prepare of the worked example travels as 00 00 00 26 + frame.
        var prefix = new byte[4];
        TcpFraming.WritePrefix(prefix, 34);
        Assert.Equal(new byte[] { 0x00, 0x00, 0x00, 0x26 }, prefix);
        Assert.True(TcpFraming.TryReadFrameLength(prefix, FrameCodec.DefaultMaxFrameLength, out var length));
        Assert.Equal(34, length);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(3u)]
    [InlineData(0xFFFFFFFFu)]
    [InlineData(1000u + 4 + 1)]
    public void Lengths_outside_the_bounds_are_rejected(uint raw)
    {
        var prefix = new byte[4];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(prefix, raw);
        Assert.False(TcpFraming.TryReadFrameLength(prefix, 1000, out _));
    }

    [Fact]
    public void An_empty_frame_is_within_the_bounds()
    {
        var prefix = new byte[] { 0, 0, 0, 4 };
        Assert.True(TcpFraming.TryReadFrameLength(prefix, 1000, out var length));
        Assert.Equal(0, length);
    }
}
