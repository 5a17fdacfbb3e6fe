using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Hashing;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Consensus;

/// <summary>What the learner needs from its group beyond <see cref="IPeerHost"/>.</summary>
internal interface ILearnerHost : IPeerHost
{
    /// <summary>A member surveys the group (its AskForLearn carries a survey nonce): answer it.</summary>
    void AnswerSurvey(PaxosMsg ask);

    /// <summary>A member answered this node's survey.</summary>
    void OnSurveyAnswer(PaxosMsg answer);

    /// <summary>A member's log starts after this node's current instance: a checkpoint is needed.</summary>
    void OnPeerCleanedPastUs(PaxosMsg message);
}

/// <summary>
/// The learner (PhxPaxos <c>Learner</c>): learns the value of the current instance from a commit
/// (ProposerSendSuccess) or from a peer's stream, and catches up a node that is behind (ask-for-learn,
/// now-instance, confirm, streamed values with acks). It writes learned records; the group executes the
/// learned value and moves to the next instance. Serving others is the <see cref="LearnerSender"/>'s job.
/// </summary>
/// <remarks>Owned by the group's loop thread; <see cref="HighestSeenInstanceId"/> may be read from any thread.</remarks>
internal sealed partial class Learner
{
    /// <summary>The receiver acknowledges every this many instances (PhxPaxos <c>LearnerReceiver_ACK_LEAD</c>).</summary>
    public const int ReceiverAckLead = 4;

    /// <summary>A value carried above this many instances' gap also ships the system and master variables.</summary>
    private const int ShipVariablesGap = 50;

    private readonly ILearnerHost _host;
    private readonly GroupSettings _settings;
    private readonly Acceptor _acceptor;
    private readonly ILogStorage _storage;
    private readonly LearnerSender _sender;
    private readonly SystemVariablesStateMachine _membership;
    private readonly MasterStateMachine _master;
    private readonly Random _random;
    private readonly ILogger _logger;
    private readonly Dictionary<ulong, long> _followers = [];
    private ulong _highestSeenInstanceId;
    private bool _isLearning;
    private ulong _lastAckInstanceId;
    private long _askForLearnTimerId;

    /// <summary>While the group does not vote: the last accept request seen for the current instance (never persisted, never answered).</summary>
    private ulong _observedInstance = ulong.MaxValue;
    private Ballot _observedBallot;
    private ByteString _observedValue = ByteString.Empty;

    public Learner(
        ILearnerHost host,
        GroupSettings settings,
        Acceptor acceptor,
        ILogStorage storage,
        LearnerSender sender,
        SystemVariablesStateMachine membership,
        MasterStateMachine master,
        Random random,
        ILogger logger)
    {
        _host = host;
        _settings = settings;
        _acceptor = acceptor;
        _storage = storage;
        _sender = sender;
        _membership = membership;
        _master = master;
        _random = random;
        _logger = logger;
    }

    /// <summary>The value of the current instance is learned (and its record written); the group executes it next.</summary>
    public bool IsLearned { get; private set; }

    /// <summary>The learned value (empty until <see cref="IsLearned"/>).</summary>
    public ByteString LearnedValue { get; private set; } = ByteString.Empty;

    /// <summary>The chained checksum of the learned value.</summary>
    public uint LearnedChecksum { get; private set; }

    /// <summary>The highest instance id seen from a peer; may be slightly stale. Thread-safe.</summary>
    public ulong HighestSeenInstanceId => Volatile.Read(ref _highestSeenInstanceId);

    /// <summary>This node is not behind what it has seen of its peers (PhxPaxos <c>IsIMLatest</c>).</summary>
    public bool IsLatest => Now + 1 >= _highestSeenInstanceId;

    private ulong Now => _host.CurrentInstanceId;

    /// <summary>This node only learns: it follows a member and never proposes or votes.</summary>
    private bool IsFollower => _settings.FollowToNodeId != 0;

    /// <summary>A commit: learn the value if this acceptor accepted exactly the committed ballot.</summary>
    public void OnProposerSendSuccess(PaxosMsg message)
    {
        if (message.InstanceID != Now || IsLearned)
        {
            return;
        }

        // Learn only if this acceptor accepted exactly the committed ballot: the value is then known locally.
        var ballot = new Ballot(message.ProposalID, message.NodeID);
        if (_acceptor.Accepted.IsNull || _acceptor.Accepted != ballot)
        {
            // A node that does not vote has no accepted value, but may have seen that ballot's accept request.
            LearnObserved(ballot);
            return;
        }

        IsLearned = true;
        LearnedValue = _acceptor.AcceptedValue;
        LearnedChecksum = _acceptor.Checksum;
        TransmitToFollowers(message.ProposalID, message.NodeID);
    }

