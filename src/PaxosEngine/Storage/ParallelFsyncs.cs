using System.Runtime.ExceptionServices;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>
/// Runs an action (an <c>fdatasync</c>) for each item of a list (groups) on the calling thread and a few helper threads at
/// once, and returns when every one has finished. <c>fdatasync</c>s of different files that run at the same time share
/// the file system's journal commit and the flush of the disk; one after the other, each pays for its own.
/// </summary>
/// <remarks>
/// One caller at a time (a log writer thread). The helper threads start at the first list of two or more groups and
/// stop at <see cref="Dispose"/>. Each round copies its list, so a helper that wakes late finds nothing left to take in
/// its round and never touches the next one.
/// </remarks>
/// <typeparam name="T">What an action is run for (a group's log).</typeparam>
internal sealed class ParallelFsyncs<T> : IDisposable
{
    /// <summary>Helper threads besides the caller.</summary>
    internal const int Helpers = 7;

    private readonly object _gate = new();
    private readonly string _name;
    private Thread[]? _threads;
    private Round? _round;
    private int _roundNumber;
    private bool _stopping;

    /// <summary>Creates the runner; <paramref name="name"/> names its threads.</summary>
    public ParallelFsyncs(string name) => _name = name;

    /// <summary>
    /// Calls <paramref name="action"/> once for each of <paramref name="groups"/>, several at once, and returns when all
    /// have returned. If any threw, rethrows the first exception after all have finished.
    /// </summary>
    public void Run(List<T> groups, Action<T> action)
    {
        if (groups.Count < 2)
        {
            foreach (var group in groups)
            {
                action(group);
            }

            return;
        }

        var round = new Round([.. groups], action);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_stopping, this);
            _threads ??= StartThreads();
            _round = round;
            _roundNumber++;
            Monitor.PulseAll(_gate);
        }

        round.Work();
        round.WaitUntilFinished();
        if (round.Error is { } error)
        {
            ExceptionDispatchInfo.Throw(error);
        }
    }

    /// <summary>Stops the helper threads (after the round they are in).</summary>
    public void Dispose()
    {
        Thread[]? threads;
        lock (_gate)
        {
            _stopping = true;
            threads = _threads;
            Monitor.PulseAll(_gate);
        }

        foreach (var thread in threads ?? [])
        {
            thread.Join();
        }
    }

    private Thread[] StartThreads()
    {
        var threads = new Thread[Helpers];
        for (var i = 0; i < threads.Length; i++)
        {
            threads[i] = new Thread(HelperLoop) { IsBackground = true, Name = $"{_name} fsync helper {i}" };
            threads[i].Start();
        }

        return threads;
    }

    private void HelperLoop()
    {
        var seen = 0;
        while (true)
        {
            Round round;
            lock (_gate)
            {
                while (_roundNumber == seen && !_stopping)
                {
                    Monitor.Wait(_gate);
                }

                if (_stopping)
                {
                    return;
                }

                seen = _roundNumber;
                round = _round!;
            }

            round.Work();
        }
    }

    /// <summary>One list of groups; its threads take them one at a time.</summary>
    private sealed class Round(T[] groups, Action<T> action)
    {
        private readonly object _finished = new();
        private int _next = -1;
        private int _unfinished = groups.Length;
        private Exception? _error;

        public Exception? Error => Volatile.Read(ref _error);

        public void Work()
        {
            int i;
            while ((i = Interlocked.Increment(ref _next)) < groups.Length)
            {
                try
                {
                    action(groups[i]);
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref _error, e, null);
                }

                if (Interlocked.Decrement(ref _unfinished) == 0)
                {
                    lock (_finished)
                    {
                        Monitor.PulseAll(_finished);
                    }
                }
            }
        }

        public void WaitUntilFinished()
        {
            lock (_finished)
            {
                while (Volatile.Read(ref _unfinished) > 0)
                {
                    Monitor.Wait(_finished);
                }
            }
        }
    }
}
