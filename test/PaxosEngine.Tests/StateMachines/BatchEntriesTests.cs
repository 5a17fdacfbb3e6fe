using Google.Protobuf;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.StateMachines;

namespace Orleans.Paxos.Engine.Tests.StateMachines;

/// <summary>
/// Batch entries read in place must be exactly what the protobuf parser reads: the same entries, and an
/// error exactly where it throws, whatever the bytes.
/// </summary>
public sealed class BatchEntriesTests
{
    [Fact]
    public void Reads_the_entries_of_a_packed_batch_as_slices_of_it()
    {
        var packed = ValueCodec.PackBatch([(7, new byte[] { 1, 2, 3 }), (-2, ReadOnlyMemory<byte>.Empty), (9, new byte[300])]);
        var body = packed.AsSpan(ValueCodec.SmIdLength);
        var entries = new BatchEntries();

        entries.Read(body);

        Assert.Equal(3, entries.Count);
        Assert.Equal([7, -2, 9], Enumerable.Range(0, 3).Select(entries.SmIdAt));
        Assert.Equal(new byte[] { 1, 2, 3 }, entries.ValueAt(body, 0).ToArray());
        Assert.True(entries.ValueAt(body, 1).IsEmpty);
        Assert.Equal(300, entries.ValueAt(body, 2).Length);
        Assert.True(body.Overlaps(entries.ValueAt(body, 0)), "the value is a slice of the batch, not a copy");
    }

    [Fact]
    public void Leaves_unknown_fields_to_the_protobuf_parser()
    {
        var entry = new PaxosValue { SMID = 3, Value = ByteString.CopyFrom(5, 6) };
        var bytes = new List<byte>();
        bytes.AddRange([0x0A, (byte)(entry.CalculateSize() + 2)]);
        bytes.AddRange(entry.ToByteArray());
        bytes.AddRange([0x18, 0x01]); // field 3, varint: unknown to PaxosValue
        var body = bytes.ToArray();
        var entries = new BatchEntries();

        entries.Read(body);

        Assert.Equal(1, entries.Count);
        Assert.Equal(3, entries.SmIdAt(0));
        Assert.Equal(new byte[] { 5, 6 }, entries.ValueAt(body, 0).ToArray());
    }

    [Fact]
    public void Agrees_with_the_protobuf_parser_on_valid_and_damaged_batches()
    {
        var random = new Random(1701);
        var entries = new BatchEntries();
        for (var round = 0; round < 20_000; round++)
        {
            var body = RandomBatch(random);
            if (round % 2 == 1)
            {
                Damage(random, ref body);
            }

            BatchPaxosValues? expected = null;
            try
            {
                expected = BatchPaxosValues.Parser.ParseFrom(body);
            }
            catch (InvalidProtocolBufferException)
            {
            }

            if (expected is null)
            {
                Assert.Throws<InvalidProtocolBufferException>(() => entries.Read(body));
                continue;
            }

            entries.Read(body);
            Assert.Equal(expected.Values.Count, entries.Count);
            for (var i = 0; i < entries.Count; i++)
            {
                Assert.Equal(expected.Values[i].SMID, entries.SmIdAt(i));
                Assert.True(expected.Values[i].Value.Span.SequenceEqual(entries.ValueAt(body, i)), $"round {round}, entry {i}");
            }
        }
    }

    private static byte[] RandomBatch(Random random)
    {
        var batch = new BatchPaxosValues();
        var count = random.Next(0, 5);
        for (var i = 0; i < count; i++)
        {
            var value = new byte[random.Next(0, 3) == 0 ? random.Next(128, 400) : random.Next(0, 8)];
            random.NextBytes(value);
            var entry = new PaxosValue();
            if (random.Next(10) != 0)
            {
                entry.SMID = random.Next(3) == 0 ? random.Next(int.MinValue, 0) : random.Next(0, 1 << 20);
            }

            if (random.Next(10) != 0)
            {
                entry.Value = ByteString.CopyFrom(value);
            }

            batch.Values.Add(entry);
        }

        return batch.ToByteArray();
    }

    private static void Damage(Random random, ref byte[] body)
    {
        if (body.Length == 0)
        {
            body = [(byte)random.Next(256)];
            return;
        }

        switch (random.Next(4))
        {
            case 0: // truncated
                Array.Resize(ref body, random.Next(body.Length));
                break;
            case 1: // a byte changed
                body[random.Next(body.Length)] = (byte)random.Next(256);
                break;
            case 2: // a byte changed among the first few, where tags and lengths are
                body[random.Next(Math.Min(body.Length, 8))] = (byte)random.Next(256);
                break;
            default: // bytes added
                var extra = new byte[random.Next(1, 4)];
                random.NextBytes(extra);
                body = [.. body, .. extra];
                break;
        }
    }
}
