using System.Collections.Concurrent;
using System.Diagnostics.Tracing;
using System.Globalization;

namespace Orleans.Paxos.Engine.Benchmarks;

/// <summary>
/// Which types this process allocates (<c>consensus --alloc-types</c>): listens to the runtime's allocation ticks
/// (one per about 100 KB allocated, naming the type that crossed the mark) while <see cref="Sampling"/> is on, and
/// prints the types with the most sampled bytes. Only this process: run it with <c>--procs 1</c> to see all nodes.
/// </summary>
internal sealed class AllocationSampler : EventListener
{
    private const string RuntimeSource = "Microsoft-Windows-DotNETRuntime";
    private const long GcKeyword = 0x1;
    private readonly ConcurrentDictionary<string, long> _bytes = new();
    private long _total;

    /// <summary>Whether ticks are counted now.</summary>
    public bool Sampling { get; set; }

    /// <summary>Prints the <paramref name="top"/> types by sampled bytes, as bytes per operation.</summary>
    public void Print(long operations, int top = 20)
    {
        Console.WriteLine($"  sampled allocations by type ({Interlocked.Read(ref _total) / 1e6:0.#} MB in ticks of ~100 KB; B/op is an estimate):");
        foreach (var (type, bytes) in _bytes.OrderByDescending(p => p.Value).Take(top))
        {
            var perOp = operations == 0 ? double.NaN : (double)bytes / operations;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    {perOp,8:0} B/op  {100.0 * bytes / Math.Max(1, Interlocked.Read(ref _total)),5:0.0} %  {type}"));
        }
    }

    protected override void OnEventSourceCreated(EventSource eventSource)
    {
        if (eventSource.Name == RuntimeSource)
        {
            EnableEvents(eventSource, EventLevel.Verbose, (EventKeywords)GcKeyword);
        }
    }

    protected override void OnEventWritten(EventWrittenEventArgs eventData)
    {
        if (!Sampling || eventData.EventName?.StartsWith("GCAllocationTick", StringComparison.Ordinal) != true || eventData.PayloadNames is not { } names || eventData.Payload is not { } payload)
        {
            return;
        }

        var typeIndex = names.IndexOf("TypeName");
        var amountIndex = names.IndexOf("AllocationAmount64");
        if (typeIndex < 0 || amountIndex < 0)
        {
            return;
        }

        var amount = Convert.ToInt64(payload[amountIndex], CultureInfo.InvariantCulture);
        var type = payload[typeIndex] as string ?? "?";
        _bytes.AddOrUpdate(type, amount, (_, sum) => sum + amount);
        Interlocked.Add(ref _total, amount);
    }
}
