using System.Net;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Tests.Protocol;

public sealed class NodeIdTests
{
    [Theory]
    [InlineData("10.123.102.77", 8001, 5577280471424835393ul)]
    [InlineData("127.0.0.1", 11111, 72058139498785639ul)]
    [InlineData("127.0.0.1", 11113, 72058139498785641ul)]
    public void Packs_like_phxpaxos(string ip, int port, ulong expected)
    {
        var id = NodeId.From(IPAddress.Parse(ip), port);
        Assert.Equal(expected, id.Value);
        Assert.Equal(ip, id.Address.ToString());
        Assert.Equal(port, id.Port);
        Assert.Equal(id, NodeId.Parse($"{ip}:{port}"));
        Assert.Equal($"{ip}:{port}", id.ToString());
    }

    [Fact]
    public void Refuses_ipv6_and_garbage()
    {
        Assert.Throws<ArgumentException>(() => NodeId.From(IPAddress.IPv6Loopback, 1));
        Assert.Throws<FormatException>(() => NodeId.Parse("not-an-address"));
        Assert.Throws<FormatException>(() => NodeId.Parse("[::1]:80"));
    }
}
