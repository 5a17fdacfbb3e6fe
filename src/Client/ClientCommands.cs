using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Orleans.Paxos.Grains;
using Orleans.Runtime.Messaging;

namespace Orleans.Paxos.Client;

/// <summary>The command-line interface: parses, connects, runs one command, prints, and returns the exit code.</summary>
public static class ClientCommands
{
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = false,
        Converters = { new JsonStringEnumConverter() },
    };

    private static readonly Option<bool> JsonOption = new("--json") { Description = "Print the result as one JSON document.", Recursive = true };
    private static readonly Option<string[]> GatewaysOption = new("--gateway", "-g")
    {
        Description = "A gateway (ip:port); repeat for several. Default: the local cluster's 127.0.0.1:30000-30002.",
        Recursive = true,
        AllowMultipleArgumentsPerToken = true,
    };

    private static readonly Option<string> ClusterIdOption = new("--cluster-id") { Description = "The Orleans cluster id.", DefaultValueFactory = _ => "paxos", Recursive = true };
    private static readonly Option<string> ServiceIdOption = new("--service-id") { Description = "The Orleans service id.", DefaultValueFactory = _ => "paxos", Recursive = true };
    private static readonly Option<int> TimeoutOption = new("--timeout") { Description = "Seconds to wait for each answer.", DefaultValueFactory = _ => 30, Recursive = true };

    /// <summary>Runs the client.</summary>
    public static async Task<int> RunAsync(string[] args)
    {
        var root = BuildRoot();
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var error in parse.Errors)
            {
                Console.Error.WriteLine(error.Message);
            }

            Console.Error.WriteLine("Run with --help for usage.");
            return ExitCodes.UsageError;
        }

        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            cancel.Cancel();
        };
        return await parse.InvokeAsync(cancellationToken: cancel.Token);
    }

    private static RootCommand BuildRoot()
    {
        var root = new RootCommand("Orleans.Paxos client: propose values, use the replicated key-value store, inspect groups. Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 cluster unreachable.");
        root.Options.Add(JsonOption);
        root.Options.Add(GatewaysOption);
        root.Options.Add(ClusterIdOption);
        root.Options.Add(ServiceIdOption);
        root.Options.Add(TimeoutOption);

        var group = new Argument<int>("group") { Description = "The group index." };
        var value = new Argument<string>("value") { Description = "The value (UTF-8 text)." };
        var smId = new Option<int?>("--sm") { Description = "State machine id to execute the value (default: none)." };
        var batch = new Option<bool>("--batch") { Description = "Use BatchPropose." };
        var propose = new Command("propose", "Propose a value to a group's log.") { group, value, smId, batch };
        propose.SetAction((p, ct) => WithCluster(p, ct, async (c, json) =>
        {
            var grain = c.GetGrain<IPaxosGroupGrain>(p.GetValue(group));
            var bytes = Encoding.UTF8.GetBytes(p.GetValue(value)!);
            var r = p.GetValue(batch) ? await grain.BatchProposeAsync(bytes, p.GetValue(smId)) : await grain.ProposeAsync(bytes, p.GetValue(smId));
            Print(json, r, () => r.IsOk
                ? $"chosen: group {r.Group} instance {r.InstanceId} (batch index {r.BatchIndex}) on {r.Node}{(r.OutputText is null ? string.Empty : " output: " + r.OutputText)}"
                : $"not chosen: {r.Status} (group {r.Group}, node {r.Node})");
            return r.IsOk ? ExitCodes.Ok : ExitCodes.OperationFailed;
        }));
        root.Subcommands.Add(propose);

        root.Subcommands.Add(BuildKv());

        var master = new Command("master", "Show a group's master.") { group };
        master.SetAction((p, ct) => WithCluster(p, ct, async (c, json) =>
        {
            var m = await c.GetGrain<IPaxosGroupGrain>(p.GetValue(group)).GetMasterAsync();
            Print(json, m, () => !m.Supported
                ? $"group {m.Group}: this cluster's engine has no master election (asked {m.Node})"
                : m.Master is null ? $"group {m.Group}: no master (asked {m.Node})" : $"group {m.Group}: master {m.Master} version {m.Version} (asked {m.Node}{(m.IsLocalMaster ? ", which is the master" : string.Empty)})");
            return ExitCodes.Ok;
        }));
        root.Subcommands.Add(master);

        root.Subcommands.Add(BuildMembers());

        var watchStatus = new Option<bool>("--watch", "-w") { Description = "Redraw the view every interval until Ctrl+C, with each group's instances chosen per second." };
        var interval = new Option<double>("--interval") { Description = "Seconds between redraws with --watch.", DefaultValueFactory = _ => 1.0 };
        var status = new Command("status", "Show every group on every node: instance ids, lag, master.") { watchStatus, interval };
        status.SetAction((p, ct) => WithCluster(p, ct, async (c, json) =>
        {
            var count = await c.GetGrain<IPaxosGroupGrain>(0).GetGroupCountAsync();
            if (p.GetValue(watchStatus))
            {
                var seconds = p.GetValue(interval);
                if (seconds is < 0.1 or > 3600)
                {
                    Console.Error.WriteLine("--interval must be between 0.1 and 3600 seconds.");
                    return ExitCodes.UsageError;
                }

                return await StatusView.WatchAsync(c, count, TimeSpan.FromSeconds(seconds), json, ct);
            }

            var groups = await StatusView.ReadAsync(c, count);
            Print(json, groups, () => StatusView.Render(groups, rates: null).TrimEnd());
            return StatusView.AllHealthy(groups) ? ExitCodes.Ok : ExitCodes.OperationFailed;
        }));
        root.Subcommands.Add(status);

        var from = new Option<ulong>("--from") { Description = "First instance to print (default 0: the whole log still kept)." };
        var count = new Option<int?>("--count") { Description = "Stop after this many entries (default: until Ctrl+C)." };
        var watch = new Command("watch", "Print a group's committed entries, then new ones as they are chosen.") { group, from, count };
        watch.SetAction((p, ct) => WithCluster(p, ct, async (c, json) =>
        {
            var seen = 0;
            var limit = p.GetValue(count);
            var next = p.GetValue(from);
            var grain = c.GetGrain<IPaxosGroupGrain>(p.GetValue(group));
            try
            {
                // The grain ends an idle feed after a while; continue from the next instance.
                while (!ct.IsCancellationRequested)
                {
                    await foreach (var e in grain.WatchAsync(next, ct).WithCancellation(ct))
                    {
                        Print(json, e, () => string.Create(CultureInfo.InvariantCulture, $"{e.Group}:{e.InstanceId}.{e.BatchIndex} sm={e.SmId} {Printable(e.Value)}"));
                        next = e.InstanceId + 1;
                        if (limit is { } l && ++seen >= l)
                        {
                            return ExitCodes.Ok;
                        }
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }

            return ExitCodes.Ok;
        }));
        root.Subcommands.Add(watch);

        root.Subcommands.Add(Bench.Build(WithCluster));
        return root;
    }

    private static Command BuildKv()
    {
        var key = new Argument<string>("key") { Description = "The key." };
        var value = new Argument<string>("value") { Description = "The value (UTF-8 text)." };
        var stale = new Option<bool>("--stale") { Description = "Read the serving node's store directly (STALE: may miss recent writes) instead of through the log." };
        var version = new Option<ulong?>("--version") { Description = "Only delete when the key has this version." };
        var expected = new Argument<ulong>("expected-version") { Description = "The version the key must have (0: the key must not exist)." };

        var kv = new Command("kv", "The replicated key-value store (keys are spread over the groups by a stable hash).");
        var get = new Command("get", "Read a key (linearizable: through the log, unless --stale).") { key, stale };
        get.SetAction((p, ct) => Kv(p, ct, (client, k) => p.GetValue(stale) ? client.GetStaleAsync(k) : client.GetAsync(k), p.GetValue(key)!));
        var put = new Command("put", "Write a key.") { key, value };
        put.SetAction((p, ct) => Kv(p, ct, (client, k) => client.PutAsync(k, p.GetValue(value)!), p.GetValue(key)!));
        var delete = new Command("delete", "Delete a key.") { key, version };
        delete.SetAction((p, ct) => Kv(p, ct, (client, k) => client.DeleteAsync(k, p.GetValue(version)), p.GetValue(key)!));
        var cas = new Command("cas", "Write a key only if its version is the expected one.") { key, expected, value };
        cas.SetAction((p, ct) => Kv(p, ct, (client, k) => client.CompareAndSetAsync(k, Encoding.UTF8.GetBytes(p.GetValue(value)!), p.GetValue(expected)), p.GetValue(key)!));
        kv.Subcommands.Add(get);
        kv.Subcommands.Add(put);
        kv.Subcommands.Add(delete);
        kv.Subcommands.Add(cas);
        return kv;
    }

    private static Task<int> Kv(ParseResult p, CancellationToken ct, Func<KeyValueClient, string, Task<KvResult>> op, string key) =>
        WithCluster(p, ct, async (c, json) =>
        {
            if (key.Length == 0)
            {
                Console.Error.WriteLine("A key must not be empty.");
                return ExitCodes.UsageError;
            }

            var client = await KeyValueClient.CreateAsync(c);
            var r = await op(client, key);
            Print(json, r, () => r.Status switch
            {
                KvStatus.Ok when r.Value is not null => $"{r.ValueText}  (version {r.Version}, group {r.Group}, node {r.Node})",
                KvStatus.Ok => $"ok: version {r.Version} (group {r.Group}, instance {r.InstanceId}, node {r.Node})",
                KvStatus.NotFound => $"not found: {r.Key} (group {r.Group})",
                KvStatus.VersionConflict => $"version conflict: {r.Key} has version {r.Version}",
                KvStatus.ProposalFailed => $"failed: the operation was not chosen ({r.Proposal}, group {r.Group}, node {r.Node})",
                _ => $"bad request: {r.Key}",
            });
            return r.IsOk ? ExitCodes.Ok : ExitCodes.OperationFailed;
        });

    private static Command BuildMembers()
    {
        var group = new Argument<int>("group") { Description = "The group index." };
        var node = new Argument<string>("node") { Description = "A Paxos node, ip:port." };
        var to = new Argument<string>("to") { Description = "The replacing node, ip:port." };
        var members = new Command("members", "List or change a group's members.");
        var list = new Command("list", "List a group's members.") { group };
        list.SetAction((p, ct) => Members(p, ct, g => g.GetMembersAsync(), group));
        var add = new Command("add", "Add a node to a group.") { group, node };
        add.SetAction((p, ct) => Members(p, ct, g => g.AddMemberAsync(p.GetValue(node)!), group));
        var remove = new Command("remove", "Remove a node from a group.") { group, node };
        remove.SetAction((p, ct) => Members(p, ct, g => g.RemoveMemberAsync(p.GetValue(node)!), group));
        var change = new Command("change", "Replace a member by another node.") { group, node, to };
        change.SetAction((p, ct) => Members(p, ct, g => g.ChangeMemberAsync(p.GetValue(node)!, p.GetValue(to)!), group));
        members.Subcommands.Add(list);
        members.Subcommands.Add(add);
        members.Subcommands.Add(remove);
        members.Subcommands.Add(change);
        return members;
    }

    private static Task<int> Members(ParseResult p, CancellationToken ct, Func<IPaxosGroupGrain, Task<MembershipResult>> op, Argument<int> group) =>
        WithCluster(p, ct, async (c, json) =>
        {
            var r = await op(c.GetGrain<IPaxosGroupGrain>(p.GetValue(group)));
            Print(json, r, () => r.Status == ProposalStatus.Ok
                ? $"group {r.Group} members: {string.Join(", ", r.Members)}"
                : $"failed ({r.Status}): {r.Error}");
            return r.Status == ProposalStatus.Ok ? ExitCodes.Ok : ExitCodes.OperationFailed;
        });

    /// <summary>Connects, runs, maps failures to exit codes.</summary>
    internal static async Task<int> WithCluster(ParseResult p, CancellationToken ct, Func<IClusterClient, bool, Task<int>> action)
    {
        var json = p.GetValue(JsonOption);
        var gateways = p.GetValue(GatewaysOption) is { Length: > 0 } g ? g : ClusterConnection.DefaultGateways;
        ClusterConnection connection;
        try
        {
            connection = await ClusterConnection.ConnectAsync(gateways, p.GetValue(ClusterIdOption)!, p.GetValue(ServiceIdOption)!, TimeSpan.FromSeconds(p.GetValue(TimeoutOption)), ct);
        }
        catch (FormatException ex)
        {
            Console.Error.WriteLine(ex.Message);
            return ExitCodes.UsageError;
        }
        catch (ClusterUnreachableException ex)
        {
            PrintError(json, "unreachable", ex.Message);
            return ExitCodes.ClusterUnreachable;
        }

        await using (connection)
        {
            try
            {
                return await action(connection.Grains, json);
            }
            catch (Exception ex) when (ex is SiloUnavailableException or ConnectionFailedException)
            {
                PrintError(json, "unreachable", ex.Message);
                return ExitCodes.ClusterUnreachable;
            }
            catch (Exception ex) when (ex is ArgumentException or FormatException)
            {
                PrintError(json, "usage", ex.Message);
                return ExitCodes.UsageError;
            }
            catch (Exception ex) when (ex is OrleansException or TimeoutException or InvalidOperationException)
            {
                PrintError(json, "failed", ex.Message);
                return ExitCodes.OperationFailed;
            }
        }
    }

    internal static void Print<T>(bool json, T value, Func<string> text) =>
        Console.WriteLine(json ? JsonSerializer.Serialize(value, Json) : text());

    private static void PrintError(bool json, string kind, string message)
    {
        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new { error = kind, message }, Json));
        }
        else
        {
            Console.Error.WriteLine($"{kind}: {message}");
        }
    }

    private static string Printable(byte[] value)
    {
        var text = Encoding.UTF8.GetString(value);
        return text.All(ch => !char.IsControl(ch)) ? text : Convert.ToHexString(value);
    }
}
