using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Consensus;

/// <summary>
/// What the roles that talk to peers and read the log (learner, catch-up sender, voting gate keeper,
/// checkpoint roles) need from their group beyond <see cref="IRoleHost"/>. Loop thread.
/// </summary>
internal interface IPeerHost : IRoleHost
{
    /// <summary>The lowest instance still in the log.</summary>
    ulong MinChosenInstanceId { get; }

    /// <summary>Checksum of the previous instance's chosen value (the chain the acceptor and learner extend).</summary>
    uint LastChecksum { get; }

    /// <summary>Sends <paramref name="message"/> to <paramref name="to"/>; a message to this node is posted to the loop.</summary>
    void Send(ulong to, PaxosMsg message, TransportKind kind);

    /// <summary>Sends <paramref name="message"/> to every other member (encoded once).</summary>
    void SendToOthers(PaxosMsg message, TransportKind kind);

    /// <summary>Sends a frame already encoded for this group to another node.</summary>
    void SendFrame(ulong to, byte[] frame, TransportKind kind);

    /// <summary>Reads the log record of <paramref name="instanceId"/>; null when it is not there or cannot be read (logged).</summary>
    AcceptorStateData? TryReadRecord(ulong instanceId);
}
