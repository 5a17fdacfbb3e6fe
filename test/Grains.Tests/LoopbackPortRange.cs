using System.Net;
using System.Net.Sockets;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>Loopback ports for silo processes started by the tests.</summary>
internal static class LoopbackPortRange
{
    /// <summary>The first of <paramref name="count"/> consecutive loopback ports free for TCP and UDP.</summary>
    public static int Free(int count)
    {
        while (true)
        {
            // Below Linux's ephemeral range (32768-60999), where outgoing connections of tests running
            // at the same time could take a port between this check and the silo binding it.
            var first = Random.Shared.Next(20_000, 32_000);
            if (Enumerable.Range(first, count).All(IsFree))
            {
                return first;
            }
        }
    }

    private static bool IsFree(int port)
    {
        try
        {
            using var tcp = new TcpListener(IPAddress.Loopback, port);
            tcp.Start();
            using var udp = new UdpClient(new IPEndPoint(IPAddress.Loopback, port));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
