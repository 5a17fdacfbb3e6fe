using Google.Protobuf;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Hashing;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Tests.Consensus;

public sealed class AcceptorTests
{
    private const ulong Me = 3;

    private static PaxosMsg Prepare(ulong proposalId, ulong node) =>
        new() { MsgType = (int)PaxosMsgType.Prepare, InstanceID = 0, NodeID = node, ProposalID = proposalId };

    private static PaxosMsg Accept(ulong proposalId, ulong node, string value) =>
        new() { MsgType = (int)PaxosMsgType.Accept, InstanceID = 0, NodeID = node, ProposalID = proposalId, Value = ByteString.CopyFromUtf8(value) };

    [Fact]
    public void Promises_a_higher_or_equal_ballot_and_asks_to_persist_it()
    {
        var acceptor = new Acceptor(Me);
        var reply = acceptor.OnPrepare(Prepare(5, 1), 0, out var record);
        Assert.NotNull(record);
        Assert.Equal(0ul, reply.RejectByPromiseID);
        Assert.Equal(new Ballot(5, 1), acceptor.Promised);
        Assert.Equal(5ul, record!.PromiseID);

        acceptor.OnPrepare(Prepare(5, 1), 0, out var again);
        Assert.NotNull(again);
    }

    [Fact]
    public void Rejects_a_lower_ballot_without_persisting()
    {
        var acceptor = new Acceptor(Me);
        acceptor.OnPrepare(Prepare(5, 2), 0, out _);
        var reply = acceptor.OnPrepare(Prepare(5, 1), 0, out var record);
        Assert.Null(record);
        Assert.Equal(5ul, reply.RejectByPromiseID);

        var acceptReply = acceptor.OnAccept(Accept(4, 9, "x"), 0, out record);
        Assert.Null(record);
        Assert.Equal(5ul, acceptReply.RejectByPromiseID);
        Assert.True(acceptor.Accepted.IsNull);
    }

    [Fact]
    public void Reports_its_accepted_value_in_a_later_promise()
    {
        var acceptor = new Acceptor(Me);
        acceptor.OnAccept(Accept(2, 1, "v1"), 0, out _);
        var reply = acceptor.OnPrepare(Prepare(3, 2), 0, out var record);
        Assert.Equal(2ul, reply.PreAcceptID);
        Assert.Equal(1ul, reply.PreAcceptNodeID);
        Assert.Equal("v1", reply.Value.ToStringUtf8());
        Assert.Equal("v1", record!.AcceptedValue.ToStringUtf8());
    }

    [Fact]
    public void Keeps_the_promise_across_instances_but_forgets_the_value()
    {
        var acceptor = new Acceptor(Me);
        acceptor.OnAccept(Accept(7, 1, "v"), 0, out _);
        acceptor.NewInstance();
        Assert.Equal(1ul, acceptor.InstanceId);
        Assert.Equal(new Ballot(7, 1), acceptor.Promised);
        Assert.True(acceptor.Accepted.IsNull);
        Assert.True(acceptor.AcceptedValue.IsEmpty);
    }

    [Fact]
    public void Chains_the_value_checksum_like_phxpaxos()
    {
        var acceptor = new Acceptor(Me);
        var value = new byte[] { 1, 0, 0, 0, (byte)'h', (byte)'e', (byte)'l', (byte)'l', (byte)'o', (byte)'-', (byte)'p', (byte)'h', (byte)'x', (byte)'-', (byte)'1' };
        acceptor.OnAccept(new PaxosMsg { MsgType = 3, NodeID = 1, ProposalID = 1, Value = ByteString.CopyFrom(value) }, 0, out var record);
        Assert.Equal(2244960119u, record!.Checksum);
        Assert.Equal(SkipCrc32.Compute(0, value, 8), record.Checksum);

        // Instance > 0 with an unknown previous checksum stores 0, as PhxPaxos does.
        acceptor.NewInstance();
        acceptor.OnAccept(new PaxosMsg { MsgType = 3, InstanceID = 1, NodeID = 1, ProposalID = 1, Value = ByteString.CopyFrom(value) }, 0, out record);
        Assert.Equal(0u, record!.Checksum);
    }
}
