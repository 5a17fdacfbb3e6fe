using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Tests.Support;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Tests.Transport;

/// <summary>The conformance suite against the in-memory network (no faults).</summary>
public sealed class InMemoryTransportConformanceTests : TransportConformanceTests
{
    private readonly InMemoryNetwork _network = new(seed: 12345);
    private int _nextPort = 20000;

    protected override ITransport CreateTransport(NodeId node) => _network.CreateTransport(node);

    protected override NodeId NewNodeId() => NodeId.From(System.Net.IPAddress.Loopback, Interlocked.Increment(ref _nextPort));
}
