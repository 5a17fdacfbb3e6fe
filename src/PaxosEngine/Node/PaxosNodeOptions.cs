using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Node;

/// <summary>
/// Options of a <see cref="PaxosNode"/>, with PhxPaxos's defaults. Bindable from .NET configuration
/// (section <c>Paxos</c> by convention).
/// </summary>
public sealed partial class PaxosNodeOptions
{
    /// <summary>This node's address, <c>ip:port</c> (IPv4). UDP and TCP both use this port. Required.</summary>
    public string MyNode { get; set; } = string.Empty;

    /// <summary>Every member's address (this node included), <c>ip:port</c>. Required.</summary>
    public List<string> Members { get; set; } = [];

    /// <summary>Number of independent groups, 1–200 as PhxPaxos. Default 1.</summary>
    public int GroupCount { get; set; } = 1;

    /// <summary>Folder holding <c>g&lt;N&gt;/</c> per group; created if missing. Required.</summary>
    public string StoragePath { get; set; } = string.Empty;

    /// <summary>fsync acceptor writes before answering (PhxPaxos <c>bSync</c>). Default true; turning it off can lose chosen values on power loss.</summary>
    public bool Sync { get; set; } = true;

    /// <summary>
    /// Whether the node's groups share one write-ahead log (<c>sharedlog</c> in <see cref="StoragePath"/>), so that one
    /// fsync makes the writes of many groups durable at once; the groups' data files keep PhxPaxos's format and are
    /// fsynced at checkpoints. Default false (each group fsyncs its own files, as PhxPaxos does). With
    /// <see cref="Sync"/> and several groups busy at once it chooses more values per second for less CPU; see
    /// <see cref="Storage.LogStorageOptions.SharedLog"/>. A folder written with it must be opened by this engine (which
    /// replays the shared log) before a PhxPaxos node can use it.
    /// </summary>
    public bool SharedLog { get; set; }

    /// <summary>
    /// Whether the log writer makes the records of several groups durable with one flush of the disk (Linux; see
    /// <see cref="Storage.LogStorageOptions.FlushFilesTogether"/>): the data files stay PhxPaxos's, byte for byte, and a
    /// batch of records for many groups costs one <c>fdatasync</c> instead of one per group. Default true; false
    /// fsyncs each group's file on its own, as PhxPaxos does. Not used with <see cref="SharedLog"/>.
    /// </summary>
    public bool FlushFilesTogether { get; set; } = true;

    /// <summary>Skip fsync on all but every (N+1)-th acceptor write (PhxPaxos <c>iSyncInterval</c>). Default 0.</summary>
    public int SyncInterval { get; set; }

    /// <summary>Messages larger than this many bytes go over TCP. Default 4096, at most 65536.</summary>
    public int UdpMaxSize { get; set; } = 4096;

    /// <summary>
    /// Whether the small frames a thread sends to one peer in one burst leave in one datagram (see
    /// <see cref="Transport.NetworkTransportOptions.CoalesceDatagrams"/>). Default false: one PhxPaxos frame per
    /// datagram. Turn it on only when every member runs this engine; a PhxPaxos node drops such datagrams. With many
    /// groups busy at once it saves system calls, wake-ups and CPU per chosen value.
    /// </summary>
    public bool CoalesceDatagrams { get; set; }

    /// <summary>
    /// Whether, on Linux, the datagrams a thread sends in one burst leave with one <c>sendmmsg</c> call and those
    /// waiting on the UDP socket are read with one <c>recvmmsg</c> call (see
    /// <see cref="Transport.NetworkTransportOptions.BatchDatagrams"/>). Default true; every frame is still one PhxPaxos
    /// datagram.
    /// </summary>
    public bool BatchDatagrams { get; set; } = true;

    /// <summary>TCP read threads and write threads (each). Default 1.</summary>
    public int IoThreadCount { get; set; } = 1;

