using System.Collections.Concurrent;
using System.Threading.Channels;
using Orleans.Paxos.Engine.Node;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Grains.Hosting;

/// <summary>
/// A transport for several Paxos nodes in one process (tests and single-process demos): frames go from
/// node to node through per-node channels drained by one delivery task each. Nothing is lost unless the
/// destination is stopped or absent. Register one shared instance as the <see cref="IPaxosTransportFactory"/>.
/// </summary>
public sealed class InProcessPaxosNetwork : IPaxosTransportFactory
{
    private readonly ConcurrentDictionary<NodeId, Endpoint> _endpoints = new();

    /// <inheritdoc />
    public ITransport? Create(PaxosNodeOptions options, NodeId me) => new Endpoint(this, me);

    /// <summary>Whether a node's transport is currently attached (started and not disposed).</summary>
    public bool IsAttached(NodeId node) => _endpoints.ContainsKey(node);

    private sealed class Endpoint(InProcessPaxosNetwork network, NodeId node) : ITransport
    {
        private readonly Channel<(byte[] Frame, TransportKind Via)> _inbox = Channel.CreateBounded<(byte[], TransportKind)>(
            new BoundedChannelOptions(100_000) { SingleReader = true, FullMode = BoundedChannelFullMode.DropWrite });

        private Task? _delivery;

        public NodeId LocalNode { get; } = node;

        public void Start(IFrameSink sink)
        {
            network._endpoints[LocalNode] = this;
            _delivery = Task.Run(async () =>
            {
                while (await _inbox.Reader.WaitToReadAsync().ConfigureAwait(false))
                {
                    while (_inbox.Reader.TryRead(out var item))
                    {
                        sink.OnFrame(item.Frame, item.Via);
                    }
                }
            });
        }

        public bool Send(NodeId destination, byte[] frame, TransportKind preferred)
        {
            if (!network._endpoints.TryGetValue(destination, out var target))
            {
                return false;
            }

            var via = preferred == TransportKind.Tcp || frame.Length > 4096 ? TransportKind.Tcp : TransportKind.Udp;
            return target._inbox.Writer.TryWrite((frame, via));
        }

        public void Dispose()
        {
            network._endpoints.TryRemove(new KeyValuePair<NodeId, Endpoint>(LocalNode, this));
            _inbox.Writer.TryComplete();
            _delivery?.Wait(TimeSpan.FromSeconds(5));
        }
    }
}
