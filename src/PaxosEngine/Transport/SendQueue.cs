using System.Collections.Concurrent;

namespace Orleans.Paxos.Engine.Transport;

/// <summary>
/// A bounded multi-producer, single-consumer queue whose consumer sleeps on an event instead of
/// spinning. <see cref="System.Collections.Concurrent.BlockingCollection{T}"/> spins before it blocks,
/// which on a two-core machine burns the CPU the Paxos loops need; here a producer only signals when
/// the consumer announced it is going to sleep.
/// </summary>
/// <typeparam name="T">The item type.</typeparam>
internal sealed class SendQueue<T> : IDisposable
{
    private readonly ConcurrentQueue<T> _items = new();
    private readonly AutoResetEvent _wake = new(false);
    private readonly int _capacity;
    private int _count;
    private int _sleeping;
    private volatile bool _completed;

    public SendQueue(int capacity) => _capacity = capacity;

    /// <summary>Adds an item; false when the queue is full or completed. Thread-safe.</summary>
    public bool TryAdd(T item)
    {
        if (_completed)
        {
            return false;
        }

        if (Interlocked.Increment(ref _count) > _capacity)
        {
            Interlocked.Decrement(ref _count);
            return false;
        }

        _items.Enqueue(item);
        if (Interlocked.Exchange(ref _sleeping, 0) == 1)
        {
            _wake.Set();
        }

        return true;
    }

    /// <summary>Takes the next item, waiting while the queue is empty; false once completed and drained. Consumer only.</summary>
    public bool TryTake(out T item)
    {
        while (true)
        {
            if (_items.TryDequeue(out item!))
            {
                Interlocked.Decrement(ref _count);
                return true;
            }

            if (_completed)
            {
                return false;
            }

            // Announce the sleep, then look once more so that an add racing with us is not missed.
            Volatile.Write(ref _sleeping, 1);
            if (!_items.IsEmpty || _completed)
            {
                Volatile.Write(ref _sleeping, 0);
                continue;
            }

            _wake.WaitOne(1000);
            Volatile.Write(ref _sleeping, 0);
        }
    }

    /// <summary>Takes an item without waiting. Thread-safe.</summary>
    public bool TryTakeNow(out T item)
    {
        if (_items.TryDequeue(out item!))
        {
            Interlocked.Decrement(ref _count);
            return true;
        }

        return false;
    }

    /// <summary>Refuses further adds and wakes the consumer.</summary>
    public void CompleteAdding()
    {
        _completed = true;
        _wake.Set();
    }

    public void Dispose() => _wake.Dispose();
}
