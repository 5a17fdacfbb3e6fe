using System.Buffers.Binary;
using Google.Protobuf;
using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.StateMachines;

/// <summary>
/// Packs values as PhxPaxos stores them: <c>[int32 LE state machine id][value]</c>; a batch is the
/// batch id followed by a <see cref="BatchPaxosValues"/> message.
/// </summary>
public static class ValueCodec
{
    /// <summary>Bytes of the state machine id prefix.</summary>
    public const int SmIdLength = 4;

    /// <summary>Packs one value for a state machine.</summary>
    public static byte[] Pack(int smId, ReadOnlySpan<byte> value)
    {
        var packed = GC.AllocateUninitializedArray<byte>(SmIdLength + value.Length); // every byte is written below
        BinaryPrimitives.WriteInt32LittleEndian(packed, smId);
        value.CopyTo(packed.AsSpan(SmIdLength));
        return packed;
    }

    /// <summary>Packs several values into one batch value.</summary>
    public static byte[] PackBatch(IReadOnlyList<(int SmId, ReadOnlyMemory<byte> Value)> values)
    {
        var batch = new BatchPaxosValues();
        foreach (var (smId, value) in values)
        {
            // The message lives only until it is written out below: it may refer to the caller's memory.
            batch.Values.Add(new PaxosValue { SMID = smId, Value = UnsafeByteOperations.UnsafeWrap(value) });
        }

        var packed = GC.AllocateUninitializedArray<byte>(SmIdLength + batch.CalculateSize());
        BinaryPrimitives.WriteInt32LittleEndian(packed, ReservedSmIds.Batch);
        batch.WriteTo(packed.AsSpan(SmIdLength));
        return packed;
    }

    /// <summary>Splits a packed value into its state machine id and body; false when shorter than the prefix.</summary>
    public static bool TryUnpack(ReadOnlySpan<byte> packed, out int smId, out ReadOnlySpan<byte> body)
    {
        if (packed.Length < SmIdLength)
        {
            smId = 0;
            body = default;
            return false;
        }

        smId = BinaryPrimitives.ReadInt32LittleEndian(packed);
        body = packed[SmIdLength..];
        return true;
    }

    /// <summary>Expands a packed value into its (state machine id, value) parts: one, or a batch's.</summary>
    public static IReadOnlyList<(int SmId, byte[] Value)> Expand(ReadOnlySpan<byte> packed)
    {
        if (!TryUnpack(packed, out var smId, out var body))
        {
            return [];
        }

        if (smId != ReservedSmIds.Batch)
        {
            return [(smId, body.ToArray())];
        }

        var batch = BatchPaxosValues.Parser.ParseFrom(body);
        var parts = new List<(int, byte[])>(batch.Values.Count);
        foreach (var v in batch.Values)
        {
            parts.Add((v.SMID, v.Value.ToByteArray()));
        }

        return parts;
    }
}
