using System.Diagnostics;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Tests.Support;

/// <summary>
/// Faults applied by an <see cref="InMemoryNetwork"/> to every frame sent. Rates are probabilities in [0, 1].
/// </summary>
public sealed record FaultOptions
{
    /// <summary>No faults: every frame is delivered once, at once, in order.</summary>
    public static readonly FaultOptions None = new();

    /// <summary>Probability that a frame is lost.</summary>
    public double DropRate { get; init; }

    /// <summary>Probability that a delivered frame is delivered a second time (with its own delay).</summary>
    public double DuplicateRate { get; init; }

    /// <summary>Smallest delivery delay.</summary>
    public TimeSpan MinDelay { get; init; }

    /// <summary>Largest delivery delay (uniform between <see cref="MinDelay"/> and this).</summary>
    public TimeSpan MaxDelay { get; init; }

    /// <summary>
    /// Probability that a UDP frame is held back by an extra delay so that later frames overtake it.
    /// TCP frames keep their order per (source, destination) pair, as a real connection does.
    /// </summary>
    public double ReorderRate { get; init; }
}

/// <summary>
/// A simulated network for tests. Transports created from it deliver frames to each other through a
/// timer-ordered queue per destination, drained by one dedicated thread per started transport, so
/// delays and reordering are real. Every fault decision (drop, duplicate, delay, reorder) is drawn from one
/// seeded <see cref="Random"/> in the order frames are sent, so a single-threaded sender replays exactly;
/// thread interleavings of concurrent senders may still vary. Thread-safe.
/// </summary>
/// <remarks>
/// Partitions are checked when a frame is sent: a frame already in flight when a partition is set is still
/// delivered, as a packet already on the wire would be. A frame sent to a node with no started transport is lost.
/// </remarks>
public sealed class InMemoryNetwork
{
    private readonly object _gate = new();
    private readonly Random _random;
    private readonly Dictionary<NodeId, InMemoryTransport> _nodes = [];
    private readonly HashSet<(NodeId From, NodeId To)> _blocked = [];
    private readonly HashSet<NodeId> _isolated = [];
    private readonly Dictionary<(NodeId From, NodeId To), long> _lastTcpDue = [];
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private FaultOptions _faults;
    private long _sequence;
    private long _sent;
    private long _delivered;
    private long _dropped;
    private long _droppedByPartition;
    private long _droppedNoReceiver;
    private long _duplicated;
    private Exception? _sinkFailure;

    /// <summary>Sees every frame before partitions and faults apply (from, to, frame), so a test can act at an exact point of a protocol.</summary>
    public Action<NodeId, NodeId, byte[]>? SendObserver { get; set; }

    /// <summary>Frames for which this returns true (from, to, frame) are dropped, as a partition would: a cut of chosen message types.</summary>
    public Func<NodeId, NodeId, byte[], bool>? DropFilter { get; set; }

    /// <summary>Creates a network whose fault decisions come from <paramref name="seed"/>.</summary>
    public InMemoryNetwork(int seed, FaultOptions? faults = null)
    {
        Seed = seed;
        _random = new Random(seed);
        _faults = faults ?? FaultOptions.None;
    }

    /// <summary>The seed of the fault decisions; print it when a test fails so that the run can be replayed.</summary>
    public int Seed { get; }

    /// <summary>Frames at or below this size report <see cref="TransportKind.Udp"/> unless TCP was asked for (as the real transport).</summary>
    public int UdpMaxSize { get; init; } = 4096;

    /// <summary>Largest frame accepted; larger frames are refused by <see cref="ITransport.Send"/>.</summary>
    public int MaxFrameLength { get; init; } = FrameCodec.DefaultMaxFrameLength;

    /// <summary>The faults applied to frames sent from now on. Can be changed while running.</summary>
    public FaultOptions Faults
    {
        get { lock (_gate) { return _faults; } }
        set { lock (_gate) { _faults = value ?? FaultOptions.None; } }
    }

    /// <summary>Frames accepted by <see cref="ITransport.Send"/>.</summary>
    public long Sent => Interlocked.Read(ref _sent);

    /// <summary>Frames handed to a sink (duplicates included).</summary>
    public long Delivered => Interlocked.Read(ref _delivered);

    /// <summary>Frames lost by the <see cref="FaultOptions.DropRate"/> fault.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Frames lost to a partition or isolation.</summary>
    public long DroppedByPartition => Interlocked.Read(ref _droppedByPartition);

