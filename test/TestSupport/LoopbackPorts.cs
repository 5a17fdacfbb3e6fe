using System.Net;
using System.Net.Sockets;

namespace Orleans.Paxos.TestSupport;

/// <summary>
/// Hands out 127.0.0.1 ports that are free for both UDP and TCP, from <see cref="First"/> up to
/// <see cref="End"/>: below Linux's ephemeral range (32768-60999), so that outgoing connections and UDP send
/// sockets, which take ephemeral ports, cannot grab a port between its allocation and its use. Thread-safe.
/// </summary>
/// <remarks>
/// Test processes running at the same time (several test projects, or the tests of several checkouts) never
/// hand out the same port: a process takes ports only from blocks of <see cref="BlockSize"/> ports that it
/// reserved by locking a file per block in the temp folder (<c>orleans-paxos-test-ports/&lt;first port&gt;.lock</c>).
/// The lock is released when the process ends, kill -9 included; the files stay and are reused. Every port is
/// also bound once for UDP and TCP before it is handed out, which skips ports other programs hold.
/// </remarks>
public static class LoopbackPorts
{
    /// <summary>The lowest port handed out.</summary>
    public const int First = 20_000;

    /// <summary>The first port above the range: Linux's ephemeral range starts here.</summary>
    public const int End = 32_768;

    /// <summary>Ports per reserved block; also the longest run <see cref="Range"/> gives.</summary>
    public const int BlockSize = 32;

    private const int Blocks = (End - First) / BlockSize;
    private static readonly Lock Gate = new();
    private static readonly Dictionary<int, FileStream> Held = []; // open for the process's lifetime: the locks
    private static readonly string LockFolder = Path.Combine(Path.GetTempPath(), "orleans-paxos-test-ports");
    private static int _block = Random.Shared.Next(Blocks);
    private static int _next;
    private static int _blockEnd;

    /// <summary>
    /// A port free for UDP and TCP on 127.0.0.1 a moment ago, and not handed out before by this process (unless
    /// it used every block it could reserve and starts over in its own blocks).
    /// </summary>
    public static int Next() => Range(1);

    /// <summary>
    /// The first of <paramref name="count"/> consecutive ports free for UDP and TCP on 127.0.0.1 (the Silo
    /// program's local cluster takes a first port and uses the next two).
    /// </summary>
    public static int Range(int count)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, BlockSize);
        lock (Gate)
        {
            // Moves on through the blocks; after a full turn it starts over in its own, where only ports no
            // socket holds now are handed out again.
            for (var tries = 0; tries <= 2 * (End - First); tries++)
            {
                if (_next + count > _blockEnd)
                {
                    TakeNextBlock();
                }

                var first = _next;
                var busy = Enumerable.Range(first, count).Where(p => !IsFree(p)).Take(1).ToList();
                if (busy.Count == 0)
                {
                    _next = first + count;
                    return first;
                }

                _next = busy[0] + 1;
            }
        }

        throw new InvalidOperationException($"No {count} consecutive loopback ports free for UDP and TCP in {First}-{End - 1}.");
    }

    /// <summary>Moves to the next block that this process holds or can lock.</summary>
    private static void TakeNextBlock()
    {
        for (var i = 1; i <= Blocks; i++)
        {
            var block = (_block + i) % Blocks;
            if (Held.ContainsKey(block) || TryLock(block))
            {
                _block = block;
                _next = First + (block * BlockSize);
                _blockEnd = _next + BlockSize;
                return;
            }
        }

        throw new InvalidOperationException($"Every block of loopback ports in {First}-{End - 1} is locked by other processes ({LockFolder}).");
    }

    private static bool TryLock(int block)
    {
        try
        {
            Directory.CreateDirectory(LockFolder);
            var path = Path.Combine(LockFolder, (First + (block * BlockSize)).ToString(System.Globalization.CultureInfo.InvariantCulture) + ".lock");

            // FileShare.None is an exclusive flock on Linux: another process's open fails until this one ends.
            Held[block] = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            return true;
        }
        catch (IOException)
        {
            return false; // held by another process
        }
        catch (UnauthorizedAccessException)
        {
            return false; // another user's file
        }
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