    /// <summary>
    /// An accept request for the current instance that the group does not vote on (its voting gate is closed): no
    /// promise, no accept, no reply. Its value is remembered, so that the commit that names its ballot
    /// (<see cref="LearnObserved"/>) can be learned at once, as a voting acceptor learns what it accepted.
    /// Without it a rebuilding node in a busy group would learn only by catch-up, stay a few instances behind
    /// and could neither propose (it is not the latest) nor see an instance complete (its gate would stay closed).
    /// </summary>
    public void ObserveAccept(PaxosMsg message)
    {
        if (message.MsgType != (int)PaxosMsgType.Accept || message.InstanceID != Now)
        {
            return;
        }

        var ballot = new Ballot(message.ProposalID, message.NodeID);
        if (_observedInstance == Now && ballot < _observedBallot)
        {
            return;
        }

        _observedInstance = Now;
        _observedBallot = ballot;
        _observedValue = message.Value;
    }

    /// <summary>
    /// The current instance was chosen with <paramref name="ballot"/> (a commit, or an implicit one); when this
    /// node saw that ballot's accept request without voting, it learns the value. Safe as any learning: one
    /// ballot carries one value, and only a majority's acceptance makes a commit.
    /// </summary>
    private void LearnObserved(Ballot ballot)
    {
        if (IsLearned || _observedInstance != Now || _observedBallot != ballot)
        {
            return;
        }

        var value = _observedValue;
        _observedInstance = ulong.MaxValue;
        _observedBallot = default;
        _observedValue = ByteString.Empty;
        if (!TryWriteLearnedRecord(ballot, value, sync: false, new LearnedWrite(_host, Now), out var checksum))
        {
            return;
        }

        IsLearned = true;
        Telemetry.EngineInstruments.AddForGroup(Telemetry.EngineInstruments.LearnValuesReceived, _host.GroupIndex);
        LearnedValue = value;
        LearnedChecksum = checksum;
    }

    /// <summary>
    /// This node's proposer got <paramref name="ballot"/> chosen without this acceptor's vote: learn the
    /// proposer's <paramref name="value"/>, writing its record with an fsync; <paramref name="durable"/> hears
    /// when it is durable. False when the record could not be written (the group stopped).
    /// </summary>
    public bool LearnFromProposer(Ballot ballot, ByteString value, IPutCallback durable)
    {
        if (!TryWriteLearnedRecord(ballot, value, sync: true, durable, out var checksum))
        {
            return false;
        }

        IsLearned = true;
        LearnedValue = value;
        LearnedChecksum = checksum;
        return true;
    }

    /// <summary>Forgets the learned value: the group moved to a new instance.</summary>
    public void ResetLearnedValue()
    {
        IsLearned = false;
        LearnedValue = ByteString.Empty;
        LearnedChecksum = 0;
    }

    /// <summary>The group restarted at a new instance (a checkpoint was installed): no catch-up is under way.</summary>
    public void Reset()
    {
        ResetLearnedValue();
        _isLearning = false;
        _lastAckInstanceId = 0;
    }

    /// <summary>Raises the highest instance seen from a member.</summary>
    public void SetSeen(ulong instanceId)
    {
        if (instanceId > _highestSeenInstanceId)
        {
            _highestSeenInstanceId = instanceId;
        }
    }

    /// <summary>Arms the ask-for-learn timer: after <paramref name="delayMs"/>, or the regular interval with jitter.</summary>
    public void ArmAskForLearnTimer(int? delayMs = null)
    {
        _host.RemoveTimer(_askForLearnTimerId);
        _askForLearnTimerId = _host.AddTimer(
            delayMs ?? (_settings.AskForLearnBaseMs + _random.Next(_settings.AskForLearnJitterMs)),
            TimerKind.AskForLearn);
    }

    /// <summary>Time to ask the others how far they are.</summary>
    public void OnAskForLearnTimer(long timerId)
    {
        if (timerId != _askForLearnTimerId)
        {
            return;
        }

        _askForLearnTimerId = 0;
        _isLearning = false;
        var ask = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.AskForLearn,
            InstanceID = Now,
            NodeID = _settings.MyNodeId,
        };
        if (IsFollower)
        {
            // Asks the followed node to push every value it learns (and still asks the others to catch up).
            ask.ProposalNodeID = _settings.FollowToNodeId;
        }

