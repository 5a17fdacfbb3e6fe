using System.Text;
using Microsoft.Data.Sqlite;
using Orleans.Paxos.Grains;
using Orleans.Paxos.TestSupport;

namespace Orleans.Paxos.Faults.Checking;

/// <summary>
/// All nodes' state machines equal after healing: first every node of every group reaches the same
/// instance (asked through the group grains), then, with the silos stopped, every node's key-value
/// store (<c>g&lt;N&gt;/kv/kv.db</c>) holds the same rows.
/// </summary>
public static class ConvergenceChecker
{
    /// <summary>Waits until every node of every group reports the same current instance; returns the problems left at the deadline.</summary>
    public static Task<IReadOnlyList<string>> WaitForCatchUpAsync(IGrainFactory grains, int groups, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(grains);
        return Poll.LastAsync(() => CatchUpProblemsAsync(grains, groups), problems => problems.Count == 0, timeout, TimeSpan.FromMilliseconds(500));
    }

    /// <summary>Groups whose nodes are not all reachable and at one instance now.</summary>
    private static async Task<IReadOnlyList<string>> CatchUpProblemsAsync(IGrainFactory grains, int groups)
    {
        var problems = new List<string>();
        for (var g = 0; g < groups; g++)
        {
            try
            {
                var status = await grains.GetGrain<IPaxosGroupGrain>(g).GetStatusAsync().WaitAsync(TimeSpan.FromSeconds(10));
                var unreachable = status.Nodes.Where(n => !n.Reachable).ToList();
                var instances = status.Nodes.Where(n => n.Reachable).Select(n => n.NowInstanceId).Distinct().ToList();
                if (unreachable.Count > 0 || instances.Count != 1)
                {
                    problems.Add($"group {g}: " + string.Join(", ", status.Nodes.Select(n => n.Reachable ? $"{n.Node} at instance {n.NowInstanceId}" : $"{n.Silo} unreachable ({n.StoppedReason})")));
                }
            }
            catch (Exception ex) when (ex is TimeoutException or OrleansException)
            {
                problems.Add($"group {g}: status unavailable: {ex.Message}");
            }
        }

        return problems;
    }

    /// <summary>Compares the key-value stores of stopped nodes; returns the differences (empty: equal).</summary>
    public static IReadOnlyList<string> CompareStores(IReadOnlyList<string> nodeDirectories, int groups)
    {
        ArgumentNullException.ThrowIfNull(nodeDirectories);
        var problems = new List<string>();
        for (var g = 0; g < groups; g++)
        {
            var stores = nodeDirectories.Select(d => (Dir: d, Rows: ReadStore(Path.Combine(d, "g" + g, "kv", "kv.db")))).ToList();
            var reference = stores[0];
            foreach (var other in stores.Skip(1))
            {
                if (reference.Rows is null || other.Rows is null)
                {
                    problems.Add($"group {g}: no key-value store in {(reference.Rows is null ? reference.Dir : other.Dir)}");
                    continue;
                }

                foreach (var key in reference.Rows.Keys.Union(other.Rows.Keys).Order(StringComparer.Ordinal))
                {
                    var a = reference.Rows.GetValueOrDefault(key);
                    var b = other.Rows.GetValueOrDefault(key);
                    if (a != b)
                    {
                        problems.Add($"group {g} key {key}: {reference.Dir} has {a ?? "nothing"}, {other.Dir} has {b ?? "nothing"}");
                    }
                }
            }
        }

        return problems;
    }

    /// <summary>Key → "value@version" of one store, or null when the file does not exist.</summary>
    public static Dictionary<string, string>? ReadStore(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }

        var rows = new Dictionary<string, string>(StringComparer.Ordinal);
        using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Mode = SqliteOpenMode.ReadOnly, Pooling = false }.ToString());
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT key, value, version FROM kv";
        using var reader = command.ExecuteReader();
        while (reader.Read())
        {
            rows[Text(reader.GetValue(0))] = Text(reader.GetValue(1)) + "@" + reader.GetValue(2);
        }

        return rows;
    }

    private static string Text(object v) => v switch
    {
        byte[] b => Encoding.UTF8.GetString(b),
        DBNull => "null",
        _ => Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture) ?? "null",
    };
}
