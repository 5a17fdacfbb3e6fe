using System.Diagnostics;
using System.Globalization;
using System.Text;
using Orleans.Paxos.Grains;

namespace Orleans.Paxos.Client;

/// <summary>The per-group status table of the <c>status</c> command, once or redrawn until Ctrl+C.</summary>
internal static class StatusView
{
    /// <summary>Reads every group's status (every node's view of it).</summary>
    public static Task<GroupStatus[]> ReadAsync(IClusterClient client, int groups) =>
        Task.WhenAll(Enumerable.Range(0, groups).Select(g => client.GetGrain<IPaxosGroupGrain>(g).GetStatusAsync()));

    /// <summary>Whether every node answered and no group is stopped.</summary>
    public static bool AllHealthy(IEnumerable<GroupStatus> groups) => groups.All(g => g.Nodes.All(n => n.Reachable && n.StoppedReason is null));

    /// <summary>The table; with <paramref name="rates"/> (instances chosen per second, by group) a rate column.</summary>
    public static string Render(IReadOnlyList<GroupStatus> groups, IReadOnlyDictionary<int, double>? rates)
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"{"group",5}  {"node",-21} {"now",10} {"min chosen",10} {"lag",6}  {"master",-21} {(rates is null ? string.Empty : $"{"chosen/s",9} ")}{"members"}");
        foreach (var g in groups)
        {
            var rate = rates is null ? string.Empty : rates.TryGetValue(g.Group, out var r) ? string.Create(CultureInfo.InvariantCulture, $"{r,9:F1} ") : $"{"-",9} ";
            foreach (var n in g.Nodes)
            {
                sb.AppendLine(n.Reachable
                    ? string.Create(CultureInfo.InvariantCulture, $"{g.Group,5}  {n.Node,-21} {n.NowInstanceId,10} {n.MinChosenInstanceId,10} {n.Lag,6}  {n.Master ?? "-",-21} {rate}{string.Join(",", n.Members)}{(n.StoppedReason is null ? string.Empty : "  STOPPED: " + n.StoppedReason)}{(n.NotVoting is null ? string.Empty : "  NOT VOTING (" + n.NotVoting + ")")}")
                    : string.Create(CultureInfo.InvariantCulture, $"{g.Group,5}  {n.Silo,-21} unreachable: {n.StoppedReason}"));
            }
        }

        return sb.ToString();
    }

    /// <summary>
    /// Redraws the table every <paramref name="interval"/> until <paramref name="cancellationToken"/> fires
    /// (Ctrl+C). A failed refresh is shown in place of the table and retried on the next tick. With
    /// <paramref name="json"/> one JSON document per refresh is printed instead.
    /// </summary>
    public static async Task<int> WatchAsync(IClusterClient client, int groups, TimeSpan interval, bool json, CancellationToken cancellationToken)
    {
        var redraw = !json && !Console.IsOutputRedirected;
        Dictionary<int, ulong>? previous = null;
        var previousAt = 0L;
        using var timer = new PeriodicTimer(interval);
        try
        {
            do
            {
                var screen = new StringBuilder();
                try
                {
                    var statuses = await ReadAsync(client, groups).WaitAsync(interval * 5, cancellationToken);
                    var now = Stopwatch.GetTimestamp();
                    var highest = statuses.ToDictionary(g => g.Group, g => g.Nodes.Where(n => n.Reachable).Select(n => n.NowInstanceId).DefaultIfEmpty(0ul).Max());
                    Dictionary<int, double>? rates = null;
                    if (previous is not null)
                    {
                        var seconds = Stopwatch.GetElapsedTime(previousAt, now).TotalSeconds;
                        rates = highest.Where(kv => previous.ContainsKey(kv.Key) && kv.Value >= previous[kv.Key])
                            .ToDictionary(kv => kv.Key, kv => (kv.Value - previous[kv.Key]) / seconds);
                    }

                    (previous, previousAt) = (highest, now);
                    if (json)
                    {
                        ClientCommands.Print(json: true, new { at = DateTimeOffset.UtcNow, groups = statuses, chosenPerSecond = rates }, () => string.Empty);
                        continue;
                    }

                    screen.AppendLine(CultureInfo.InvariantCulture, $"{DateTimeOffset.Now:HH:mm:ss}  {groups} groups  {(AllHealthy(statuses) ? "all nodes healthy" : "SOME NODES UNREACHABLE OR STOPPED")}  (every {interval.TotalSeconds:0.#} s; Ctrl+C to stop)");
                    screen.Append(Render(statuses, rates ?? new Dictionary<int, double>()));
                }
                catch (Exception ex) when (ex is TimeoutException or OrleansException)
                {
                    if (json)
                    {
                        ClientCommands.Print(json: true, new { at = DateTimeOffset.UtcNow, error = ex.GetType().Name, message = ex.Message }, () => string.Empty);
                        continue;
                    }

                    screen.AppendLine(CultureInfo.InvariantCulture, $"{DateTimeOffset.Now:HH:mm:ss}  status unavailable: {ex.Message} (retrying)");
                }

                // Plain redraw: home the cursor and clear the screen, then print the table.
                Console.Write(redraw ? "\u001b[H\u001b[2J" + screen : screen.AppendLine());
            }
            while (await timer.WaitForNextTickAsync(cancellationToken));
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Ctrl+C ends the watch normally.
        }

        return ExitCodes.Ok;
    }
}