    /// <summary>
    /// Loop threads shared by the groups; 0 = one per processor core, at most one per group and at most
    /// <see cref="DefaultMaxLoopThreads"/>. A loop that serves one group writes that group's acceptor records itself
    /// (an fsync on the loop thread, as PhxPaxos does); a loop shared by several groups leaves fsyncs to the storage's
    /// writer threads so that one group's fsync does not hold up the others. Default 0.
    /// </summary>
    /// <remarks>
    /// PhxPaxos runs one loop thread per group. Here the default is one per core: with more loop threads than cores,
    /// nearly every message wakes a sleeping thread, and that sleep and wake-up cost more CPU than the Paxos work
    /// (16 groups on 2 cores: 209 µs of CPU per chosen value with 16 loops, 131 µs with 2). A loop shared by
    /// several groups runs them one message at a time, so a slow state machine delays the other groups of its loop.
    /// </remarks>
    public int LoopThreadCount { get; set; }

    /// <summary>Most loop threads a node starts when <see cref="LoopThreadCount"/> is 0 (however many cores): 16.</summary>
    public const int DefaultMaxLoopThreads = 16;

    /// <summary>Largest packed value (state machine id + value), bytes. Default 10 MiB (PhxPaxos <c>MAX_VALUE_SIZE</c>).</summary>
    public int MaxValueSize { get; set; } = 10 * 1024 * 1024;

    /// <summary>Size data files are preallocated to and cut at, bytes. Default 100 MiB.</summary>
    public long DataFileSize { get; set; } = 104_857_600;

    /// <summary>How long a proposal waits for its result; infinite = only the caller's token. Default 30 s.</summary>
    public TimeSpan ProposeTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Proposals that may wait per group before new ones get <c>TooManyWaiting</c>. Default 10000.</summary>
    public int MaxWaitingProposals { get; set; } = 10_000;

    /// <summary>
    /// UNSAFE for code that blocks after awaiting a proposal. When true, the task of a proposal whose value is chosen
    /// completes with its awaiting code run at once on the engine thread that learned it (a group's loop thread or
    /// a receive thread), as <c>UnboundedChannelOptions.AllowSynchronousContinuations</c> does for channels, instead
    /// of handing the result to the thread pool; any other outcome still goes through the thread pool. A caller that
    /// proposes again right after it is answered then costs no thread-pool hand-off and no thread wake-up: a third to
    /// half less CPU per proposal on busy nodes. The engine waits while that code runs, up to its next asynchronous
    /// wait, so it must not block (no <c>.Result</c>, <c>Wait()</c> or locks held long), must not dispose the node,
    /// and should be short; code that needs more can start with <c>await Task.Yield()</c>. Code that resumes on a
    /// scheduler of its own (Orleans grains, a UI) is not affected: its continuation is queued there either way.
    /// Default false: every result reaches its awaiting code through the thread pool.
    /// </summary>
    public bool AllowSynchronousContinuations { get; set; }

    /// <summary>
    /// Batch values that wait while an instance is in flight into the next instance. Default true; false = one
    /// value per instance, as PhxPaxos Propose. A value on an idle group goes at once, except right after one of
    /// this node's instances was chosen: then the next instance waits up to a millisecond until as many values are
    /// ready as were out a moment before, so that callers who propose again as soon as they are answered share one
    /// instance instead of taking turns in two half-full ones. When such a wait runs out (callers that do not come
    /// straight back), the next 64 instances go without it.
    /// </summary>
    public bool AutoBatch { get; set; } = true;

    /// <summary>Most values in one instance when batching automatically. Default 1000.</summary>
    public int MaxBatchCount { get; set; } = 1000;

    /// <summary>Byte cap of one batch (PhxPaxos: 512000).</summary>
    public int MaxBatchBytes { get; set; } = 512_000;

    /// <summary>
    /// BatchProposeAsync when the group has no instance in flight. False (default): PhxPaxos's rule, the batch
    /// waits until <see cref="BatchCount"/> values wait, their bytes reach <see cref="MaxBatchBytes"/>, or the
    /// oldest waited <see cref="BatchDelay"/>; with fewer callers per group than the count, every batch waits
    /// the delay. True: the values waiting go at once, and values that arrive while an instance is in flight
    /// gather and go together in the next one (up to <see cref="MaxBatchCount"/> and <see cref="MaxBatchBytes"/>):
    /// lower latency at light load and no timer wait. Right after an instance of this node's values is chosen, the
    /// next batch waits up to a millisecond for the callers just answered, as <see cref="AutoBatch"/> describes.
    /// </summary>
    public bool BatchFlushWhenIdle { get; set; }

