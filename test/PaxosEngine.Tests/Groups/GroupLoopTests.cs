using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Orleans.Paxos.Engine.Groups;
using Orleans.Paxos.Engine.Tests.Support;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Tests.Groups;

/// <summary>
/// A receive thread may run one message on a sleeping loop (<see cref="GroupLoop.TryRunInline"/>): only when the loop
/// sleeps with nothing queued, as its owner, and it wakes the loop when it armed a timer the loop would sleep past.
/// The loops here run on fake time with no timer armed, so their thread sleeps until it is woken (or for 1 s).
/// </summary>
public sealed class GroupLoopTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private readonly FakeTimeProvider _time = new();
    private readonly GroupLoop _loop;

    public GroupLoopTests()
    {
        _loop = new GroupLoop("test-loop", _time, NullLogger<GroupLoop>.Instance);
        _loop.Start();
    }

    public void Dispose() => _loop.Dispose();

    [Fact]
    public void A_message_offered_to_a_sleeping_loop_runs_on_the_offering_thread_as_the_loop_owner()
    {
        var ranOn = (Thread?)null;
        var owner = false;
        var borrowed = false;
        OfferUntilTaken(new LoopAction(() =>
        {
            ranOn = Thread.CurrentThread;
            owner = _loop.IsOnLoopThread;
            borrowed = _loop.IsBorrowed;
        }));

        Assert.Same(Thread.CurrentThread, ranOn);
        Assert.True(owner);
        Assert.True(borrowed);
        Assert.False(_loop.IsOnLoopThread); // ownership ends with the message
    }

    [Fact]
    public async Task A_busy_loop_or_a_saturated_source_takes_the_message_in_its_queue_instead()
    {
        using var release = new ManualResetEventSlim();
        using var started = new ManualResetEventSlim();
        _loop.Post(new LoopAction(() =>
        {
            started.Set();
            release.Wait(Timeout);
        }));
        Assert.True(started.Wait(Timeout));

        var ran = false;
        Assert.False(_loop.TryRunInline(new LoopAction(() => ran = true), Source.Idle));
        release.Set();

        await Polling.WaitUntilAsync(() => _loop.IsSleeping, Timeout, "the loop sleeps again");
        Assert.False(_loop.TryRunInline(new LoopAction(() => ran = true), Source.Saturated));
        Assert.False(ran);
    }

    [Fact]
    public async Task Work_queued_before_an_offer_runs_first()
    {
        var order = new List<string>();
        using var release = new ManualResetEventSlim();
        _loop.Post(new LoopAction(() => release.Wait(Timeout)));
        _loop.Post(new LoopAction(() => order.Add("queued")));

        // The queue is not empty: the offer is refused and the caller queues it behind.
        var offered = new LoopAction(() => order.Add("offered"));
        if (!_loop.TryRunInline(offered, Source.Idle))
        {
            _loop.Post(offered);
        }

        release.Set();
        await Polling.WaitUntilAsync(() => _loop.IsSleeping && order.Count == 2, Timeout, "both ran");
        Assert.Equal(["queued", "offered"], order);
    }

    [Fact]
    public async Task A_borrower_that_arms_a_timer_due_before_the_loops_wake_up_wakes_it_and_the_timer_fires()
    {
        var fired = 0;
        var target = new Target(() => Interlocked.Increment(ref fired));

        // Due after the loop's planned wake-up (it sleeps at most 1 s with no timer): no need to wake it.
        OfferUntilTaken(new LoopAction(() => _loop.AddTimer(60_000, target, kind: 1)));
        Assert.Equal(0, _loop.BorrowerWakes);

        // Due at once: the loop would sleep past it.
        OfferUntilTaken(new LoopAction(() => _loop.AddTimer(0, target, kind: 1)));
        Assert.Equal(1, _loop.BorrowerWakes);
        await Polling.WaitUntilAsync(() => Volatile.Read(ref fired) == 1, Timeout, "the timer fired on the loop's thread");
        Assert.NotNull(target.FiredOn);
        Assert.NotSame(Thread.CurrentThread, target.FiredOn);
    }

    [Fact]
    public void Work_a_borrower_posts_to_its_own_loop_runs_after_its_message_on_the_borrower_without_waking_the_loop()
    {
        // The loop's thread also wakes by itself once a second; a run it interrupted is done again.
        for (var attempt = 1; ; attempt++)
        {
            Thread? ranOn = null;
            var postedBeforeReturn = false;
            var ownerWhenRun = false;
            var wakesBefore = _loop.BorrowerWakes;
            var timedWakes = _loop.TimedWakes;
            OfferUntilTaken(new LoopAction(() =>
            {
                _loop.Post(new LoopAction(() =>
                {
                    ranOn = Thread.CurrentThread;
                    ownerWhenRun = _loop.IsBorrowed;
                }));
                postedBeforeReturn = ranOn is null;
            }));
            if (_loop.TimedWakes != timedWakes && attempt < 10)
            {
                SpinWait.SpinUntil(() => !_loop.HasQueuedWork && _loop.IsSleeping, Timeout);
                continue;
            }

            Assert.True(postedBeforeReturn, "the posted work ran inside the message that posted it");
            Assert.Same(Thread.CurrentThread, ranOn);
            Assert.True(ownerWhenRun);
            Assert.Equal(wakesBefore, _loop.BorrowerWakes);
            Assert.False(_loop.HasQueuedWork);
            return;
        }
    }

    [Fact]
    public async Task Work_a_borrower_posts_while_its_source_has_more_to_read_runs_on_the_loops_thread()
    {
        for (var attempt = 1; ; attempt++)
        {
            Thread? ranOn = null;
            var source = new SwitchableSource();
            var wakesBefore = _loop.BorrowerWakes;
            var timedWakes = _loop.TimedWakes;
            OfferUntilTaken(
                new LoopAction(() =>
                {
                    _loop.Post(new LoopAction(() => Volatile.Write(ref ranOn, Thread.CurrentThread)));
                    source.IsSaturated = true; // more datagrams arrived meanwhile: the borrower goes back to reading
                }),
                source);
            await Polling.WaitUntilAsync(() => Volatile.Read(ref ranOn) is not null, Timeout, "the posted work ran");
            if (_loop.TimedWakes != timedWakes && attempt < 10)
            {
                continue;
            }

            Assert.NotSame(Thread.CurrentThread, ranOn);
            Assert.Equal(wakesBefore + 1, _loop.BorrowerWakes);
            return;
        }
    }

    [Fact]
    public async Task The_loop_thread_waits_for_a_borrower_before_it_runs_anything()
    {
        using var release = new ManualResetEventSlim();
        using var borrowing = new ManualResetEventSlim();
        var borrowerDone = false;
        var overlapped = false;
        Task? offer = null;
        await Polling.WaitUntilAsync(() => _loop.IsSleeping, Timeout, "the loop sleeps");
        offer = Task.Factory.StartNew(
            () =>
            {
                while (!_loop.TryRunInline(new LoopAction(() =>
                {
                    borrowing.Set();
                    release.Wait(Timeout);
                    Volatile.Write(ref borrowerDone, true);
                }), Source.Idle))
                {
                    Thread.Yield();
                }
            },
            TaskCreationOptions.LongRunning);
        Assert.True(borrowing.Wait(Timeout));

        // Wakes the loop's thread while the borrower owns the loop; it must wait for the borrower.
        var posted = false;
        _loop.Post(new LoopAction(() =>
        {
            overlapped = !Volatile.Read(ref borrowerDone);
            Volatile.Write(ref posted, true);
        }));
        await Polling.WaitUntilAsync(() => _loop.OwnershipWaits == 1, Timeout, "the woken loop thread waits for the borrower");
        Assert.False(Volatile.Read(ref posted));
        release.Set();
        await offer;
        await Polling.WaitUntilAsync(() => Volatile.Read(ref posted), Timeout, "the posted work ran");
        Assert.False(overlapped);
    }

    [Theory]
    [InlineData(false, 1, true)]
    [InlineData(true, 2, true)]
    [InlineData(true, 1, false)]
    public async Task A_loop_holds_its_sends_while_it_runs_a_pass_and_sends_them_before_it_looks_again(bool sync, int groups, bool holds)
    {
        var batching = new RecordingBatching();
        using var loop = new GroupLoop("batching-loop", _time, NullLogger<GroupLoop>.Instance, batching, groupsWriteWithSync: sync);
        for (var g = 0; g < groups; g++)
        {
            loop.AddGroup();
        }

        using var release = new ManualResetEventSlim();
        var seen = new List<string>();
        loop.Post(new LoopAction(() =>
        {
            release.Wait(Timeout);
            seen.Add(batching.Holding ? "first-held" : "first-direct");
        }));
        loop.Post(new LoopAction(() => seen.Add(batching.Holding ? "second-held" : "second-direct")));
        loop.Start();
        release.Set();
        await Polling.WaitUntilAsync(() => batching.Sent >= (holds ? 1 : 0) && Volatile.Read(ref seen).Count == 2, Timeout, "the pass ran");

        // A loop that may fsync on its thread (one group, sync on) never holds, so no frame waits for a disk.
        Assert.Equal(holds ? ["first-held", "second-held"] : ["first-direct", "second-direct"], seen);
    }

    /// <summary>Offers <paramref name="work"/> on this thread until the loop takes it (its thread may be between two sleeps).</summary>
    private void OfferUntilTaken(ILoopWork work, IInlineSource? source = null)
    {
        var deadline = DateTime.UtcNow + Timeout;
        while (!(_loop.IsSleeping && _loop.TryRunInline(work, source ?? Source.Idle)))
        {
            Assert.True(DateTime.UtcNow < deadline, "the sleeping loop never took the offer");
            Thread.Yield();
        }
    }

    private sealed class RecordingBatching : ISendBatching
    {
        private int _sent;

        public bool Holding { get; private set; }

        public int Sent => Volatile.Read(ref _sent);

        public void HoldSends() => Holding = true;

        public void SendHeld()
        {
            var held = Holding;
            Holding = false;
            if (held)
            {
                Interlocked.Increment(ref _sent);
            }
        }

        public void FlushHeld()
        {
        }
    }

    private sealed class Source(bool saturated) : IInlineSource
    {
        public static readonly Source Idle = new(false);
        public static readonly Source Saturated = new(true);

        public bool IsSaturated => saturated;
    }

    private sealed class SwitchableSource : IInlineSource
    {
        public bool IsSaturated { get; set; }
    }

    private sealed class Target(Action onTimer) : ITimerTarget
    {
        public Thread? FiredOn { get; private set; }

        public void OnTimer(int kind, long timerId)
        {
            FiredOn = Thread.CurrentThread;
            onTimer();
        }
    }
}
