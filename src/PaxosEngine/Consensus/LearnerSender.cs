using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Consensus;

/// <summary>
/// The catch-up sender (PhxPaxos <c>LearnerSender</c>): streams chosen values from the log to one node that
/// is behind, paced by a budget and by the learner's acknowledgements. It runs on the group's loop, driven by
/// a timer, instead of on a thread of its own; it serves one learner at a time.
/// </summary>
internal sealed partial class LearnerSender
{
    /// <summary>
    /// The sender starts at most this far ahead of the last acknowledgement (PhxPaxos <c>LearnerSender_ACK_LEAD</c>).
    /// Unlike PhxPaxos, the lead doubles each time an acknowledgement finds it used up, up to
    /// <see cref="SenderAckLeadMax"/> instances and <see cref="SenderMaxBytesAhead"/> bytes: with a fixed 21 a
    /// loaded machine's round trips bound catch-up below the rate a busy group chooses values at.
    /// </summary>
    private const int SenderAckLeadStart = 21;

    /// <summary>The most instances the sender keeps unacknowledged.</summary>
    private const int SenderAckLeadMax = 1024;

    /// <summary>The most value bytes the sender keeps unacknowledged (at least one value always goes).</summary>
    private const long SenderMaxBytesAhead = 8L << 20;

    /// <summary>The sender gives up after this long without an acknowledgement (PhxPaxos <c>LearnerSender_ACK_TIMEOUT</c>).</summary>
    private const int SenderAckTimeoutMs = 5000;

    /// <summary>A prepared sender that is not confirmed or not sending is free again after this long.</summary>
    private const int SenderPrepareTimeoutMs = 5000;

    /// <summary>Pace of the sender's timer.</summary>
    private const int SenderTickMs = 5;

    private readonly IPeerHost _host;
    private readonly GroupSettings _settings;
    private readonly ILogger _logger;
    private bool _senderBusy;
    private bool _senderConfirmed;
    private ulong _senderTo;
    private ulong _senderNext;
    private ulong _senderAcked;
    private uint _senderLastChecksum;
    private long _senderLastActivityMs;
    private long _senderLastAckMs;
    private long _senderTimerId;
    private int _senderAckLead = SenderAckLeadStart;
    private readonly Queue<(ulong Instance, int Bytes)> _senderUnacked = new();
    private long _senderBytesAhead;
    private double _senderBudget;
    private long _senderBudgetAtMs;

    public LearnerSender(IPeerHost host, GroupSettings settings, ILogger logger)
    {
        _host = host;
        _settings = settings;
        _logger = logger;
    }

    /// <summary>Takes a learner that asked from <paramref name="beginInstance"/>; false while another one is being served.</summary>
    public bool TryPrepare(ulong beginInstance, ulong to)
    {
        var nowMs = _host.NowMs;
        if (_senderBusy && nowMs - _senderLastActivityMs < SenderPrepareTimeoutMs)
        {
            return false;
        }

        Stop();
        _senderBusy = true;
        _senderConfirmed = false;
        _senderTo = to;
        _senderNext = beginInstance;
        _senderAcked = beginInstance;
        _senderLastActivityMs = nowMs;
        return true;
    }

    /// <summary>The learner confirmed it wants the values: start streaming.</summary>
    public void OnConfirmAskForLearn(PaxosMsg message)
    {
        if (!_senderBusy || _senderConfirmed || message.InstanceID != _senderNext || message.NodeID != _senderTo)
        {
            return;
        }

        _senderConfirmed = true;

        // PhxPaxos sends the first value of a catch-up with checksum 0, so the learner cannot check it
        // against its chain. This node sends the checksum of the instance before it when it still holds
        // that record: the learner then stops before executing a value of a different history.
        _senderLastChecksum = _senderNext > _host.MinChosenInstanceId && _senderNext > 0 ? _host.TryReadRecord(_senderNext - 1)?.Checksum ?? 0 : 0;
        _senderLastAckMs = _host.NowMs;
        _senderBudget = 0;
        _senderBudgetAtMs = _host.NowMs;
        LogCatchUpStarted(_host.GroupIndex, new NodeId(_senderTo), _senderNext, _host.CurrentInstanceId);
        SendLearnValues();
        _senderTimerId = _host.AddTimer(SenderTickMs, TimerKind.LearnerSender);
    }

    /// <summary>The learner acknowledged values up to the message's instance.</summary>
    public void OnSendLearnValueAck(PaxosMsg message)
    {
        if (!_senderBusy || !_senderConfirmed || message.NodeID != _senderTo || message.InstanceID <= _senderAcked)
        {
            return;
        }

        // The lead was used up (and not the byte budget): the learner keeps pace, so allow it more.
        if (_senderNext > _senderAcked + (ulong)_senderAckLead && _senderNext < _host.CurrentInstanceId && _senderBytesAhead < SenderMaxBytesAhead)
        {
            _senderAckLead = Math.Min(SenderAckLeadMax, _senderAckLead * 2);
        }

        _senderAcked = message.InstanceID;
        while (_senderUnacked.TryPeek(out var sent) && sent.Instance < _senderAcked)
        {
            _senderUnacked.Dequeue();
            _senderBytesAhead -= sent.Bytes;
        }

        _senderLastAckMs = _host.NowMs;
        SendLearnValues();
    }

