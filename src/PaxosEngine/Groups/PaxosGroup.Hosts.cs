using Google.Protobuf;
using Orleans.Paxos.Engine.Checkpoints;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Groups;

/// <summary>
/// The group as host of its roles: each role sees the group only through its own host interface. Members
/// that the group also offers publicly (<see cref="Gid"/>, <see cref="MinChosenInstanceId"/>,
/// <see cref="LastChecksum"/>, <see cref="Quorum"/>, <see cref="AddTimer"/>, <see cref="RemoveTimer"/>,
/// <see cref="Stop"/>, <see cref="TryEnqueueProposal"/>) implement them implicitly; the rest are below.
/// </summary>
internal sealed partial class PaxosGroup
{
    // What every role needs.
    int IRoleHost.GroupIndex => Index;

    ulong IRoleHost.MyNodeId => _settings.MyNodeId;

    ulong IRoleHost.CurrentInstanceId => Now;

    long IRoleHost.NowMs => _loop.NowMs;

    bool IRoleHost.IsStopped => _stoppedReason is not null;

    void IRoleHost.Post(Action action) => _loop.Post(new LoopAction(action));

    bool IRoleHost.IsMember(ulong nodeId) => _members.Contains(nodeId);

    // Messaging and log reads.
    void IPeerHost.Send(ulong to, PaxosMsg message, TransportKind kind) => Send(to, message, kind);

    void IPeerHost.SendToOthers(PaxosMsg message, TransportKind kind) => SendToOthers(message, kind);

    void IPeerHost.SendFrame(ulong to, byte[] frame, TransportKind kind) => _transport.Send(new NodeId(to), frame, kind);

    AcceptorStateData? IPeerHost.TryReadRecord(ulong instanceId) => TryReadRecord(instanceId);

    // Proposer (the broadcasts and OnChosen are in PaxosGroup.Instance.cs).
    ulong IProposerHost.MyNodeId => _settings.MyNodeId;

    // Committer.
    bool ICommitterHost.IsLatest => _learner.IsLatest;

    bool ICommitterHost.IsProposing => _proposer.IsWorking;

    byte[] ICommitterHost.CreateGidValue() => Membership.CreateGidValue(_settings.MyNodeId);

    void ICommitterHost.Propose(ByteString value) => _proposer.NewValue(value);

    void ICommitterHost.AfterWork() => AfterWork();

    // Master election.
    bool IMasterElectionHost.IsSelfMember => IsMember;

    // Learner.
    void ILearnerHost.AnswerSurvey(PaxosMsg ask) => _voting.AnswerSurvey(ask);

    void ILearnerHost.OnSurveyAnswer(PaxosMsg answer) => _voting.OnSurveyAnswer(answer);

    void ILearnerHost.OnPeerCleanedPastUs(PaxosMsg message) => _installer.OnPeerCleanedPastUs(message);

    // Voting gate keeper.
    IReadOnlyList<ulong> IVotingHost.Members => _members;

    bool IVotingHost.IsLatest => _learner.IsLatest;

    bool IVotingHost.IsCommitterIdle => _committer.IsIdle;

    bool IVotingHost.IsAskingForCheckpoint => _installer.IsAskingForCheckpoint;

    void IVotingHost.OnPeerInstanceSeen(ulong instanceId) => _learner.SetSeen(instanceId);

    // Checkpoint installer, server and replayer.
    void ICheckpointInstallerHost.AbandonProposal() => _proposer.Abandon();

    void ICheckpointInstallerHost.ResetToInstance(ulong instance) => ResetToInstance(instance);

    void ICheckpointInstallerHost.LearnSoon() => _learner.ArmAskForLearnTimer(1);

    bool ICheckpointServerHost.IsValidSender(ulong nodeId) => IsValidSender(nodeId);

    bool IReplayerHost.IsSendingCheckpoint => _checkpointServer.IsSending;

    bool IReplayerHost.IsAskingForCheckpoint => _installer.IsAskingForCheckpoint;

    AcceptorStateData? IReplayerHost.TryReadRecord(ulong instanceId) => TryReadRecord(instanceId);

    // The log cleaner (its own thread: these are thread-safe).
    ulong ICleanableGroup.CheckpointInstanceIdForCleaner => StateMachines.GetCheckpointInstanceId();

    bool ICleanableGroup.MayCleanLog => _checkpointServer.MayCleanLog;

    object ICleanableGroup.LogMaintenanceGate => _installer.LogMaintenanceGate;

    void ICleanableGroup.OnLogCleaned(ulong minChosen) => _loop.Post(new LoopAction(() =>
    {
        // A checkpoint installed meanwhile moved the log start further; never go back.
        if (minChosen > MinChosenInstanceId)
        {
            PublishProgress(minChosen);
        }
    }));
}
