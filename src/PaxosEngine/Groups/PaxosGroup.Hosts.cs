using Google.Protobuf;
using Orleans.Paxos.Engine.Consensus;

namespace Orleans.Paxos.Engine.Groups;

/// <summary>The group as host of its roles: each role sees the group only through its own host interface.</summary>
internal sealed partial class PaxosGroup
{
    int IRoleHost.GroupIndex => Index;

    ulong IRoleHost.MyNodeId => _settings.MyNodeId;

    ulong IRoleHost.CurrentInstanceId => Now;

    long IRoleHost.NowMs => _loop.NowMs;

    bool IRoleHost.IsStopped => _stoppedReason is not null;

    void IRoleHost.Post(Action action) => _loop.Post(new LoopAction(action));

    bool ICommitterHost.IsLatest => IsLatest;

    bool ICommitterHost.IsProposing => _proposer.IsWorking;

    bool ICommitterHost.IsMember(ulong nodeId) => _members.Contains(nodeId);

    byte[] ICommitterHost.CreateGidValue() => Membership.CreateGidValue(_settings.MyNodeId);

    void ICommitterHost.Propose(ByteString value) => _proposer.NewValue(value);

    void ICommitterHost.AfterWork() => AfterWork();

    bool IMasterElectionHost.IsSelfMember => IsMember;
}
