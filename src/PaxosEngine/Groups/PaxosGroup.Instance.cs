using Google.Protobuf;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Groups;

/// <summary>
/// The current instance across the roles (PhxPaxos <c>Instance</c>): the acceptor's persist-then-reply path and
/// retry queue, the checksum chain, the proposer's callbacks, and executing a learned value before every role
/// moves to the next instance.
/// </summary>
internal sealed partial class PaxosGroup
{
    /// <summary>Messages for future instances are kept at most this far ahead (PhxPaxos <c>RETRY_QUEUE_MAX_LEN</c>).</summary>
    private const int RetryQueueMaxLength = 300;

    /// <inheritdoc />
    public int RetryDelayMs() => _random.Next(10, 40);

    /// <inheritdoc />
    public void BroadcastPrepare(PaxosMsg prepare)
    {
        if (_voting.IsVoting)
        {
            OnAcceptorMessage(prepare, isRetry: false);
        }

        SendToOthers(prepare, TransportKind.Udp);
    }

    /// <inheritdoc />
    public void BroadcastAccept(PaxosMsg accept)
    {
        SendToOthers(accept, TransportKind.Udp);
        if (_voting.IsVoting)
        {
            OnAcceptorMessage(accept, isRetry: false);
        }
        else
        {
            // Remembered so that a choice of this ballot, should the gate open meanwhile, is learned from the proposer.
            _acceptSkippedInstance = accept.InstanceID;
            _acceptSkippedBallot = new Ballot(accept.ProposalID, accept.NodeID);
        }
    }

    /// <inheritdoc />
    public void OnChosen(ulong instanceId, ulong proposalId)
    {
        var ballot = new Ballot(proposalId, _settings.MyNodeId);
        if (!_voting.IsVoting || (_acceptSkippedInstance == instanceId && _acceptSkippedBallot == ballot && _acceptor.Accepted != ballot))
        {
            // This acceptor abstained (the gate was closed when the accept went out, though it may be open by
            // now): a majority of the others chose the proposer's value; learn it from the proposer. (An
            // acceptor that voted and rejected keeps PhxPaxos's rule: the value is learned from those that
            // accepted it, never on the strength of replies alone.)
            _chosenByMeInstance = instanceId;
            LearnOwnChosen(instanceId, proposalId);
            return;
        }

        var success = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.ProposerSendSuccess,
            InstanceID = instanceId,
            NodeID = _settings.MyNodeId,
            ProposalID = proposalId,
            LastChecksum = _lastChecksum,
        };

