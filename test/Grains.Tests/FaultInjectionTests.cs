using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Grains.Hosting;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>The fault-control file that lets the process fault harness partition silos.</summary>
public sealed class FaultInjectionTests
{
    [Fact]
    public void Control_file_rules_parse_and_bad_lines_are_refused()
    {
        var (outbound, inbound) = FaultInjectionTransportFactory.Parse("# partition\noutbound 127.0.0.1:1001\n\n  inbound 127.0.0.1:1002 \noutbound 127.0.0.1:1003\n");
        Assert.Equal(new HashSet<NodeId> { NodeId.Parse("127.0.0.1:1001"), NodeId.Parse("127.0.0.1:1003") }, outbound);
        Assert.Equal(new HashSet<NodeId> { NodeId.Parse("127.0.0.1:1002") }, inbound);
        Assert.Empty(FaultInjectionTransportFactory.Parse(string.Empty).Outbound);
        Assert.Throws<FormatException>(() => FaultInjectionTransportFactory.Parse("drop 127.0.0.1:1001"));
        Assert.Throws<FormatException>(() => FaultInjectionTransportFactory.Parse("outbound"));
        Assert.Throws<FormatException>(() => FaultInjectionTransportFactory.Parse("inbound nowhere"));
    }

    [Fact]
    public async Task The_filter_follows_the_file_and_keeps_its_rules_when_the_file_is_bad()
    {
        var path = Path.Combine(Path.GetTempPath(), "paxos-fault-control-" + Guid.NewGuid().ToString("N") + ".txt");
        try
        {
            var log = new ErrorCount();
            using var factory = new FaultInjectionTransportFactory(path, log);
            Assert.False(factory.Filter.IsActive); // no file: nothing blocked

            var peer = NodeId.Parse("127.0.0.1:1001");
            await File.WriteAllTextAsync(path, "outbound 127.0.0.1:1001\ninbound 127.0.0.1:1001\n");
            await FollowedAsync(() => factory.Filter.Outbound.Contains(peer) && factory.Filter.Inbound.Contains(peer));

            // A file that does not parse is logged as an error once it was read; the rules stay.
            await File.WriteAllTextAsync(path, "garbage\n");
            await Poll.UntilAsync(() => log.Errors > 0, TimeSpan.FromSeconds(30), "the factory to read the bad control file", FaultInjectionTransportFactory.PollInterval);
            Assert.Contains(peer, factory.Filter.Outbound);

            await File.WriteAllTextAsync(path, string.Empty);
            await FollowedAsync(() => !factory.Filter.IsActive);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static Task FollowedAsync(Func<bool> condition) =>
        Poll.UntilAsync(condition, TimeSpan.FromSeconds(30), "the filter to follow the control file", TimeSpan.FromMilliseconds(50));

    /// <summary>Counts the errors logged (the factory logs one for each control file that does not parse).</summary>
    private sealed class ErrorCount : ILoggerFactory, ILogger
    {
        private int _errors;

        public int Errors => Volatile.Read(ref _errors);

        public ILogger CreateLogger(string categoryName) => this;

        public void AddProvider(ILoggerProvider provider)
        {
        }

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel >= LogLevel.Error)
            {
                Interlocked.Increment(ref _errors);
            }
        }

        public void Dispose()
        {
        }
    }
}