    /// <summary>Frames lost because the destination had no started transport (or stopped before delivery).</summary>
    public long DroppedNoReceiver => Interlocked.Read(ref _droppedNoReceiver);

    /// <summary>Extra copies scheduled by the <see cref="FaultOptions.DuplicateRate"/> fault.</summary>
    public long Duplicated => Interlocked.Read(ref _duplicated);

    /// <summary>The first exception thrown by a sink, if any (delivery continues after it).</summary>
    public Exception? SinkFailure => Volatile.Read(ref _sinkFailure);

    /// <summary>
    /// Creates the transport of <paramref name="node"/>. A node can be created again after its previous
    /// transport was disposed (a restart).
    /// </summary>
    /// <exception cref="InvalidOperationException">A live transport for the node already exists.</exception>
    public ITransport CreateTransport(NodeId node)
    {
        lock (_gate)
        {
            if (_nodes.ContainsKey(node))
            {
                throw new InvalidOperationException($"Node {node} already has a live in-memory transport; dispose it before creating another.");
            }

            var transport = new InMemoryTransport(this, node);
            _nodes.Add(node, transport);
            return transport;
        }
    }

    /// <summary>Stops frames from <paramref name="a"/> to <paramref name="b"/>, and the other way unless <paramref name="oneWay"/>.</summary>
    public void Partition(NodeId a, NodeId b, bool oneWay = false)
    {
        lock (_gate)
        {
            _blocked.Add((a, b));
            if (!oneWay)
            {
                _blocked.Add((b, a));
            }
        }
    }

    /// <summary>Removes the partitions between <paramref name="a"/> and <paramref name="b"/> in both directions.</summary>
    public void Heal(NodeId a, NodeId b)
    {
        lock (_gate)
        {
            _blocked.Remove((a, b));
            _blocked.Remove((b, a));
        }
    }

    /// <summary>Stops every frame to and from <paramref name="node"/> until <see cref="HealAll"/>.</summary>
    public void Isolate(NodeId node)
    {
        lock (_gate)
        {
            _isolated.Add(node);
        }
    }

    /// <summary>Removes every partition and isolation.</summary>
    public void HealAll()
    {
        lock (_gate)
        {
            _blocked.Clear();
            _isolated.Clear();
        }
    }

    private long NowTicks => _clock.Elapsed.Ticks;

    private bool Send(InMemoryTransport source, NodeId destination, byte[] frame, TransportKind preferred)
    {
        ArgumentNullException.ThrowIfNull(frame);
        if (frame.Length > MaxFrameLength)
        {
            return false;
        }

        var via = preferred == TransportKind.Tcp || frame.Length > UdpMaxSize ? TransportKind.Tcp : TransportKind.Udp;
        var from = source.LocalNode;
        SendObserver?.Invoke(from, destination, frame);
        InMemoryTransport? target;
        long due;
        long duplicateDue = -1;
        lock (_gate)
        {
            if (source.IsStopped)
            {
                return false;
            }

            Interlocked.Increment(ref _sent);

            // Draw every decision in a fixed order whatever the outcome, so that the n-th frame sent always
            // consumes the same random numbers and a seed replays.
            var faults = _faults;
            var drop = _random.NextDouble() < faults.DropRate;
            var duplicate = _random.NextDouble() < faults.DuplicateRate;
            var reorder = _random.NextDouble() < faults.ReorderRate;
            var delay = NextDelay(faults);
            var duplicateDelay = NextDelay(faults);
            var reorderDelay = Math.Max(TimeSpan.FromMilliseconds(2).Ticks, 2 * faults.MaxDelay.Ticks) * _random.NextDouble();

            if (_isolated.Contains(from) || _isolated.Contains(destination) || _blocked.Contains((from, destination))
                || DropFilter?.Invoke(from, destination, frame) == true)
            {
                Interlocked.Increment(ref _droppedByPartition);
                return true;
            }

            if (drop)
            {
                Interlocked.Increment(ref _dropped);
                return true;
            }

            if (!_nodes.TryGetValue(destination, out target) || !target.IsStarted)
            {
                Interlocked.Increment(ref _droppedNoReceiver);
                return true;
            }

            var now = NowTicks;
            due = now + delay;
            if (via == TransportKind.Tcp)
            {
                // A stream never reorders: a frame is not due before the previous frame of the same pair.
                var key = (from, destination);
                if (_lastTcpDue.TryGetValue(key, out var last) && last > due)
                {
                    due = last;
                }

                _lastTcpDue[key] = due;
            }
            else if (reorder)
            {
                due += (long)reorderDelay;
            }

            if (duplicate)
            {
                Interlocked.Increment(ref _duplicated);
                duplicateDue = Math.Max(due, now + duplicateDelay);
            }

            // The sequence number keeps equal due times in send order.
            target.Enqueue(new Pending(frame.AsSpan().ToArray(), via), due, _sequence++);
            if (duplicateDue >= 0)
            {
                target.Enqueue(new Pending(frame.AsSpan().ToArray(), via), duplicateDue, _sequence++);
            }
        }

        return true;
    }

