using System.Net;
using System.Net.Sockets;

namespace Orleans.Paxos.Engine.Tests.Support;

/// <summary>
/// Hands out 127.0.0.1 ports free for both UDP and TCP. Ports come from below the usual ephemeral range
/// (32768+) so that outgoing connections and UDP send sockets, which take ephemeral ports, cannot grab a port
/// between its allocation and its use.
/// </summary>
public static class LoopbackPorts
{
    private const int First = 20000;
    private const int Last = 32000;
    private static int _next = First + (Environment.ProcessId * 7919 % (Last - First));

    /// <summary>A port that was free for UDP and TCP a moment ago.</summary>
    public static int Next()
    {
        for (var attempt = 0; attempt < 1000; attempt++)
        {
            var port = First + (int)((uint)Interlocked.Increment(ref _next) % (Last - First));
            if (IsFree(port))
            {
                return port;
            }
        }

        throw new InvalidOperationException("No free loopback port for UDP and TCP in 20000-32000.");
    }

    private static bool IsFree(int port)
    {
        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        using var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            udp.Bind(endPoint);
            tcp.Bind(endPoint);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