        _host.SendToOthers(ask, TransportKind.Tcp);
        ArmAskForLearnTimer();
    }

    /// <summary>A node asks how far this one is (and may be behind, or survey the group, or follow this node).</summary>
    public void OnAskForLearn(PaxosMsg message)
    {
        // Only a member's progress can tell this node it is behind. Taken from anyone (as PhxPaxos does), one
        // stray datagram naming a far instance would keep this node from proposing for good: it would wait to
        // catch up with instances nobody has. Followers still ask and are served below.
        if (_host.IsMember(message.NodeID))
        {
            SetSeen(message.InstanceID);
        }

        if (message.ProposalID != 0 && message.NodeID != _settings.MyNodeId && _host.IsMember(message.NodeID))
        {
            _host.AnswerSurvey(message);
        }

        if (message.ProposalNodeID == _settings.MyNodeId && message.NodeID != _settings.MyNodeId)
        {
            // A follower of this node: push it every value learned here for three ask intervals.
            _followers[message.NodeID] = _host.NowMs + (3L * (_settings.AskForLearnBaseMs + _settings.AskForLearnJitterMs));
        }

        if (message.InstanceID >= Now)
        {
            return;
        }

        if (message.InstanceID >= _host.MinChosenInstanceId && !_sender.TryPrepare(message.InstanceID, message.NodeID))
        {
            // Busy serving someone else: an asker just one behind still gets that one value.
            if (message.InstanceID + 1 == Now)
            {
                var record = _host.TryReadRecord(message.InstanceID);
                if (record is not null)
                {
                    _host.Send(message.NodeID, _sender.CreateLearnValue(record, 0, needAck: false), TransportKind.Tcp);
                }
            }

            return;
        }

        var reply = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.SendNowInstanceId,
            InstanceID = message.InstanceID,
            NodeID = _settings.MyNodeId,
            NowInstanceID = Now,
            MinChosenInstanceID = _host.MinChosenInstanceId,
        };
        if (Now - message.InstanceID > ShipVariablesGap)
        {
            if (_storage.GetSystemVariables(_host.GroupIndex) is { } system)
            {
                reply.SystemVariables = ByteString.CopyFrom(system);
            }

            if (_storage.GetMasterVariables(_host.GroupIndex) is { } master)
            {
                reply.MasterVariables = ByteString.CopyFrom(master);
            }
        }

        _host.Send(message.NodeID, reply, TransportKind.Udp);
    }

    /// <summary>A member told this node how far it is (the answer to an AskForLearn).</summary>
    public void OnSendNowInstanceId(PaxosMsg message)
    {
        // The answer to our AskForLearn, which goes to members only: from anyone else it is not an answer, and its
        // instance (see OnAskForLearn) or system variables must not be taken.
        if (!_host.IsMember(message.NodeID))
        {
            return;
        }

        if (message.ProposalID != 0)
        {
            // Only an answer to this node's survey carries a proposal id (the survey's nonce).
            _host.OnSurveyAnswer(message);
            return;
        }

        SetSeen(message.NowInstanceID);
        if (message.HasSystemVariables && _membership.UpdateFromPeer(message.SystemVariables.Span))
        {
            // The membership changed under us: everything else waits for the next round.
            return;
        }

        if (message.HasMasterVariables)
        {
            _master.UpdateFromPeer(message.MasterVariables.Span);
        }

        if (message.InstanceID != Now || message.NowInstanceID <= Now)
        {
            return;
        }

        if (message.MinChosenInstanceID > Now)
        {
            LogNeedCheckpoint(_host.GroupIndex, Now, message.MinChosenInstanceID, new NodeId(message.NodeID));
            Telemetry.EngineInstruments.AddForGroup(Telemetry.EngineInstruments.CheckpointsNeeded, _host.GroupIndex);
            _host.OnPeerCleanedPastUs(message);
            return;
        }

        if (!_isLearning)
        {
            _isLearning = true;
            _host.Send(message.NodeID, new PaxosMsg
            {
                MsgType = (int)PaxosMsgType.ConfirmAskForLearn,
                InstanceID = Now,
                NodeID = _settings.MyNodeId,
            }, TransportKind.Udp);
        }
    }

    /// <summary>A value streamed by a catch-up sender (or pushed to this follower).</summary>
    public void OnSendLearnValue(PaxosMsg message)
    {
        if (message.InstanceID != Now || IsLearned)
        {
            if (message.InstanceID < Now && message.Flag == 1)
            {
                SendLearnValueAck(message.NodeID, force: false);
            }

            return;
        }

        // Write the learned record (no fsync: a majority holds it durably already), then learn it.
        if (!TryWriteLearnedRecord(new Ballot(message.ProposalID, message.ProposalNodeID), message.Value, sync: false, new LearnedWrite(_host, Now), out var checksum))
        {
            return;
        }

        IsLearned = true;
        Telemetry.EngineInstruments.AddForGroup(Telemetry.EngineInstruments.LearnValuesReceived, _host.GroupIndex);
        LearnedValue = message.Value;
        LearnedChecksum = checksum;
        if (message.Flag == 1)
        {
            ArmAskForLearnTimer();
            SendLearnValueAck(message.NodeID, force: false);
        }
    }

    /// <summary>Pushes the value just learned to the followers of this node (PhxPaxos <c>TransmitToFollower</c>).</summary>
    private void TransmitToFollowers(ulong proposalId, ulong proposalNodeId)
    {
        if (_followers.Count == 0)
        {
            return;
        }

        var nowMs = _host.NowMs;
        var value = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.SendLearnValue,
            InstanceID = Now,
            NodeID = _settings.MyNodeId,
            ProposalNodeID = proposalNodeId,
            ProposalID = proposalId,
            Value = LearnedValue,
            LastChecksum = _host.LastChecksum,
        };
        byte[]? frame = null;
        List<ulong>? expired = null;
        foreach (var (follower, until) in _followers)
        {
            if (until < nowMs)
            {
                (expired ??= []).Add(follower);
                continue;
            }

            frame ??= FrameCodec.Encode(_host.GroupIndex, _host.Gid, value);
            _host.SendFrame(follower, frame, TransportKind.Tcp);
        }

        foreach (var follower in expired ?? [])
        {
            _followers.Remove(follower);
        }
    }

    /// <summary>
    /// Writes the record of a value learned for the current instance: accepted with <paramref name="ballot"/>.
    /// Its promise is the higher of that ballot and this acceptor's promise, so that learning never lowers
    /// the promise a restart restores (PhxPaxos writes the learned ballot as the promise too).
    /// </summary>
    private bool TryWriteLearnedRecord(Ballot ballot, ByteString value, bool sync, IPutCallback callback, out uint checksum)
    {
        checksum = Now > 0 && _host.LastChecksum == 0
            ? 0u
            : value.IsEmpty ? 0u : SkipCrc32.Compute(_host.LastChecksum, value.Span, SkipCrc32.ValueSkip);
        var promise = _acceptor.Promised > ballot ? _acceptor.Promised : ballot;
        var record = new AcceptorStateData
        {
            InstanceID = Now,
            PromiseID = promise.ProposalId,
            PromiseNodeID = promise.NodeId,
            AcceptedID = ballot.ProposalId,
            AcceptedNodeID = ballot.NodeId,
            AcceptedValue = value,
            Checksum = checksum,
        };
        try
        {
            var bytes = MessageBytes.Rent(record, out var length);
            _storage.PutRented(_host.GroupIndex, Now, bytes, length, sync, callback);
            return true;
        }
        catch (LogStorageException ex)
        {
            _host.Stop($"could not write learned instance {Now}", ex);
            return false;
        }
    }

    private void SendLearnValueAck(ulong to, bool force)
    {
        if (!force && Now < _lastAckInstanceId + ReceiverAckLead)
        {
            return;
        }

        _lastAckInstanceId = Now;
        _host.Send(to, new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.SendLearnValueAck,
            InstanceID = Now,
            NodeID = _settings.MyNodeId,
        }, TransportKind.Udp);
    }

    /// <summary>Completion of a learned value's write: only a failure needs the loop (the group stops).</summary>
    private sealed class LearnedWrite(IRoleHost host, ulong instance) : IPutCallback
    {
        public void OnPutCompleted(Exception? error)
        {
            if (error is not null)
            {
                host.Post(() => host.Stop($"could not write learned instance {instance}", error));
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group} is at instance {Now} but peer {Peer} already cleaned its log up to {MinChosen}: a checkpoint is needed.")]
    private partial void LogNeedCheckpoint(int group, ulong now, ulong minChosen, NodeId peer);
}