    /// <summary>The group executed an instance: a learner being served gets it too.</summary>
    public void OnInstanceExecuted()
    {
        if (_senderBusy && _senderConfirmed)
        {
            SendLearnValues();
        }
    }

    /// <summary>The sender's timer: checks acknowledgements and progress.</summary>
    public void OnTimer(long timerId)
    {
        if (timerId != _senderTimerId || !_senderBusy)
        {
            return;
        }

        _senderTimerId = 0;
        var nowMs = _host.NowMs;
        if (nowMs - _senderLastAckMs > SenderAckTimeoutMs)
        {
            // The learner went quiet: shrink the window for next time and free the sender.
            _senderAckLead = Math.Max(4, Math.Min(_senderAckLead, SenderAckLeadStart * 4) / 2);

            LogCatchUpAbandoned(_host.GroupIndex, new NodeId(_senderTo), _senderNext);
            Stop();
            return;
        }

        // Done once everything this node holds was sent and the learner acknowledged all but its ack lead. A
        // sender that kept following the learner in a busy group would stay busy for good, and every other
        // node that falls behind would find no sender (PhxPaxos's sender also ends at the instance it reached).
        if (_senderNext >= _host.CurrentInstanceId && _senderAcked + Learner.ReceiverAckLead >= _senderNext)
        {
            LogCatchUpDone(_host.GroupIndex, new NodeId(_senderTo), _senderNext);
            _senderAckLead = SenderAckLeadStart;
            Stop();
            return;
        }

        SendLearnValues();
        _senderTimerId = _host.AddTimer(SenderTickMs, TimerKind.LearnerSender);
    }

    /// <summary>Frees the sender.</summary>
    public void Stop()
    {
        _host.RemoveTimer(_senderTimerId);
        _senderTimerId = 0;
        _senderBusy = false;
        _senderConfirmed = false;
        _senderUnacked.Clear();
        _senderBytesAhead = 0;
    }

    /// <summary>A SendLearnValue message carrying <paramref name="record"/>'s chosen value.</summary>
    public PaxosMsg CreateLearnValue(AcceptorStateData record, uint lastChecksum, bool needAck)
    {
        var message = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.SendLearnValue,
            InstanceID = record.InstanceID,
            NodeID = _settings.MyNodeId,
            ProposalNodeID = record.AcceptedNodeID,
            ProposalID = record.AcceptedID,
            Value = record.AcceptedValue,
            LastChecksum = lastChecksum,
        };
        if (needAck)
        {
            message.Flag = 1;
        }

        return message;
    }

    private void SendLearnValues()
    {
        var nowMs = _host.NowMs;
        var qps = Math.Max(1, _settings.LearnerSendQps / Math.Max(1, _settings.GroupCount));
        _senderBudget = Math.Min(qps, _senderBudget + ((nowMs - _senderBudgetAtMs) * qps / 1000.0));
        _senderBudgetAtMs = nowMs;
        while (_senderNext < _host.CurrentInstanceId && _senderNext <= _senderAcked + (ulong)_senderAckLead && _senderBudget >= 1
            && (_senderBytesAhead < SenderMaxBytesAhead || _senderUnacked.Count == 0))
        {
            var record = _host.TryReadRecord(_senderNext);
            if (record is null)
            {
                LogCatchUpMissingRecord(_host.GroupIndex, _senderNext, new NodeId(_senderTo));
                Stop();
                return;
            }

            _host.Send(_senderTo, CreateLearnValue(record, _senderLastChecksum, needAck: true), TransportKind.Tcp);
            Telemetry.EngineInstruments.AddForGroup(Telemetry.EngineInstruments.LearnValuesSent, _host.GroupIndex);
            _senderLastChecksum = record.Checksum;
            _senderUnacked.Enqueue((_senderNext, record.AcceptedValue.Length));
            _senderBytesAhead += record.AcceptedValue.Length;
            _senderNext++;
            _senderBudget--;
            _senderLastActivityMs = nowMs;
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: {Peer} caught up (sent up to instance {Next}); the catch-up sender is free.")]
    private partial void LogCatchUpDone(int group, NodeId peer, ulong next);

    [LoggerMessage(Level = LogLevel.Information, Message = "Group {Group}: sending instances {From}..{To} to {Peer} to catch it up.")]
    private partial void LogCatchUpStarted(int group, NodeId peer, ulong from, ulong to);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: catch-up of {Peer} abandoned at instance {Next}: no acknowledgement.")]
    private partial void LogCatchUpAbandoned(int group, NodeId peer, ulong next);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Group {Group}: instance {Instance} is not in the log; cannot catch up {Peer} from the log.")]
    private partial void LogCatchUpMissingRecord(int group, ulong instance, NodeId peer);
}
