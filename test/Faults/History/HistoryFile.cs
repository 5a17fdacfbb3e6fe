using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Orleans.Paxos.Faults.History;

/// <summary>Reads and writes histories in the JSON-lines format of history-format.md.</summary>
public static class HistoryFile
{
    /// <summary>The shared monotonic clock: <see cref="Stopwatch.GetTimestamp"/> in nanoseconds.</summary>
    public static long NowNanoseconds() => (long)(Stopwatch.GetTimestamp() * (1_000_000_000.0 / Stopwatch.Frequency));

    /// <summary>One operation as one JSON line (no trailing newline).</summary>
    public static string ToJsonLine(HistoryOp op)
    {
        ArgumentNullException.ThrowIfNull(op);
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteNumber("client", op.Client);
            w.WriteString("op", op.Kind.ToString().ToLowerInvariant());
            w.WriteString("key", op.Key);
            if (op.Kind == OpKind.Cas)
            {
                WriteNullable(w, "expected", op.Expected);
            }

            if (op.Kind != OpKind.Delete && (op.Kind != OpKind.Get || op.Status == OpStatus.Ok))
            {
                WriteNullable(w, "value", op.Value);
            }

            if (op.Kind == OpKind.Cas && op.Swapped is { } swapped && op.Status == OpStatus.Ok)
            {
                w.WriteBoolean("swapped", swapped);
            }

            w.WriteNumber("call", op.Call);
            if (op.Return is { } ret)
            {
                w.WriteNumber("return", ret);
            }

            var defaultStatus = op.Return is null ? OpStatus.Info : OpStatus.Ok;
            if (op.Status != defaultStatus)
            {
                w.WriteString("status", op.Status.ToString().ToLowerInvariant());
            }

            if (op.Id is not null)
            {
                w.WriteString("id", op.Id);
            }

            if (op.Note is not null)
            {
                w.WriteString("note", op.Note);
            }

            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>Parses one JSON line; throws <see cref="FormatException"/> naming the problem.</summary>
    public static HistoryOp Parse(string line, int lineNumber = 0)
    {
        ArgumentNullException.ThrowIfNull(line);
        try
        {
            using var doc = JsonDocument.Parse(line);
            int? client = null;
            OpKind? kind = null;
            string? key = null;
            string? value = null;
            string? expected = null;
            bool? swapped = null;
            long? call = null;
            long? ret = null;
            OpStatus? status = null;
            string? id = null;
            string? note = null;
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                switch (p.Name)
                {
                    case "client": client = p.Value.GetInt32(); break;
                    case "op": kind = ParseKind(p.Value.GetString()); break;
                    case "key": key = p.Value.GetString(); break;
                    case "value": value = p.Value.ValueKind == JsonValueKind.Null ? null : p.Value.GetString(); break;
                    case "expected": expected = p.Value.ValueKind == JsonValueKind.Null ? null : p.Value.GetString(); break;
                    case "swapped": swapped = p.Value.GetBoolean(); break;
                    case "call": call = p.Value.GetInt64(); break;
                    case "return": ret = p.Value.ValueKind == JsonValueKind.Null ? null : p.Value.GetInt64(); break;
                    case "status": status = ParseStatus(p.Value.GetString()); break;
                    case "id": id = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString() : p.Value.GetRawText(); break;
                    case "note": note = p.Value.GetString(); break;
                    default: throw new FormatException($"unknown field '{p.Name}'");
                }
            }

            if (client is null || kind is null || key is null || call is null)
            {
                throw new FormatException("client, op, key and call are required");
            }

            var st = status ?? (ret is null ? OpStatus.Info : OpStatus.Ok);
            if (st == OpStatus.Ok && ret is null)
            {
                throw new FormatException("status ok needs a return time");
            }

            if (kind == OpKind.Cas && st == OpStatus.Ok && swapped is null)
            {
                throw new FormatException("a completed cas needs 'swapped'");
            }

            if (ret is { } r && r < call)
            {
                throw new FormatException("return is before call");
            }

            return new HistoryOp(client.Value, kind.Value, key, value, expected, swapped, call.Value, ret, st, id, note);
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or FormatException)
        {
            throw new FormatException($"history line {lineNumber}: {ex.Message}", ex);
        }
    }

    /// <summary>Reads a history file.</summary>
    public static List<HistoryOp> Read(string path)
    {
        var ops = new List<HistoryOp>();
        var n = 0;
        foreach (var line in File.ReadLines(path))
        {
            n++;
            if (!string.IsNullOrWhiteSpace(line))
            {
                ops.Add(Parse(line, n));
            }
        }

        return ops;
    }

    /// <summary>Writes a history file.</summary>
    public static void Write(string path, IEnumerable<HistoryOp> ops)
    {
        ArgumentNullException.ThrowIfNull(ops);
        File.WriteAllLines(path, ops.Select(ToJsonLine));
    }

    private static void WriteNullable(Utf8JsonWriter w, string name, string? value)
    {
        if (value is null)
        {
            w.WriteNull(name);
        }
        else
        {
            w.WriteString(name, value);
        }
    }

    private static OpKind ParseKind(string? s) => s switch
    {
        "get" => OpKind.Get,
        "put" => OpKind.Put,
        "delete" => OpKind.Delete,
        "cas" => OpKind.Cas,
        "append" => OpKind.Append,
        _ => throw new FormatException($"unknown op '{s}'"),
    };

    private static OpStatus ParseStatus(string? s) => s switch
    {
        "ok" => OpStatus.Ok,
        "info" => OpStatus.Info,
        "fail" => OpStatus.Fail,
        _ => throw new FormatException($"unknown status '{s}'"),
    };
}

/// <summary>Appends operations to a history file as they complete; thread-safe.</summary>
public sealed class HistoryRecorder : IDisposable
{
    private readonly StreamWriter _writer;
    private readonly List<HistoryOp> _ops = [];
    private readonly Lock _lock = new();

    /// <summary>Creates (or truncates) the file at <paramref name="path"/>.</summary>
    public HistoryRecorder(string path)
    {
        Path = System.IO.Path.GetFullPath(path);
        _writer = new StreamWriter(Path, append: false, new UTF8Encoding(false)) { AutoFlush = true };
    }

    /// <summary>The history file.</summary>
    public string Path { get; }

    /// <summary>The operations recorded so far, in recording order.</summary>
    public IReadOnlyList<HistoryOp> Snapshot()
    {
        lock (_lock)
        {
            return [.. _ops];
        }
    }

    /// <summary>Records one finished (or abandoned) operation.</summary>
    public void Record(HistoryOp op)
    {
        var line = HistoryFile.ToJsonLine(op);
        lock (_lock)
        {
            _ops.Add(op);
            _writer.WriteLine(line);
        }
    }

    /// <inheritdoc />
    public void Dispose() => _writer.Dispose();

    /// <summary>Formats nanoseconds for reports.</summary>
    public static string Ms(long ns) => (ns / 1e6).ToString("0.0", CultureInfo.InvariantCulture) + " ms";
}
