using Microsoft.Extensions.Logging.Abstractions;
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
            using var factory = new FaultInjectionTransportFactory(path, NullLoggerFactory.Instance);
            Assert.False(factory.Filter.IsActive); // no file: nothing blocked

            var peer = NodeId.Parse("127.0.0.1:1001");
            await File.WriteAllTextAsync(path, "outbound 127.0.0.1:1001\ninbound 127.0.0.1:1001\n");
            await WaitUntil(() => factory.Filter.Outbound.Contains(peer) && factory.Filter.Inbound.Contains(peer));

            await File.WriteAllTextAsync(path, "garbage\n");
            await Task.Delay(FaultInjectionTransportFactory.PollInterval * 5);
            Assert.Contains(peer, factory.Filter.Outbound);

            await File.WriteAllTextAsync(path, string.Empty);
            await WaitUntil(() => !factory.Filter.IsActive);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static async Task WaitUntil(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "the filter did not follow the control file within 30 s");
            await Task.Delay(50);
        }
    }
}
