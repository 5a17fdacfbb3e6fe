using System.Text;
using Google.Protobuf;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Tests.Protocol;

public sealed class FrameCodecTests
{
    private const ulong Node11111 = 72058139498785639ul;

    private static byte[] Hex(string hex) => Convert.FromHexString(hex.Replace(" ", string.Empty, StringComparison.Ordinal));

    [Fact]
    public void Prepare_matches_the_worked_example_byte_for_byte()
    {
        var msg = new PaxosMsg { MsgType = (int)PaxosMsgType.Prepare, InstanceID = 0, NodeID = Node11111, ProposalID = 1 };
        var frame = FrameCodec.Encode(0, 0, msg);
        Assert.Equal(Hex("00000000 0800 0800100018012001 0801100018e7d68080f08f8080012001 261edcc8"), frame);
    }

    [Fact]
    public void Captured_accept_decodes_and_reencodes_to_the_same_bytes()
    {
        var captured = Hex(
            "00 00 00 00 08 00 08 00 10 00 18 01 20 01 08 03" +
            "10 00 18 e7 d6 80 80 f0 8f 80 80 01 20 01 32 0f" +
            "01 00 00 00 68 65 6c 6c 6f 2d 70 68 78 2d 31 60" +
            "00 58 15 0d 28");
        Assert.Equal(FrameError.None, FrameCodec.TryDecode(captured, FrameCodec.DefaultMaxFrameLength, out var decoded));
        var msg = decoded!.Paxos!;
        Assert.Equal((int)PaxosMsgType.Accept, msg.MsgType);
        Assert.Equal(Node11111, msg.NodeID);
        Assert.Equal(1ul, msg.ProposalID);
        Assert.True(msg.HasLastChecksum);
        Assert.Equal("hello-phx-1", Encoding.ASCII.GetString(msg.Value.Span[4..]));
        Assert.Equal(captured, FrameCodec.Encode(decoded.GroupIndex, decoded.Header, msg));
    }

    [Theory]
    [InlineData("00 00 00 00 08 00 08 00 10 00 18 01 20 01 08 02 10 00 18 e8 d6 80 80 f0 8f 80 80 01 20 01 38 00 40 00 26 1e dc c8", PaxosMsgType.PrepareReply)]
    [InlineData("00 00 00 00 08 00 08 00 10 00 18 01 20 01 08 04 10 00 18 e9 d6 80 80 f0 8f 80 80 01 20 01 26 1e dc c8", PaxosMsgType.AcceptReply)]
    [InlineData("00 00 00 00 08 00 08 00 10 00 18 01 20 01 08 07 10 00 18 e7 d6 80 80 f0 8f 80 80 01 20 01 60 00 26 1e dc c8", PaxosMsgType.ProposerSendSuccess)]
    [InlineData("00 00 00 00 08 00 08 00 10 00 18 01 20 01 08 05 10 00 18 e7 d6 80 80 f0 8f 80 80 01 34 d6 25 04", PaxosMsgType.AskForLearn)]
    public void Captured_round_messages_round_trip(string hex, PaxosMsgType type)
    {
        var captured = Hex(hex);
        Assert.Equal(FrameError.None, FrameCodec.TryDecode(captured, FrameCodec.DefaultMaxFrameLength, out var decoded));
        Assert.Equal((int)type, decoded!.Paxos!.MsgType);
        Assert.Equal(captured, FrameCodec.Encode(decoded.GroupIndex, decoded.Header, decoded.Paxos));
    }

    [Fact]
    public void Flipped_byte_is_a_checksum_mismatch()
    {
        var frame = FrameCodec.Encode(3, 0, new PaxosMsg { MsgType = 1, InstanceID = 9, NodeID = Node11111, ProposalID = 4 });
        // The checksum samples only every 7th byte (PhxPaxos's NET_CRC32SKIP): flip one it covers.
        frame[14] ^= 0x01;
        Assert.Equal(FrameError.ChecksumMismatch, FrameCodec.TryDecode(frame, FrameCodec.DefaultMaxFrameLength, out _));
    }

    [Fact]
    public void Malformed_frames_are_refused_with_a_reason()
    {
        Assert.Equal(FrameError.TooShort, FrameCodec.TryDecode(new byte[5], 1000, out _));
        Assert.Equal(FrameError.TooLarge, FrameCodec.TryDecode(new byte[1001], 1000, out _));
        Assert.Equal(FrameError.BadHeaderLength, FrameCodec.TryDecode(Hex("00000000 ff00 0800"), 1000, out _));
        var good = FrameCodec.Encode(0, 0, new PaxosMsg { MsgType = 1 });
        Assert.Equal(FrameError.ChecksumMismatch, FrameCodec.TryDecode(good.AsSpan(0, good.Length - 1), 1000, out _));
    }

    [Fact]
    public void Required_fields_of_acceptor_state_are_emitted_even_when_zero()
    {
        var state = new AcceptorStateData
        {
            InstanceID = 0, PromiseID = 1, PromiseNodeID = Node11111, AcceptedID = 0, AcceptedNodeID = 0,
            AcceptedValue = ByteString.Empty, Checksum = 0,
        };
        Assert.Equal(Hex("0800 1001 18e7d68080f08f808001 2000 2800 3200 3800"), state.ToByteArray());
    }
}
