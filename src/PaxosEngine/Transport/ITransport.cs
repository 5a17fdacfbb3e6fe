using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Transport;

/// <summary>How a frame travels between nodes.</summary>
public enum TransportKind
{
    /// <summary>One frame per UDP datagram (frames up to the UDP threshold).</summary>
    Udp = 0,

    /// <summary>A TCP stream with a big-endian length prefix.</summary>
    Tcp = 1,
}

/// <summary>Receives complete frames from a transport.</summary>
/// <remarks>Called on transport threads, possibly several at once; the span is only valid during the call.</remarks>
public interface IFrameSink
{
    /// <summary>A complete frame arrived (group index … checksum, without the TCP length prefix).</summary>
    void OnFrame(ReadOnlySpan<byte> frame, TransportKind via);
}

/// <summary>
/// Moves PhxPaxos frames between nodes. A frame is <c>[group index][header length][Header][body][crc]</c>;
/// the transport adds only the TCP length prefix. Thread-safe.
/// </summary>
public interface ITransport : IDisposable
{
    /// <summary>This node.</summary>
    NodeId LocalNode { get; }

    /// <summary>Starts receiving and sending; frames received are handed to <paramref name="sink"/>.</summary>
    void Start(IFrameSink sink);

    /// <summary>
    /// Queues a frame for <paramref name="destination"/>. TCP is used when <paramref name="preferred"/>
    /// is <see cref="TransportKind.Tcp"/> or the frame is larger than the UDP threshold.
    /// The transport owns <paramref name="frame"/> afterwards; the caller must not change it.
    /// </summary>
    /// <returns>False when the frame was dropped at once (queue full, too large, stopped); counted.</returns>
    bool Send(NodeId destination, byte[] frame, TransportKind preferred);
}

/// <summary>
/// A transport that can hold the frames a thread sends during a burst of work and send them together:
/// a loop around its pass, the storage's writer around the completions of one batch.
/// </summary>
internal interface ISendBatching
{
    /// <summary>From now on, frames the current thread sends are held until it calls <see cref="SendHeld"/>.</summary>
    void HoldSends();

    /// <summary>Sends what the current thread holds and stops holding.</summary>
    void SendHeld();

    /// <summary>Sends what the current thread holds and goes on holding (before the thread blocks, or after a long burst).</summary>
    void FlushHeld();
}

