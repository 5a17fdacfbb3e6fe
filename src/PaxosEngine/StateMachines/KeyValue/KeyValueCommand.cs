using Google.Protobuf;

namespace Orleans.Paxos.Engine.StateMachines.KeyValue;

/// <summary>Encodes key-value operations as the values proposed to a group (a <see cref="KvOperation"/> message).</summary>
public static class KeyValueCommand
{
    /// <summary>A read through the log: linearizable, since it is ordered with every write of the group.</summary>
    public static byte[] Get(ReadOnlySpan<byte> key) =>
        Encode(KvOperationType.Get, key, default, 0, false);

    /// <summary>An unconditional write.</summary>
    public static byte[] Put(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value) =>
        Encode(KvOperationType.Put, key, value, 0, false);

    /// <summary>A delete; when <paramref name="expectedVersion"/> is given, only if the key has that version.</summary>
    public static byte[] Delete(ReadOnlySpan<byte> key, ulong? expectedVersion = null) =>
        Encode(KvOperationType.Delete, key, default, expectedVersion ?? 0, expectedVersion.HasValue);

    /// <summary>A write that happens only if the key's version is <paramref name="expectedVersion"/> (0: the key must not exist).</summary>
    public static byte[] CompareAndSet(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, ulong expectedVersion) =>
        Encode(KvOperationType.CompareAndSet, key, value, expectedVersion, true);

    private static byte[] Encode(KvOperationType type, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, ulong expectedVersion, bool checkVersion)
    {
        if (key.IsEmpty)
        {
            throw new ArgumentException("A key must not be empty.", nameof(key));
        }

        var op = new KvOperation
        {
            Type = type,
            Key = ByteString.CopyFrom(key),
            Value = ByteString.CopyFrom(value),
            ExpectedVersion = expectedVersion,
            CheckVersion = checkVersion,
        };
        return op.ToByteArray();
    }
}
