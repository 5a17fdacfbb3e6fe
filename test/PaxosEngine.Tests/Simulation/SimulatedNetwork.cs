using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Tests.Simulation;

/// <summary>
/// The network of a <see cref="Simulation"/>: every frame is delivered through the simulation's event queue
/// after a random delay (so frames overtake each other), or dropped, or delivered twice, and never crosses a
/// cut link. A UDP frame in flight reaches whichever incarnation of its destination is up when it lands. TCP
/// frames keep their order between two nodes, are neither dropped nor duplicated at random, and are lost with
/// their connection: when a link is cut or the destination restarts before they land.
/// </summary>
internal sealed class SimulatedNetwork(Simulation sim, double dropRate, double duplicateRate, int maxDelayMs)
{
    private readonly Dictionary<NodeId, Endpoint> _endpoints = [];
    private readonly HashSet<(NodeId From, NodeId To)> _cut = [];
    private readonly Dictionary<(NodeId From, NodeId To), long> _tcpLastDue = [];

    /// <summary>Frames handed to the network.</summary>
    public long Sent { get; private set; }

    /// <summary>Gives a starting node its transport (replacing its previous incarnation's).</summary>
    public ITransport Attach(SimNode node)
    {
        var endpoint = new Endpoint(this, node);
        _endpoints[node.Id] = endpoint;
        return endpoint;
    }

    /// <summary>Cuts a node off from every other node, both ways.</summary>
    public void Isolate(NodeId node)
    {
        foreach (var other in sim.Members.Where(m => m != node))
        {
            _cut.Add((node, other));
            _cut.Add((other, node));
        }
    }

    /// <summary>Cuts the link between two nodes, or only the direction from <paramref name="from"/>.</summary>
    public void Cut(NodeId from, NodeId to, bool oneWay)
    {
        _cut.Add((from, to));
        if (!oneWay)
        {
            _cut.Add((to, from));
        }
    }

    /// <summary>Restores every link and stops dropping and duplicating frames.</summary>
    public void Heal()
    {
        _cut.Clear();
        dropRate = 0;
        duplicateRate = 0;
    }

    private bool Send(Endpoint from, NodeId destination, byte[] frame, TransportKind preferred)
    {
        if (from.Stopped)
        {
            return false;
        }

        Sent++;
        if (FrameCodec.TryDecode(frame, int.MaxValue, out var decoded) != FrameError.None)
        {
            throw new InvalidOperationException($"node {from.Node.Index} sent a frame it cannot decode");
        }

        if (decoded!.Paxos is { } paxos)
        {
            sim.OnSend(from.Node, decoded.GroupIndex, paxos);
            if (sim.Options.LogLevel <= Microsoft.Extensions.Logging.LogLevel.Trace)
            {
                sim.NoteMessage(from.Node, destination, decoded.GroupIndex, paxos);
            }
        }

        var self = destination == from.Node.Id;
        var link = (from.Node.Id, destination);
        if (preferred == TransportKind.Tcp && !self)
        {
            if (_cut.Contains(link) || !_endpoints.TryGetValue(destination, out var connectedTo))
            {
                return true;
            }

            var due = Math.Max(_tcpLastDue.GetValueOrDefault(link), sim.NowMs + sim.Random.Next(maxDelayMs + 1));
            _tcpLastDue[link] = due;
            sim.ScheduleAt(due, () =>
            {
                if (_endpoints.GetValueOrDefault(destination) == connectedTo && connectedTo.Sink is { } sink && !connectedTo.Stopped && !_cut.Contains(link))
                {
                    sink.OnFrame(frame, TransportKind.Tcp);
                }
            });
            return true;
        }

        if (!self && (_cut.Contains(link) || sim.Random.NextDouble() < dropRate))
        {
            return true;
        }

        var copies = !self && sim.Random.NextDouble() < duplicateRate ? 2 : 1;
        for (var i = 0; i < copies; i++)
        {
            sim.Schedule(self ? 0 : sim.Random.Next(maxDelayMs + 1), () =>
            {
                if (_endpoints.TryGetValue(destination, out var to) && to.Sink is { } sink && !to.Stopped && !_cut.Contains(link))
                {
                    sink.OnFrame(frame, TransportKind.Udp);
                }
            });
        }

        return true;
    }

    private sealed class Endpoint(SimulatedNetwork network, SimNode node) : ITransport
    {
        public SimNode Node { get; } = node;

        public IFrameSink? Sink { get; private set; }

        public bool Stopped { get; private set; }

        public NodeId LocalNode => Node.Id;

        public void Start(IFrameSink sink) => Sink = sink;

        public bool Send(NodeId destination, byte[] frame, TransportKind preferred) => network.Send(this, destination, frame, preferred);

        public void Dispose() => Stopped = true;
    }
}
