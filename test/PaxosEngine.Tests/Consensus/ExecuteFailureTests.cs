using System.Collections.Concurrent;
using System.Text;
using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;
using Orleans.Paxos.Engine.Tests.Support;

namespace Orleans.Paxos.Engine.Tests.Consensus;

/// <summary>
/// A state machine that cannot execute a chosen value (PhxPaxos: Execute returns false, result 15): the proposer
/// is told, the instance is not passed, and execution is tried again until it succeeds.
/// </summary>
public sealed class ExecuteFailureTests
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_failed_execute_reports_ExecuteFailed_and_holds_the_instance_until_the_state_machine_succeeds()
    {
        var machines = new FailingMachine[3];
        using var cluster = new TestCluster(3, 1, seed: 521, startNodes: 0);
        cluster.Mount = (i, node, _) =>
        {
            machines[i] = new FailingMachine();
            node.AddStateMachine(0, machines[i]);
        };
        for (var i = 0; i < 3; i++)
        {
            cluster.Start(i);
        }

        await cluster.WaitVotingAsync(0, Generous);
        Assert.Equal(ProposeStatus.Ok, (await Propose(cluster, 0, "first")).Status);
        await Polling.WaitUntilAsync(() => machines.All(m => m.Executed.Count == 1), Generous, "every node to execute the first value");

        // Node 0's state machine fails from now on: the value is chosen, but node 0 cannot execute it.
        machines[0].Failing = true;
        var failed = await Propose(cluster, 0, "second");
        Assert.Equal(ProposeStatus.ExecuteFailed, failed.Status);
        Assert.Equal(1ul, failed.InstanceId);
        Assert.Null(failed.Output);

        // Node 0 stays at that instance and keeps trying (on every learner message, e.g. its peers' periodic
        // ask-for-learn). Its group is not stopped. As in PhxPaxos, the commit is sent to the others only once
        // the proposer's node executed the value, so they learn it from node 0 when it moves on.
        var failuresSoFar = machines[0].Failures;
        await Polling.WaitUntilAsync(() => machines[0].Failures > failuresSoFar, Generous, "node 0 to try the value again");
        Assert.Equal(1ul, cluster.Node(0).GetNowInstanceId(0));
        Assert.Single(machines[0].Executed);
        Assert.Null(cluster.Node(0).GetGroupStoppedReason(0));

        // Once the state machine works again, the value is executed, exactly once, and the group moves on.
        var frames = new ConcurrentQueue<PaxosMsg>();
        cluster.Network.SendObserver = (from, _, frame) =>
        {
            if (from == cluster.Ids[0] && PaxosFrames.TryRead(frame, 0, out var message) && message.MsgType is (int)PaxosMsgType.Prepare or (int)PaxosMsgType.Accept)
            {
                frames.Enqueue(message);
            }
        };
        machines[0].Failing = false;
        await Polling.WaitUntilAsync(() => cluster.Node(0).GetNowInstanceId(0) == 2, Generous, "node 0 to execute instance 1");
        Assert.Equal([(0ul, "first"), (1ul, "second")], machines[0].Executed);
        await Polling.WaitUntilAsync(() => machines.All(m => m.Executed.Count == 2), Generous, "every node to execute instance 1");

        // A failed execute costs the proposer its right to skip Prepare (as PhxPaxos CancelSkipPrepare).
        var next = await Propose(cluster, 0, "third");
        Assert.Equal(ProposeStatus.Ok, next.Status);
        Assert.Equal(2ul, next.InstanceId);
        Assert.Equal((int)PaxosMsgType.Prepare, frames.First(m => m.InstanceID == 2).MsgType);
        await Polling.WaitUntilAsync(() => machines.All(m => m.Executed.Count == 3), Generous, "every node to execute the third value");
        Assert.All(machines, m => Assert.Equal([(0ul, "first"), (1ul, "second"), (2ul, "third")], m.Executed));
    }

    [Fact]
    public async Task A_state_machine_that_throws_neither_advances_the_instance_nor_stops_the_loop_or_other_groups()
    {
        var machines = new FailingMachine[3];
        using var cluster = new TestCluster(3, 2, seed: 522, configure: o => { o.ProposeTimeout = TimeSpan.FromSeconds(2); o.LoopThreadCount = 1; }, startNodes: 0);
        cluster.Mount = (i, node, _) =>
        {
            machines[i] = new FailingMachine();
            node.AddStateMachine(0, machines[i]);
        };
        for (var i = 0; i < 3; i++)
        {
            cluster.Start(i);
        }

        await cluster.WaitVotingAsync(0, Generous);
        machines[0].Throwing = true;
        var result = await Propose(cluster, 0, "boom");

        // The exception reaches the loop's error handler, not the committer: the caller is not told ExecuteFailed
        // but waits out its timeout, and the value, chosen or not as far as it knows, is executed later.
        Assert.Equal(ProposeStatus.Timeout, result.Status);
        await Polling.WaitUntilAsync(() => machines[0].Failures >= 2, Generous, "node 0 to try the value again");
        Assert.Equal(0ul, cluster.Node(0).GetNowInstanceId(0));
        Assert.Null(cluster.Node(0).GetGroupStoppedReason(0));
        Assert.Empty(machines[0].Executed);

        // Group 1 shares node 0's loop thread and still works.
        Assert.Equal(ProposeStatus.Ok, (await cluster.Propose(0, 1, "other-group")).Status);

        machines[0].Throwing = false;
        await Polling.WaitUntilAsync(() => cluster.Node(0).GetNowInstanceId(0) == 1, Generous, "node 0 to execute the value");
        Assert.Equal([(0ul, "boom")], machines[0].Executed);
    }

    private static Task<ProposeResult> Propose(TestCluster cluster, int node, string value) =>
        cluster.Node(node).ProposeAsync(0, Encoding.UTF8.GetBytes(value), new StateMachineContext(FailingMachine.Id));

    /// <summary>Executes values while healthy; returns false (or throws) while told to fail.</summary>
    private sealed class FailingMachine : IStateMachine
    {
        public const int Id = 5;
        private readonly object _gate = new();
        private readonly List<(ulong Instance, string Value)> _executed = [];
        private int _failures;

        public int SmId => Id;

        public volatile bool Failing;

        public volatile bool Throwing;

        public int Failures => Volatile.Read(ref _failures);

        public List<(ulong Instance, string Value)> Executed
        {
            get
            {
                lock (_gate)
                {
                    return [.. _executed];
                }
            }
        }

        public bool Execute(int groupIndex, ulong instanceId, ReadOnlySpan<byte> value, StateMachineContext? context)
        {
            if (Failing || Throwing)
            {
                Interlocked.Increment(ref _failures);
                if (Throwing)
                {
                    throw new InvalidOperationException("the state machine's store is unavailable");
                }

                return false;
            }

            lock (_gate)
            {
                _executed.Add((instanceId, Encoding.UTF8.GetString(value)));
            }

            if (context is not null)
            {
                context.Output = "done";
            }

            return true;
        }
    }
}
