using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Transport;
using Orleans.Paxos.TestSupport;

namespace Orleans.Paxos.Engine.Benchmarks;

/// <summary>
/// Two <see cref="NetworkTransport"/>s on 127.0.0.1: one-way frames/s and MB/s for several value sizes and sender
/// counts, with allocated bytes per frame (whole process: senders, transport threads and a counting sink).
/// Senders keep a bounded window of frames in flight so that UDP is measured without overrunning the receiver.
/// Options: <c>--seconds N</c> (measured time per case, default 3), <c>--sizes 100,2048,102400</c> (value bytes),
/// <c>--senders 1,8</c>.
/// </summary>
internal static class TransportBenchmark
{
    public const string Summary = "two NetworkTransports on loopback: frames/s, MB/s, bytes allocated per frame";


    public static Task<int> RunAsync(string[] args)
    {
        var seconds = 3.0;
        int[] valueSizes = [100, 2 * 1024, 100 * 1024];
        int[] senderCounts = [1, 8];
        for (var i = 0; i < args.Length - 1; i++)
        {
            switch (args[i])
            {
                case "--seconds":
                    seconds = double.Parse(args[i + 1], CultureInfo.InvariantCulture);
                    break;
                case "--sizes":
                    valueSizes = ParseList(args[i + 1]);
                    break;
                case "--senders":
                    senderCounts = ParseList(args[i + 1]);
                    break;
                default:
                    break;
            }
        }

        var receiverOptions = new NetworkTransportOptions { LocalNode = NodeId.From(IPAddress.Loopback, LoopbackPorts.Next()) };
        var senderOptions = new NetworkTransportOptions { LocalNode = NodeId.From(IPAddress.Loopback, LoopbackPorts.Next()) };
        Console.WriteLine("# transport benchmark");
        Console.WriteLine($"runtime {RuntimeInformation.FrameworkDescription}, {RuntimeInformation.OSDescription}, {Environment.ProcessorCount} cores, server GC {System.Runtime.GCSettings.IsServerGC}");
        Console.WriteLine($"receiver {receiverOptions.LocalNode}, sender {senderOptions.LocalNode}; UdpMaxSize {senderOptions.UdpMaxSize} B, TCP IO threads {senderOptions.TcpIoThreadCount}+{senderOptions.TcpIoThreadCount}, TCP queue cap {senderOptions.TcpQueueMaxFrames} frames / {senderOptions.TcpQueueMaxBytes >> 20} MiB");
        Console.WriteLine($"measured {seconds.ToString(CultureInfo.InvariantCulture)} s per case after 0.5 s warm-up; frames are PaxosMsg Accept built by FrameCodec.Encode; window = frames in flight per case");
        Console.WriteLine();
        Console.WriteLine($"{"value",8} {"kind",4} {"senders",7} {"window",6} {"frame B",8} {"frames/s",12} {"MB/s",9} {"alloc B/frame",13} {"lost",6}");

        var sink = new CountingSink();
        using var receiver = new NetworkTransport(receiverOptions);
        using var sender = new NetworkTransport(senderOptions);
        receiver.Start(sink);
        sender.Start(new CountingSink());

        foreach (var valueSize in valueSizes)
        {
            foreach (var senders in senderCounts)
            {
                RunCase(sender, receiver.LocalNode, sink, valueSize, senders, seconds);
            }
        }

        Console.WriteLine();
        Console.WriteLine($"sender:   {sender.Statistics}");
        Console.WriteLine($"receiver: {receiver.Statistics}");
        return Task.FromResult(0);
    }

    private static void RunCase(NetworkTransport sender, NodeId destination, CountingSink sink, int valueSize, int senders, double seconds)
    {
        var frame = FrameCodec.Encode(0, 0, new PaxosMsg
        {
            MsgType = (int)PaxosMsgType.Accept,
            NodeID = sender.LocalNode,
            InstanceID = 1,
            ProposalID = 1,
            Value = ByteString.CopyFrom(new byte[valueSize]),
        });
        var kind = frame.Length > 4096 ? TransportKind.Tcp : TransportKind.Udp;

        // Bounded in flight: enough to keep the pipe full, small enough that UDP does not overrun the receiver's
        // 4 MiB socket buffer (the kernel charges more than the payload per datagram).
        var window = (int)Math.Clamp(1024L * 1024 / frame.Length, 16, 2000);
        var baseline = sink.Frames;
        long sent = 0;
        var stop = 0;
        var threads = new Thread[senders];
        for (var t = 0; t < senders; t++)
        {
            threads[t] = new Thread(() =>
            {
                var spinner = default(SpinWait);
                while (Volatile.Read(ref stop) == 0)
                {
                    if (Interlocked.Read(ref sent) - (sink.Frames - baseline) >= window)
                    {
                        spinner.SpinOnce();
                        continue;
                    }

                    spinner.Reset();
                    if (sender.Send(destination, frame, kind))
                    {
                        Interlocked.Increment(ref sent);
                    }
                }
            })
            { IsBackground = true, Name = $"bench-sender-{t}" };
            threads[t].Start();
        }

        Thread.Sleep(500);
        var startFrames = sink.Frames;
        var startBytes = sink.Bytes;
        var startAlloc = GC.GetTotalAllocatedBytes(precise: true);
        var watch = Stopwatch.StartNew();
        Thread.Sleep(TimeSpan.FromSeconds(seconds));
        var frames = sink.Frames - startFrames;
        var bytes = sink.Bytes - startBytes;
        var alloc = GC.GetTotalAllocatedBytes(precise: true) - startAlloc;
        var elapsed = watch.Elapsed.TotalSeconds;
        Volatile.Write(ref stop, 1);
        foreach (var thread in threads)
        {
            thread.Join();
        }

        // Wait for the tail; UDP datagrams that never arrive are reported as lost rather than waited for.
        var drain = Stopwatch.StartNew();
        while (sink.Frames - baseline < Interlocked.Read(ref sent) && drain.Elapsed < TimeSpan.FromSeconds(2))
        {
            Thread.Sleep(10);
        }

        var lost = Interlocked.Read(ref sent) - (sink.Frames - baseline);
        var perFrame = frames == 0 ? 0 : alloc / (double)frames;
        Console.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"{valueSize,8} {kind,4} {senders,7} {window,6} {frame.Length,8} {frames / elapsed,12:N0} {bytes / elapsed / 1e6,9:N1} {perFrame,13:N1} {lost,6}"));

        // The in-flight accounting starts from what was delivered, so a lost datagram would shrink the window
        // for the next case forever; each case starts clean instead.
        sink.Reset();
    }

    private static int[] ParseList(string text) =>
        Array.ConvertAll(text.Split(',', StringSplitOptions.RemoveEmptyEntries), t => int.Parse(t, CultureInfo.InvariantCulture));

    /// <summary>Counts frames and bytes; does nothing else so that the transport is what is measured.</summary>
    private sealed class CountingSink : IFrameSink
    {
        private long _frames;
        private long _bytes;

        public long Frames => Interlocked.Read(ref _frames);

        public long Bytes => Interlocked.Read(ref _bytes);

        public void OnFrame(ReadOnlySpan<byte> frame, TransportKind via)
        {
            Interlocked.Increment(ref _frames);
            Interlocked.Add(ref _bytes, frame.Length);
        }

        public void Reset()
        {
            Interlocked.Exchange(ref _frames, 0);
            Interlocked.Exchange(ref _bytes, 0);
        }
    }
}