    /// <summary>
    /// UNSAFE when a node's data folder may have been emptied: a group that starts with no log votes at once, as
    /// PhxPaxos does. By default such a group first asks every other member for its state, or, when the group
    /// already has history, learns and gets a no-op chosen by the other members before it promises or accepts
    /// anything, so a node whose disk was replaced cannot vote away values it had accepted. Turn this on only for
    /// the first start of a cluster shared with PhxPaxos nodes that holds fewer of this project's nodes than a
    /// majority needs besides the PhxPaxos ones (PhxPaxos nodes do not answer the survey). Default false.
    /// </summary>
    public bool VoteWithEmptyLog { get; set; }

    /// <summary>BatchProposeAsync with <see cref="BatchFlushWhenIdle"/> false: flush when this many values wait (PhxPaxos default 5).</summary>
    public int BatchCount { get; set; } = 5;

    /// <summary>BatchProposeAsync with <see cref="BatchFlushWhenIdle"/> false: flush when the oldest value waited this long (PhxPaxos default 20 ms).</summary>
    public TimeSpan BatchDelay { get; set; } = TimeSpan.FromMilliseconds(20);

    /// <summary>Catch-up values sent per second, shared by all groups (PhxPaxos: 100000).</summary>
    public int LearnerSendQps { get; set; } = 100_000;

    /// <summary>
    /// Manage membership through the log (PhxPaxos <c>bUseMembership</c>): the first proposal creates a
    /// cluster id and later starts ignore <see cref="Members"/>; members are changed with AddMemberAsync
    /// and friends. Default false: members come from <see cref="Members"/> on every start.
    /// </summary>
    public bool UseMembership { get; set; }

    /// <summary>
    /// Makes this node a follower of the member at this address (<c>ip:port</c>): it receives every
    /// value that member learns, never proposes or votes, and catches up from the other members when
    /// the followed one is down. A follower is not in <see cref="Members"/>. Default: not a follower.
    /// </summary>
    public string? FollowTo { get; set; }

    /// <summary>Elect a master in every group (PhxPaxos <c>bIsUseMaster</c>). Default false.</summary>
    public bool UseMaster { get; set; }

    /// <summary>The master lease; at least 1 s. Default 10 s.</summary>
    public TimeSpan MasterLease { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How often a learner asks its peers how far they are (plus up to 20% jitter). Default 2500 ms as PhxPaxos.</summary>
    public TimeSpan AskForLearnInterval { get; set; } = TimeSpan.FromMilliseconds(2500);

    /// <summary>Validates the options and resolves the addresses.</summary>
    /// <exception cref="ArgumentException">An option is missing or out of range; the message names it.</exception>
    public (NodeId Me, IReadOnlyList<NodeId> Members) Validate()
    {
        if (string.IsNullOrWhiteSpace(MyNode))
        {
            throw new ArgumentException("Paxos option MyNode (this node's ip:port) is required.");
        }

        if (string.IsNullOrWhiteSpace(StoragePath))
        {
            throw new ArgumentException("Paxos option StoragePath is required.");
        }

        if (GroupCount is < 1 or > 200)
        {
            throw new ArgumentException($"Paxos option GroupCount must be 1..200; it is {GroupCount}.");
        }

        if (UdpMaxSize is < 64 or > 65536)
        {
            throw new ArgumentException($"Paxos option UdpMaxSize must be 64..65536; it is {UdpMaxSize}.");
        }

        if (MaxValueSize < 1024)
        {
            throw new ArgumentException($"Paxos option MaxValueSize must be at least 1024; it is {MaxValueSize}.");
        }

        var me = NodeId.Parse(MyNode);
        var members = new List<NodeId>();
        foreach (var m in Members)
        {
            var id = NodeId.Parse(m);
            if (!members.Contains(id))
            {
                members.Add(id);
            }
        }

        if (!string.IsNullOrWhiteSpace(FollowTo))
        {
            var followed = NodeId.Parse(FollowTo);
            if (followed == me || members.Contains(me))
            {
                throw new ArgumentException($"Paxos option FollowTo: a follower follows another node and is not itself in Members ({me}).");
            }
        }

        if (members.Count == 0)
        {
            throw new ArgumentException("Paxos option Members must list every member's ip:port.");
        }

        ArgumentNullException.ThrowIfNull(PeerAuthentication, nameof(PeerAuthentication));
        _ = PeerAuthentication.ResolveKey();

        return (me, members);
    }
}
