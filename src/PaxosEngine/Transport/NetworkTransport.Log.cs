using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Transport;

/// <summary>Source-generated log messages of <see cref="NetworkTransport"/>.</summary>
internal static partial class NetworkTransportLog
{
    [LoggerMessage(1, LogLevel.Information, "Transport {Node} started: UDP and TCP on port {Port}, UDP up to {UdpMaxSize} B, {Threads} TCP read and {Threads} TCP write thread(s), peer authentication {Authentication}")]
    public static partial void Started(ILogger logger, NodeId node, int port, int udpMaxSize, int threads, string authentication);

    [LoggerMessage(2, LogLevel.Information, "Transport {Node} stopped; {Statistics}")]
    public static partial void Stopped(ILogger logger, NodeId node, TransportStatistics statistics);

    [LoggerMessage(3, LogLevel.Debug, "Transport {Node}: connected to {Destination}")]
    public static partial void Connected(ILogger logger, NodeId node, NodeId destination);

    [LoggerMessage(4, LogLevel.Debug, "Transport {Node}: connect to {Destination} failed ({Error}); retry in {BackoffMs} ms")]
    public static partial void ConnectFailed(ILogger logger, NodeId node, NodeId destination, SocketError error, long backoffMs);

    [LoggerMessage(5, LogLevel.Warning, "Transport {Node}: connection to {Destination} lost ({Error}); {Frames} frame(s) in flight dropped, reconnect in {BackoffMs} ms")]
    public static partial void ConnectionLost(ILogger logger, NodeId node, NodeId destination, SocketError error, int frames, long backoffMs);

    [LoggerMessage(6, LogLevel.Warning, "Transport {Node}: TCP length prefix {Prefix} from {Remote} is outside 0..{MaxFrameLength}; connection closed")]
    public static partial void BadTcpLength(ILogger logger, NodeId node, EndPoint? remote, uint prefix, int maxFrameLength);

    [LoggerMessage(7, LogLevel.Warning, "Transport {Node}: UDP receive failed ({Error})")]
    public static partial void UdpReceiveFailed(ILogger logger, NodeId node, SocketError error);

    [LoggerMessage(8, LogLevel.Debug, "Transport {Node}: UDP send to {Destination} failed ({Error})")]
    public static partial void UdpSendFailed(ILogger logger, NodeId node, NodeId destination, SocketError error);

    [LoggerMessage(9, LogLevel.Error, "Transport {Node}: the frame sink threw on a {Kind} frame of {Length} B; the frame is lost and the transport goes on")]
    public static partial void SinkFailed(ILogger logger, Exception exception, NodeId node, TransportKind kind, int length);

    [LoggerMessage(10, LogLevel.Warning, "Transport {Node}: incoming connection from {Remote} refused, already {Count} (MaxIncomingConnections)")]
    public static partial void IncomingRefused(ILogger logger, NodeId node, EndPoint? remote, int count);

    [LoggerMessage(11, LogLevel.Error, "Transport {Node}: thread {Thread} did not stop within {TimeoutMs} ms")]
    public static partial void ThreadDidNotStop(ILogger logger, NodeId node, string? thread, int timeoutMs);

    [LoggerMessage(12, LogLevel.Debug, "Transport {Node}: accept failed ({Error})")]
    public static partial void AcceptFailed(ILogger logger, NodeId node, SocketError error);

    [LoggerMessage(13, LogLevel.Debug, "Transport {Node}: incoming connection from {Remote} closed ({Error})")]
    public static partial void IncomingClosed(ILogger logger, NodeId node, EndPoint? remote, SocketError error);

    [LoggerMessage(14, LogLevel.Error, "Transport {Node}: could not bind UDP and TCP on {EndPoint}")]
    public static partial void BindFailed(ILogger logger, Exception exception, NodeId node, IPEndPoint endPoint);

    [LoggerMessage(15, LogLevel.Warning, "Transport {Node}: refused {Count} frame(s) without a valid peer-authentication tag (the latest by {Kind} from {Remote}; at most one such warning per {IntervalSeconds} s). Do all nodes share the same secret?")]
    public static partial void AuthenticationFailed(ILogger logger, NodeId node, long count, TransportKind kind, string remote, int intervalSeconds);

    [LoggerMessage(16, LogLevel.Warning, "Transport {Node}: UDP receive failed (errno {Errno}); retrying in {DelayMs} ms")]
    public static partial void UdpBatchReceiveFailed(ILogger logger, NodeId node, int errno, int delayMs);

    [LoggerMessage(17, LogLevel.Information, "Transport {Node}: sendmmsg/recvmmsg are not available here ({Reason}); datagrams are sent and received one per call")]
    public static partial void DatagramBatchesUnavailable(ILogger logger, NodeId node, string reason);
}
