using System.Text;
using Google.Protobuf;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Engine.Tests.Storage;

/// <summary>Builders of serialized <see cref="AcceptorStateData"/> records and temp folders for storage tests.</summary>
internal static class StorageTestData
{
    /// <summary>The node id of phxecho's 127.0.0.1:11111, as seen in the observed records.</summary>
    public const ulong ObservedNodeId = 72058139498785639;

    public static byte[] Promise(ulong instanceId, ulong promiseId = 1, ulong nodeId = ObservedNodeId) =>
        new AcceptorStateData
        {
            InstanceID = instanceId,
            PromiseID = promiseId,
            PromiseNodeID = nodeId,
            AcceptedID = 0,
            AcceptedNodeID = 0,
            AcceptedValue = ByteString.Empty,
            Checksum = 0,
        }.ToByteArray();

    public static byte[] Accept(ulong instanceId, ReadOnlySpan<byte> value, uint checksum, ulong ballot = 1, ulong nodeId = ObservedNodeId) =>
        new AcceptorStateData
        {
            InstanceID = instanceId,
            PromiseID = ballot,
            PromiseNodeID = nodeId,
            AcceptedID = ballot,
            AcceptedNodeID = nodeId,
            AcceptedValue = ByteString.CopyFrom(value),
            Checksum = checksum,
        }.ToByteArray();

    /// <summary>An accept record whose value is SMID 1 followed by <paramref name="text"/>, as phxecho writes.</summary>
    public static byte[] EchoAccept(ulong instanceId, string text, uint checksum)
    {
        var value = new byte[4 + Encoding.ASCII.GetByteCount(text)];
        value[0] = 1;
        Encoding.ASCII.GetBytes(text, value.AsSpan(4));
        return Accept(instanceId, value, checksum);
    }

    /// <summary>A valid record of <paramref name="size"/>-ish bytes whose content depends on <paramref name="seed"/>.</summary>
    public static byte[] Sized(ulong instanceId, int size, int seed)
    {
        var value = new byte[Math.Max(0, size)];
        new Random(seed).NextBytes(value);
        return Accept(instanceId, value, (uint)seed | 1u, ballot: (ulong)(seed & 0xFFFF) + 1);
    }

    /// <summary>Parses the hex columns of an <c>xxd</c> dump.</summary>
    public static byte[] FromXxd(string dump)
    {
        var bytes = new List<byte>();
        foreach (var rawLine in dump.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var hex = rawLine[(rawLine.IndexOf(':', StringComparison.Ordinal) + 1)..].TrimStart();
            var end = hex.IndexOf("  ", StringComparison.Ordinal);
            hex = (end >= 0 ? hex[..end] : hex).Replace(" ", string.Empty, StringComparison.Ordinal);
            bytes.AddRange(Convert.FromHexString(hex));
        }

        return [.. bytes];
    }
}

/// <summary>A fresh folder under the temp path, deleted on dispose.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "paxos-storage-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public void Dispose()
    {
        if (Directory.Exists(Path))
        {
            Directory.Delete(Path, recursive: true);
        }
    }
}

/// <summary>A put callback whose <see cref="Done"/> task completes, or fails, when the put does.</summary>
internal sealed class CompletedPut : IPutCallback
{
    private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Task Done => _done.Task;

    public void OnPutCompleted(Exception? error)
    {
        if (error is null)
        {
            _done.TrySetResult();
        }
        else
        {
            _done.TrySetException(error);
        }
    }
}