    private long NextDelay(FaultOptions faults)
    {
        var min = faults.MinDelay.Ticks;
        var max = Math.Max(min, faults.MaxDelay.Ticks);
        return min + (long)((max - min) * _random.NextDouble());
    }

    private void Remove(InMemoryTransport transport)
    {
        lock (_gate)
        {
            if (_nodes.TryGetValue(transport.LocalNode, out var current) && ReferenceEquals(current, transport))
            {
                _nodes.Remove(transport.LocalNode);
            }
        }
    }

    private readonly record struct Pending(byte[] Frame, TransportKind Via);

    /// <summary>
    /// One node's end of the network. Its delivery thread waits for the earliest due frame and hands it
    /// to the sink; frames are delivered one at a time per node.
    /// </summary>
    private sealed class InMemoryTransport : ITransport
    {
        private readonly InMemoryNetwork _network;
        private readonly object _queueGate = new();
        private readonly PriorityQueue<Pending, (long Due, long Sequence)> _queue = new();
        private Thread? _thread;
        private IFrameSink? _sink;
        private volatile bool _started;
        private volatile bool _stopped;

        public InMemoryTransport(InMemoryNetwork network, NodeId node)
        {
            _network = network;
            LocalNode = node;
        }

        public NodeId LocalNode { get; }

        public bool IsStarted => _started && !_stopped;

        public bool IsStopped => _stopped;

        public void Start(IFrameSink sink)
        {
            ArgumentNullException.ThrowIfNull(sink);
            lock (_queueGate)
            {
                ObjectDisposedException.ThrowIf(_stopped, this);
                if (_started)
                {
                    throw new InvalidOperationException($"The in-memory transport of {LocalNode} is already started.");
                }

                _sink = sink;
                _thread = new Thread(DeliveryLoop) { IsBackground = true, Name = $"inmem-deliver {LocalNode}" };
                _started = true;
                _thread.Start();
            }
        }

        public bool Send(NodeId destination, byte[] frame, TransportKind preferred) =>
            _network.Send(this, destination, frame, preferred);

        public void Enqueue(Pending pending, long due, long sequence)
        {
            lock (_queueGate)
            {
                if (_stopped)
                {
                    Interlocked.Increment(ref _network._droppedNoReceiver);
                    return;
                }

                _queue.Enqueue(pending, (due, sequence));
                Monitor.PulseAll(_queueGate);
            }
        }

        public void Dispose()
        {
            Thread? thread;
            lock (_queueGate)
            {
                if (_stopped)
                {
                    return;
                }

                _stopped = true;
                Interlocked.Add(ref _network._droppedNoReceiver, _queue.Count);
                _queue.Clear();
                thread = _thread;
                Monitor.PulseAll(_queueGate);
            }

            _network.Remove(this);

            // The sink may dispose its own transport from the delivery thread; joining itself would deadlock.
            if (thread is not null && thread != Thread.CurrentThread)
            {
                thread.Join();
            }
        }

        private void DeliveryLoop()
        {
            var sink = _sink!;
            while (true)
            {
                Pending next;
                lock (_queueGate)
                {
                    while (true)
                    {
                        if (_stopped)
                        {
                            return;
                        }

                        if (_queue.TryPeek(out _, out var priority))
                        {
                            var wait = priority.Due - _network.NowTicks;
                            if (wait <= 0)
                            {
                                next = _queue.Dequeue();
                                break;
                            }

                            Monitor.Wait(_queueGate, TimeSpan.FromTicks(Math.Max(wait, TimeSpan.TicksPerMillisecond / 10)));
                        }
                        else
                        {
                            Monitor.Wait(_queueGate);
                        }
                    }
                }

                try
                {
                    sink.OnFrame(next.Frame, next.Via);
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    // A throwing sink would kill this thread and the test host with it; keep the first
                    // failure so that the test can assert on it, and keep delivering.
                    Interlocked.CompareExchange(ref _network._sinkFailure, ex, null);
                }

                Interlocked.Increment(ref _network._delivered);
            }
        }
    }
}
