using Microsoft.Extensions.Logging;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Storage;
using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Node;

/// <summary>Builds the built-in transport and storage from node options.</summary>
internal static class DefaultComponents
{
    public static ILogStorage CreateStorage(PaxosNodeOptions options, ILoggerFactory loggerFactory) =>
        new FileLogStorage(new LogStorageOptions
        {
            RootPath = options.StoragePath,
            GroupCount = options.GroupCount,
            DataFileSize = checked((int)options.DataFileSize),
            SharedLog = options.SharedLog,
            FlushFilesTogether = options.FlushFilesTogether,
            Logger = loggerFactory.CreateLogger<FileLogStorage>(),
            FileOperations = options.FaultInjection?.SyncJournal is { Length: > 0 } journal ? new SyncJournalFileOperations(journal) : LogFileOperations.Os,
        });

    public static NetworkTransport CreateTransport(PaxosNodeOptions options, NodeId me, ILoggerFactory loggerFactory, PeerFilter? peerFilter = null) =>
        new NetworkTransport(new NetworkTransportOptions
        {
            LocalNode = me,
            UdpMaxSize = options.UdpMaxSize,
            CoalesceDatagrams = options.CoalesceDatagrams,
            BatchDatagrams = options.BatchDatagrams,
            MaxFrameLength = PaxosNode.MaxFrameLength(options),
            TcpIoThreadCount = options.IoThreadCount,
            PeerFilter = peerFilter,
            AuthenticationKey = options.PeerAuthentication.ResolveKey(),
            Logger = loggerFactory.CreateLogger<NetworkTransport>(),
        });
}