        // Learn and execute here first; tell the others only if that worked (as PhxPaxos).
        _chosenByMeInstance = instanceId;
        OnLearnerMessage(success);
        if (Now > instanceId)
        {
            SendToOthers(success, TransportKind.Udp);
        }
    }

    /// <summary>
    /// This node's proposer got <paramref name="instanceId"/> chosen by a majority of the other members, without
    /// this acceptor's vote (the gate was closed, or the acceptor had promised a later ballot). Learn the value
    /// from the proposer and make its record (which carries the ballot as the promise) durable; a closed gate
    /// opens once it is.
    /// </summary>
    private void LearnOwnChosen(ulong instanceId, ulong proposalId)
    {
        if (instanceId != Now || _learner.IsLearned)
        {
            return;
        }

        var ballot = new Ballot(proposalId, _settings.MyNodeId);
        var value = _proposer.Value;
        _acceptor.RaisePromise(ballot);
        _voting.OnOwnRoundChosen(ballot);
        if (!_learner.LearnFromProposer(ballot, value, _voting.OpenWhenDurable($"its proposal was chosen at instance {instanceId} by a majority of the other members")))
        {
            return;
        }

        var success = new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.ProposerSendSuccess,
            InstanceID = instanceId,
            NodeID = _settings.MyNodeId,
            ProposalID = proposalId,
            LastChecksum = _lastChecksum,
        };
        ExecuteLearnedValue();
        if (Now > instanceId)
        {
            SendToOthers(success, TransportKind.Udp);
        }
    }

    private void OnAcceptorMessage(PaxosMsg message, bool isRetry)
    {
        if (message.InstanceID == Now + 1 && message.MsgType == (int)PaxosMsgType.Accept)
        {
            // An accept for the next instance without a prepare means its proposer got the current instance chosen
            // with that ballot (implicit commit): learn it first if this acceptor accepted exactly that ballot. Unlike
            // PhxPaxos, a prepare does not count: a proposer prepares the next instance with its old ballot after a
            // round that failed, so the ballot it carries need not be the one that chose the current instance.
            var implied = message.Clone();
            implied.InstanceID = Now;
            implied.MsgType = (int)PaxosMsgType.ProposerSendSuccess;
            OnLearnerMessage(implied);
        }

        if (message.InstanceID == Now)
        {
            if (!_voting.IsVoting)
            {
                // No promise, no accept, no reply; the learner keeps the accept's value for the commit.
                _learner.ObserveAccept(message);
                return;
            }

            var isPrepare = message.MsgType == (int)PaxosMsgType.Prepare;
            var reply = isPrepare
                ? _acceptor.OnPrepare(message, _lastChecksum, out var record)
                : _acceptor.OnAccept(message, _lastChecksum, out record);
            if (record is null)
            {
                Send(message.NodeID, reply, Transport.TransportKind.Udp);
            }
            else
            {
                PersistThenReply(record, reply, message.NodeID);
            }
        }
        else if (!isRetry && message.InstanceID > Now && message.InstanceID >= _learner.HighestSeenInstanceId)
        {
            if (message.InstanceID < Now + RetryQueueMaxLength)
            {
                if (_retryQueue.Count >= RetryQueueMaxLength)
                {
                    _retryQueue.Dequeue();
                }

                _retryQueue.Enqueue(message);
            }
            else
            {
                _retryQueue.Clear();
            }
        }
    }

    private void DealWithRetryQueue()
    {
        var handledCurrent = false;
        while (_retryQueue.TryPeek(out var message))
        {
            if (message.InstanceID > Now + 1)
            {
                break;
            }

            if (message.InstanceID == Now + 1)
            {
                // The next instance is only retried once a message for the current one was.
                if (!handledCurrent)
                {
                    break;
                }

                _retryQueue.Dequeue();
                OnAcceptorMessage(message, isRetry: true);
                continue;
            }

            _retryQueue.Dequeue();
            if (message.InstanceID == Now)
            {
                handledCurrent = true;
                OnAcceptorMessage(message, isRetry: true);
            }
        }
    }

    /// <summary>
    /// The rolling checksum check (PhxPaxos <c>ChecksumLogic</c>). A mismatch means this node's history
    /// differs from the sender's: the group stops loudly instead of diverging.
    /// </summary>
    private bool ChecksumMatches(PaxosMsg message)
    {
        if (message.LastChecksum == 0 || message.InstanceID != Now)
        {
            return true;
        }

        if (Now > 0 && _lastChecksum == 0)
        {
            _lastChecksum = message.LastChecksum;
            return true;
        }

        if (message.LastChecksum == _lastChecksum)
        {
            return true;
        }

        Stop($"checksum mismatch at instance {Now}: node {new NodeId(message.NodeID)} has {message.LastChecksum} for instance {Now - 1}, this node has {_lastChecksum}");
        return false;
    }

    /// <summary>Writes the acceptor's record and sends <paramref name="reply"/> only once it is durable.</summary>
    private void PersistThenReply(AcceptorStateData record, PaxosMsg reply, ulong replyTo)
    {
        var sync = _settings.Sync;
        if (sync && _settings.SyncInterval > 0)
        {
            sync = ++_writesSinceSync > _settings.SyncInterval;
            if (sync)
            {
                _writesSinceSync = 0;
            }
        }

        var persistStarted = _loop.Time.GetTimestamp();
        try
        {
            // The thread that runs the loop writes the record itself when the storage is idle (no hand-off to a
            // writer thread and no wake-up), unless others would wait for its fsync: the other groups of its loop,
            // or, on a receive thread that borrowed the loop, the messages behind this one. There it writes only as
            // a follower of a node with a single group: the next message it needs comes after its reply anyway. A
            // proposer's receive thread must stay free for the other members' replies, which may form a majority
            // before its own fsync ends.
            var callerWrite = !sync || (_loop.GroupCount == 1 && (!_loop.IsBorrowed || (_settings.GroupCount == 1 && replyTo != _settings.MyNodeId)));
            var bytes = MessageBytes.Rent(record, out var length);
            _storage.PutRented(Index, record.InstanceID, bytes, length, sync, new PendingReply(this, reply, replyTo, record.InstanceID, persistStarted, callerWrite));
        }
        catch (LogStorageException ex)
        {
            Stop($"the acceptor could not write instance {record.InstanceID}", ex);
        }
    }

    /// <summary>Executes the learned value in the state machines and moves every role to the next instance.</summary>
    private void ExecuteLearnedValue()
    {
        var instance = Now;
        var value = _learner.LearnedValue;
        var contexts = _committer.GetContextsIfMine(instance, value);

        // Below _executeFrom the state machines already hold the effect (they executed it before a crash took the
        // learned record from the log): the instance is learned again, not executed again.
        if (instance >= _executeFrom && !StateMachines.Execute(instance, value, contexts))
        {
            // The value stays learned; execution is retried on the next learner message.
            _committer.OnExecuteFailed(instance, contexts is not null);
            _proposer.CancelSkipPrepare();
            return;
        }

        if (_chosenByMeInstance != instance)
        {
            _proposer.OnChosenElsewhere();
        }

        _lastChecksum = _learner.LearnedChecksum;
        NewInstance();

        // Callers are told last: once ProposeAsync returns, the node's current instance is past the one it reports
        // and the InstanceExecuted event for it was raised, also when callers continue on this thread
        // (AllowSynchronousContinuations).
        Chosen?.Invoke(instance, value);
        _learnerSender.OnInstanceExecuted();
        _committer.OnInstanceExecuted(instance, contexts is not null);
    }

    private void NewInstance()
    {
        _acceptor.NewInstance();
        _proposer.NewInstance();
        _learner.ResetLearnedValue();
        PublishProgress();
    }

    /// <summary>Restarts acceptor, learner and proposer at <paramref name="instance"/> with an empty log behind it (a checkpoint was installed).</summary>
    private void ResetToInstance(ulong instance)
    {
        // The promise is kept (as across instances); nothing is accepted at the new instance yet.
        _acceptor.Restore(new AcceptorStateData
        {
            InstanceID = instance,
            PromiseID = _acceptor.Promised.ProposalId,
            PromiseNodeID = _acceptor.Promised.NodeId,
            AcceptedID = 0,
            AcceptedNodeID = 0,
            AcceptedValue = ByteString.Empty,
            Checksum = 0,
        });
        _proposer.Abandon();
        _proposer.InstanceId = instance;
        _proposer.OnChosenElsewhere();
        _committer.AbandonInFlight();
        _learner.Reset();
        _retryQueue.Clear();
        _chosenByMeInstance = ulong.MaxValue;

        // The state machines now hold the installed checkpoint (possibly older than what they held before): every
        // instance after it is executed.
        _executeFrom = 0;
        _lastChecksum = 0; // history before the checkpoint is unknown here; adopted from the next peer message
        _learnerSender.Stop();
        _replayer.Reset();
        PublishProgress(instance);
    }

    /// <summary>A reply waiting for its record to be durable; completes on a storage thread or, when the loop writes it itself, on the loop.</summary>
    private sealed class PendingReply(PaxosGroup group, PaxosMsg reply, ulong replyTo, ulong instanceId, long persistStarted, bool callerWrite) : IPutCallback
    {
        public bool AllowsCallerWrite => callerWrite;

        public void OnPutCompleted(Exception? error)
        {
            if (error is null)
            {
                Telemetry.EngineInstruments.RecordAcceptorPersist(group.Index, group._loop.Time.GetElapsedTime(persistStarted));

                // Sending is thread-safe (encode, then queue); only a reply to this node needs the loop.
                group.Send(replyTo, reply, TransportKind.Udp);
                return;
            }

            group._loop.Post(new LoopAction(() => group.Stop($"the acceptor could not write instance {instanceId}", error)));
        }
    }
}
