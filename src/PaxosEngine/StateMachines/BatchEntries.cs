using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.StateMachines;

/// <summary>
/// The entries of a batch value (a <see cref="BatchPaxosValues"/> message) as slices of the value itself, so
/// that executing a batch does not copy every value out of it, as the protobuf parser does. Only the form
/// PhxPaxos and this engine write is read in place: entries of field 1, each with its state machine id (field
/// 1, varint) and value (field 2). Anything else (unknown fields, groups, a missing field, a malformed or
/// truncated message) is left to the protobuf parser, whose result or error stays the rule.
/// </summary>
internal sealed class BatchEntries
{
    private const byte EntryTag = (1 << 3) | 2; // field 1, length-delimited
    private const byte SmIdTag = 1 << 3; // field 1, varint
    private const byte ValueTag = (2 << 3) | 2; // field 2, length-delimited

    private readonly List<(int SmId, int Start, int Length)> _entries = [];
    private BatchPaxosValues? _parsed;

    /// <summary>Number of entries read by the last <see cref="Read"/>.</summary>
    public int Count => _parsed?.Values.Count ?? _entries.Count;

    /// <summary>The state machine id of entry <paramref name="i"/>.</summary>
    public int SmIdAt(int i) => _parsed is { } parsed ? parsed.Values[i].SMID : _entries[i].SmId;

    /// <summary>The value of entry <paramref name="i"/>, a slice of <paramref name="body"/> given to <see cref="Read"/>.</summary>
    public ReadOnlySpan<byte> ValueAt(ReadOnlySpan<byte> body, int i) =>
        _parsed is { } parsed ? parsed.Values[i].Value.Span : body.Slice(_entries[i].Start, _entries[i].Length);

    /// <summary>Reads the entries of <paramref name="body"/> (a batch value without its state machine id prefix).</summary>
    /// <exception cref="Google.Protobuf.InvalidProtocolBufferException">The message does not parse.</exception>
    public void Read(ReadOnlySpan<byte> body)
    {
        _entries.Clear();
        _parsed = null;
        if (!TryReadInPlace(body))
        {
            _entries.Clear();
            _parsed = BatchPaxosValues.Parser.ParseFrom(body);
        }
    }

    private bool TryReadInPlace(ReadOnlySpan<byte> body)
    {
        var position = 0;
        while (position < body.Length)
        {
            if (body[position++] != EntryTag || !TryReadLength(body, ref position, out var entryLength))
            {
                return false;
            }

            var entryEnd = position + entryLength;
            int? smId = null;
            int valueStart = 0, valueLength = -1;
            while (position < entryEnd)
            {
                switch (body[position++])
                {
                    case SmIdTag:
                        if (!TryReadVarint32(body[..entryEnd], ref position, out var id))
                        {
                            return false;
                        }

                        smId = (int)id;
                        break;
                    case ValueTag:
                        if (!TryReadLength(body[..entryEnd], ref position, out valueLength))
                        {
                            return false;
                        }

                        valueStart = position;
                        position += valueLength;
                        break;
                    default:
                        return false;
                }
            }

            if (smId is not { } entrySmId || valueLength < 0)
            {
                return false;
            }

            _entries.Add((entrySmId, valueStart, valueLength));
        }

        return true;
    }

    /// <summary>A length prefix that fits in what is left of <paramref name="span"/>.</summary>
    private static bool TryReadLength(ReadOnlySpan<byte> span, ref int position, out int length)
    {
        length = 0;
        if (!TryReadVarint32(span, ref position, out var raw) || raw > (uint)(span.Length - position))
        {
            return false;
        }

        length = (int)raw;
        return true;
    }

    /// <summary>A varint of at most 10 bytes, of which the low 32 bits are kept (protobuf's int32 rule).</summary>
    private static bool TryReadVarint32(ReadOnlySpan<byte> span, ref int position, out uint value)
    {
        value = 0;
        for (var shift = 0; shift < 70; shift += 7)
        {
            if (position >= span.Length)
            {
                return false;
            }

            var b = span[position++];
            if (shift < 32)
            {
                value |= (uint)(b & 0x7F) << shift;
            }

            if ((b & 0x80) == 0)
            {
                return true;
            }
        }

        return false;
    }
}
