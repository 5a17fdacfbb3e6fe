using System.Globalization;
using Orleans.Paxos.Engine.Protocol;
using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Faults.Checking;

/// <summary>The log a node holds for one group: instances <c>[First, Max]</c>, of which those below <c>Max</c> are chosen.</summary>
/// <param name="Node">The node's data folder.</param>
/// <param name="Group">The group.</param>
/// <param name="MinChosen">The min-chosen mark (0 when never cleaned).</param>
/// <param name="First">The first instance with a record at or above the mark.</param>
/// <param name="Max">The highest instance with a record, or null when the log is empty.</param>
/// <param name="Records">Instances in <c>[First, Max]</c> that have a record.</param>
public sealed record GroupLogRange(string Node, int Group, ulong MinChosen, ulong First, ulong? Max, long Records);

/// <summary>What <see cref="LogConsistencyChecker.Compare"/> found.</summary>
/// <param name="Ranges">Every node's range per group.</param>
/// <param name="Compared">Instances held as chosen by at least two nodes, compared.</param>
/// <param name="Mismatches">Instances whose chosen values differ (empty: consistent).</param>
public sealed record LogComparison(IReadOnlyList<GroupLogRange> Ranges, long Compared, IReadOnlyList<string> Mismatches);

/// <summary>Counts from a node's data-file event logs (<c>g&lt;N&gt;/vfile/LOG</c>), which survive kills.</summary>
/// <param name="RollOvers">New data files started because the current one was full.</param>
/// <param name="FilesDeleted">Data files deleted by log cleaning (or a checkpoint install).</param>
/// <param name="Truncations">Torn tails cut off during recovery after a crash.</param>
public sealed record DataFileEvents(int RollOvers, int FilesDeleted, int Truncations);

/// <summary>
/// Offline check of stopped nodes' Paxos logs, opened with the engine's <see cref="FileLogStorage"/>: every
/// instance that at least two nodes hold as chosen carries the same value bytes on each. A node holds an
/// instance as chosen when it is at or above the node's min-chosen mark and below its highest record (a
/// node writes a record only for the instance it is deciding, and moves past it only once it is chosen,
/// rewriting the record with the chosen value when it learns it from others); its highest record may be
/// an accept of a value that was never chosen and is not compared. A node's log starts at its first record
/// at or above the mark (after a checkpoint install the log restarts past the checkpoint); a chosen
/// instance without a record after that start is reported too.
/// </summary>
public static class LogConsistencyChecker
{
    /// <summary>Opens every node's log (read-only use; the storage recovers a torn tail as the engine would) and compares.</summary>
    public static LogComparison Compare(IReadOnlyList<string> nodeDirectories, int groups, int dataFileSize)
    {
        ArgumentNullException.ThrowIfNull(nodeDirectories);
        var ranges = new List<GroupLogRange>();
        var mismatches = new List<string>();
        long compared = 0;
        var storages = nodeDirectories.Select(d => new FileLogStorage(new LogStorageOptions { RootPath = d, GroupCount = groups, DataFileSize = dataFileSize })).ToList();
        try
        {
            for (var g = 0; g < groups; g++)
            {
                var chosen = new List<(string Node, ulong Min, ulong End, FileLogStorage Storage)>();
                for (var n = 0; n < storages.Count; n++)
                {
                    var storage = storages[n];
                    var min = storage.GetMinChosenInstanceId(g);
                    var max = storage.GetMaxInstanceId(g);
                    long records = 0;
                    var start = min;
                    if (max is { } m)
                    {
                        while (start < m && storage.Get(g, start) is null)
                        {
                            start++;
                        }

                        for (var i = start; i <= m; i++)
                        {
                            if (storage.Get(g, i) is not null)
                            {
                                records++;
                            }
                            else
                            {
                                mismatches.Add($"group {g} instance {i}: {Path.GetFileName(nodeDirectories[n])} has no record inside its log [{start}, {m}]");
                            }
                        }

                        chosen.Add((nodeDirectories[n], start, m, storage));
                    }

                    ranges.Add(new GroupLogRange(nodeDirectories[n], g, min, start, max, records));
                }

                if (chosen.Count < 2)
                {
                    continue;
                }

                var from = chosen.Min(c => c.Min);
                var to = chosen.Max(c => c.End);
                for (var i = from; i < to; i++)
                {
                    var values = new List<(string Node, byte[]? Value)>();
                    foreach (var c in chosen.Where(c => i >= c.Min && i < c.End))
                    {
                        var record = c.Storage.Get(g, i);
                        var state = record is null ? null : AcceptorStateData.Parser.ParseFrom(record);
                        values.Add((c.Node, state is { AcceptedID: > 0 } ? state.AcceptedValue.ToByteArray() : null));
                    }

                    if (values.Count < 2)
                    {
                        continue;
                    }

                    compared++;
                    var reference = values[0];
                    foreach (var other in values.Skip(1))
                    {
                        if (reference.Value is null || other.Value is null || !reference.Value.AsSpan().SequenceEqual(other.Value))
                        {
                            mismatches.Add($"group {g} instance {i}: {Describe(reference)} but {Describe(other)}");
                        }
                    }
                }
            }
        }
        finally
        {
            foreach (var s in storages)
            {
                s.Dispose();
            }
        }

        return new LogComparison(ranges, compared, mismatches);
    }

    /// <summary>Counts roll-overs, deletions and truncations in a node's data-file event logs.</summary>
    public static DataFileEvents CountEvents(string nodeDirectory)
    {
        ArgumentNullException.ThrowIfNull(nodeDirectory);
        int rollOvers = 0, deleted = 0, truncated = 0;
        foreach (var log in Directory.EnumerateFiles(nodeDirectory, "LOG", SearchOption.AllDirectories).Where(p => Path.GetFileName(Path.GetDirectoryName(p)) == "vfile"))
        {
            foreach (var line in File.ReadLines(log))
            {
                rollOvers += line.Contains("new file expand ok", StringComparison.Ordinal) ? 1 : 0;
                deleted += line.Contains("delete fileid", StringComparison.Ordinal) ? 1 : 0;
                truncated += line.Contains(" truncate fileid", StringComparison.Ordinal) ? 1 : 0;
            }
        }

        return new DataFileEvents(rollOvers, deleted, truncated);
    }

    /// <summary>One line per range, for the test output.</summary>
    public static string Describe(GroupLogRange r) =>
        r.Max is { } max
            ? $"group {r.Group} {Path.GetFileName(r.Node)}: min chosen {r.MinChosen.ToString(CultureInfo.InvariantCulture)}, records [{r.First.ToString(CultureInfo.InvariantCulture)}, {max.ToString(CultureInfo.InvariantCulture)}] ({r.Records.ToString(CultureInfo.InvariantCulture)})"
            : $"group {r.Group} {Path.GetFileName(r.Node)}: empty log (min chosen {r.MinChosen.ToString(CultureInfo.InvariantCulture)})";

    private static string Describe((string Node, byte[]? Value) v) =>
        $"{Path.GetFileName(v.Node)} has {(v.Value is null ? "no value" : Convert.ToHexString(v.Value.AsSpan(0, Math.Min(24, v.Value.Length))) + $"… ({v.Value.Length} bytes)")}";
}
