using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
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

    /// <summary>Runs the client: Ctrl+C and SIGTERM end a command that follows the cluster (<c>watch</c>, <c>status --watch</c>, <c>bench</c>) normally.</summary>
    public static async Task<int> RunAsync(string[] args)
    {
        var root = BuildRoot();
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            var json = args.Contains("--json", StringComparer.Ordinal);
            PrintError(json, ErrorKind.Usage, string.Join(" ", parse.Errors.Select(e => e.Message)) + " Run with --help for usage.");
            return ExitCodes.UsageError;
        }

        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            cancel.Cancel();
        };
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx =>
        {
            ctx.Cancel = true;
            cancel.Cancel();
        });
        try
        {
            return await parse.InvokeAsync(cancellationToken: cancel.Token);
        }
        catch (Exception ex)
        {
            // Never a stack trace: one line that says what happened.
            PrintError(parse.GetValue(JsonOption), ErrorKind.Failed, Describe(ex));
            return ExitCodes.OperationFailed;
        }
    }

    private static RootCommand BuildRoot()
    {
        var root = new RootCommand("Orleans.Paxos client: propose values, use the replicated key-value store, inspect groups. Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 cluster unreachable.");
        root.Options.Add(JsonOption);
        root.Options.Add(GatewaysOption);
        root.Options.Add(ClusterIdOption);
        root.Options.Add(ServiceIdOption);
        root.Options.Add(TimeoutOption);

        var group = new Argument<int>("group") { Description = "The group index (0 .. group count - 1)." };
        var value = new Argument<string?>("value") { Description = "The value (UTF-8 text); or give --file.", Arity = ArgumentArity.ZeroOrOne };
        var file = FileOption();
        var smId = new Option<int?>("--sm") { Description = "State machine id to execute the value (default: none)." };
        var batch = new Option<bool>("--batch") { Description = "Use BatchPropose." };
        var propose = new Command("propose", "Propose a value to a group's log.") { group, value, file, smId, batch };
        propose.SetAction((p, ct) => WithCluster(p, ct, async (c, json) =>
        {
            var grain = await GroupAsync(c, p.GetValue(group));
            var bytes = await ValueAsync(p, value, file, ct);
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
            var m = await (await GroupAsync(c, p.GetValue(group))).GetMasterAsync();
            Print(json, m, () => !m.Supported
                ? $"group {m.Group}: this cluster's engine has no master election (asked {m.Node})"
                : m.Master is null ? $"group {m.Group}: no master (asked {m.Node})" : $"group {m.Group}: master {m.Master} version {m.Version} (asked {m.Node}{(m.IsLocalMaster ? ", which is the master" : string.Empty)})");
            return ExitCodes.Ok;
        }));
        root.Subcommands.Add(master);

        root.Subcommands.Add(BuildMembers());

        var watchStatus = new Option<bool>("--watch", "-w") { Description = "Redraw the view every interval until Ctrl+C or SIGTERM, with each group's instances chosen per second." };
        var interval = new Option<double>("--interval") { Description = "Seconds between redraws with --watch.", DefaultValueFactory = _ => 1.0 };
        var status = new Command("status", "Show every group on every node: instance ids, lag, master.") { watchStatus, interval };
        status.SetAction((p, ct) => WithCluster(p, ct, async (c, json) =>
        {
            var seconds = p.GetValue(interval);
            if (p.GetValue(watchStatus) && seconds is < 0.1 or > 3600)
            {
                throw new CommandException(ErrorKind.Usage, $"--interval must be between 0.1 and 3600 seconds; it is {seconds.ToString(CultureInfo.InvariantCulture)}.");
            }

            var count = await c.GetGrain<IPaxosGroupGrain>(0).GetGroupCountAsync();
            if (p.GetValue(watchStatus))
            {
                return await StatusView.WatchAsync(c, count, TimeSpan.FromSeconds(seconds), json, ct);
            }

            var groups = await StatusView.ReadAsync(c, count);
            Print(json, groups, () => StatusView.Render(groups, rates: null).TrimEnd());
            return StatusView.AllHealthy(groups) ? ExitCodes.Ok : ExitCodes.OperationFailed;
        }));
        root.Subcommands.Add(status);

        var from = new Option<ulong>("--from") { Description = "First instance to print (default 0: the whole log still kept)." };
        var count = new Option<int?>("--count") { Description = "Stop after this many entries (default: follow new ones until Ctrl+C or SIGTERM)." };
        var watch = new Command("watch", "Print a group's committed entries, then new ones as they are chosen.") { group, from, count };
        watch.SetAction((p, ct) => WithCluster(p, ct, async (c, json) =>
        {
            var seen = 0;
            var limit = p.GetValue(count);
            if (limit is < 1)
            {
                throw new CommandException(ErrorKind.Usage, $"--count must be at least 1; it is {limit}.");
            }

            var next = p.GetValue(from);
            var grain = await GroupAsync(c, p.GetValue(group));
            try
            {
                // The grain ends an idle feed after a while; continue from the next instance.
                while (!ct.IsCancellationRequested)
                {
                    var started = Stopwatch.GetTimestamp();
                    var any = false;
                    var feed = grain.WatchAsync(next, ct).GetAsyncEnumerator(ct);
                    try
                    {
                        // A signal must end the wait at once, not when the grain's idle feed ends.
                        while (await MoveNextOrStopAsync(feed, ct))
                        {
                            var e = feed.Current;
                            any = true;
                            Print(json, e, () => string.Create(CultureInfo.InvariantCulture, $"{e.Group}:{e.InstanceId}.{e.BatchIndex} sm={e.SmId} {Printable(e.Value)}"));
                            next = e.InstanceId + 1;
                            if (limit is { } l && ++seen >= l)
                            {
                                return ExitCodes.Ok;
                            }
                        }
                    }
                    finally
                    {
                        // Abandoned, not awaited, when stopping: its pending call may take until the grain answers.
                        var disposed = feed.DisposeAsync().AsTask();
                        if (!ct.IsCancellationRequested)
                        {
                            await disposed;
                        }
                        else
                        {
                            _ = disposed.ContinueWith(t => t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
                        }
                    }

                    if (!any && Stopwatch.GetElapsedTime(started) < TimeSpan.FromSeconds(1))
                    {
                        // A feed that ends at once (a silo stopping) must not turn this loop into a busy one.
                        await Task.Delay(TimeSpan.FromSeconds(1), ct);
                    }
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                // Ctrl+C or SIGTERM ends the watch normally.
            }

            return ExitCodes.Ok;
        }));
        root.Subcommands.Add(watch);

        root.Subcommands.Add(Bench.Build(WithCluster));
        return root;
    }

    private static async Task<bool> MoveNextOrStopAsync<T>(IAsyncEnumerator<T> feed, CancellationToken ct)
    {
        var move = feed.MoveNextAsync().AsTask();
        _ = move.ContinueWith(t => t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        return await move.WaitAsync(ct);
    }

    private static Option<string?> FileOption() =>
        new("--file", "-f") { Description = "Read the value from this file ('-': standard input) instead of the command line, for values of any size up to the cluster's MaxValueSize." };

    /// <summary>The value from the argument or from <c>--file</c> (exactly one of them).</summary>
    private static async Task<byte[]> ValueAsync(ParseResult p, Argument<string?> value, Option<string?> file, CancellationToken ct)
    {
        var text = p.GetValue(value);
        var path = p.GetValue(file);
        if ((text is null) == (path is null))
        {
            throw new CommandException(ErrorKind.Usage, "Give the value either on the command line or with --file <path> ('-' for standard input), not both and not neither.");
        }

        if (text is not null)
        {
            return Encoding.UTF8.GetBytes(text);
        }

        if (path == "-")
        {
            using var buffer = new MemoryStream();
            await Console.OpenStandardInput().CopyToAsync(buffer, ct);
            return buffer.ToArray();
        }

        try
        {
            return await File.ReadAllBytesAsync(path!, ct);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new CommandException(ErrorKind.Usage, $"Cannot read the value from {path}: {ex.Message}");
        }
    }

    /// <summary>The group's grain, after checking that the cluster has that group.</summary>
    private static async Task<IPaxosGroupGrain> GroupAsync(IClusterClient client, int group)
    {
        var count = await client.GetGrain<IPaxosGroupGrain>(0).GetGroupCountAsync();
        if (group < 0 || group >= count)
        {
            throw new CommandException(ErrorKind.Usage, $"Group {group} does not exist: this cluster has groups 0..{count - 1}.");
        }

        return client.GetGrain<IPaxosGroupGrain>(group);
    }

    private static Command BuildKv()
    {
        var key = new Argument<string>("key") { Description = "The key (UTF-8 text)." };
        var value = new Argument<string?>("value") { Description = "The value (UTF-8 text); or give --file.", Arity = ArgumentArity.ZeroOrOne };
        var file = FileOption();
        var stale = new Option<bool>("--stale") { Description = "Read the serving node's store directly (STALE: may miss recent writes) instead of through the log." };
        var version = new Option<ulong?>("--version") { Description = "Only delete when the key has this version." };
        var expected = new Argument<ulong>("expected-version") { Description = "The version the key must have (0: the key must not exist)." };

        var kv = new Command("kv", "The replicated key-value store (keys are spread over the groups by a stable hash).");
        var get = new Command("get", "Read a key (linearizable: through the log, unless --stale).") { key, stale };
        get.SetAction((p, ct) => Kv(p, ct, (client, k) => p.GetValue(stale) ? client.GetStaleAsync(k) : client.GetAsync(k), p.GetValue(key)!));
        var versionOf = new Command("version", "Print only a key's version (0: absent), read through the log; for scripts: v=$(... kv version city).") { key };
        versionOf.SetAction((p, ct) => Kv(p, ct, (client, k) => client.GetAsync(k), p.GetValue(key)!, versionOnly: true));
        var put = new Command("put", "Write a key.") { key, value, file };
        put.SetAction((p, ct) => Kv(p, ct, async (client, k) => await client.PutAsync(k, await ValueAsync(p, value, file, ct)), p.GetValue(key)!));
        var delete = new Command("delete", "Delete a key.") { key, version };
        delete.SetAction((p, ct) => Kv(p, ct, (client, k) => client.DeleteAsync(k, p.GetValue(version)), p.GetValue(key)!));
        var cas = new Command("cas", "Write a key only if its version is the expected one.") { key, expected, value, file };
        cas.SetAction((p, ct) => Kv(p, ct, async (client, k) => await client.CompareAndSetAsync(k, await ValueAsync(p, value, file, ct), p.GetValue(expected)), p.GetValue(key)!));
        kv.Subcommands.Add(get);
        kv.Subcommands.Add(versionOf);
        kv.Subcommands.Add(put);
        kv.Subcommands.Add(delete);
        kv.Subcommands.Add(cas);
        return kv;
    }

    private static Task<int> Kv(ParseResult p, CancellationToken ct, Func<KeyValueClient, string, Task<KvResult>> op, string key, bool versionOnly = false) =>
        WithCluster(p, ct, async (c, json) =>
        {
            CheckKey(key);
            var client = await KeyValueClient.CreateAsync(c);
            var r = await op(client, key);
            if (versionOnly)
            {
                var known = r.Status is KvStatus.Ok or KvStatus.NotFound;
                if (known)
                {
                    Print(json, new { r.Key, r.Version, r.Group }, () => r.Version.ToString(CultureInfo.InvariantCulture));
                    return ExitCodes.Ok;
                }
            }

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

    /// <summary>
    /// Refuses empty keys and keys that are not UTF-8 text. The shell hands undecodable bytes to .NET as
    /// U+FFFD, so two different byte strings would name the same key.
    /// </summary>
    private static void CheckKey(string key)
    {
        if (key.Length == 0)
        {
            throw new CommandException(ErrorKind.Usage, "A key must not be empty.");
        }

        if (key.Contains('\uFFFD', StringComparison.Ordinal) || !IsWellFormed(key))
        {
            throw new CommandException(ErrorKind.Usage, "The key is not valid UTF-8 text (it holds bytes that do not decode, shown as U+FFFD); keys are UTF-8 text, and such keys would collide.");
        }
    }

    private static bool IsWellFormed(string text)
    {
        for (var i = 0; i < text.Length; i++)
        {
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                i++;
            }
            else if (char.IsSurrogate(text[i]))
            {
                return false;
            }
        }

        return true;
    }

    private static Command BuildMembers()
    {
        var group = new Argument<int>("group") { Description = "The group index (0 .. group count - 1)." };
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
            var r = await op(await GroupAsync(c, p.GetValue(group)));
            Print(json, r, () => r.Status == ProposalStatus.Ok
                ? $"group {r.Group} members: {string.Join(", ", r.Members)}"
                : $"failed ({r.Status}): {r.Error}");
            return r.Status == ProposalStatus.Ok ? ExitCodes.Ok : ExitCodes.OperationFailed;
        });

    /// <summary>
    /// Connects, runs, maps failures to exit codes: every kind of mistake has one exit code and one
    /// sentence (<see cref="ErrorKind"/>), also as <c>{"error": kind, "message": ..., "exitCode": n}</c> with --json.
    /// </summary>
    internal static async Task<int> WithCluster(ParseResult p, CancellationToken ct, Func<IClusterClient, bool, Task<int>> action)
    {
        var json = p.GetValue(JsonOption);
        var timeout = p.GetValue(TimeoutOption);
        var clusterId = p.GetValue(ClusterIdOption)!;
        var serviceId = p.GetValue(ServiceIdOption)!;
        if (timeout < 1)
        {
            PrintError(json, ErrorKind.Usage, $"--timeout must be at least 1 second; it is {timeout}.");
            return ExitCodes.UsageError;
        }

        var gateways = p.GetValue(GatewaysOption) is { Length: > 0 } g ? g : ClusterConnection.DefaultGateways;
        ClusterConnection connection;
        try
        {
            connection = await ClusterConnection.ConnectAsync(gateways, clusterId, serviceId, TimeSpan.FromSeconds(timeout), ct);
        }
        catch (FormatException ex)
        {
            PrintError(json, ErrorKind.Usage, ex.Message);
            return ExitCodes.UsageError;
        }
        catch (ClusterUnreachableException ex) when (ex.Listening.Count > 0)
        {
            PrintError(json, ErrorKind.Usage, $"The gateways at {string.Join(", ", ex.Listening)} are listening but did not accept this client: is the cluster id '{clusterId}' (and service id '{serviceId}') the silos' Orleans:ClusterId? Give --cluster-id and --service-id.");
            return ExitCodes.UsageError;
        }
        catch (ClusterUnreachableException ex)
        {
            PrintError(json, ErrorKind.Unreachable, ex.Message);
            return ExitCodes.ClusterUnreachable;
        }

        await using (connection)
        {
            try
            {
                return await action(connection.Grains, json);
            }
            catch (CommandException ex)
            {
                PrintError(json, ex.Kind, ex.Message);
                return ExitCodes.For(ex.Kind);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                PrintError(json, ErrorKind.Failed, "Stopped by a signal before the answer came; the operation may still take effect.");
                return ExitCodes.OperationFailed;
            }
            catch (Exception ex) when (ex is SiloUnavailableException or ConnectionFailedException)
            {
                PrintError(json, ErrorKind.Unreachable, $"The cluster went away during the command: {Describe(ex)}");
                return ExitCodes.ClusterUnreachable;
            }
            catch (TimeoutException ex)
            {
                PrintError(json, ErrorKind.Failed, $"No answer within {timeout} s (--timeout): {Describe(ex)}");
                return ExitCodes.OperationFailed;
            }
            catch (Exception ex) when (ex is ArgumentException or FormatException)
            {
                PrintError(json, ErrorKind.Usage, Describe(ex));
                return ExitCodes.UsageError;
            }
            catch (Exception ex) when (ex is OrleansException or InvalidOperationException)
            {
                PrintError(json, ErrorKind.Failed, Describe(ex));
                return ExitCodes.OperationFailed;
            }
        }
    }

    internal static void Print<T>(bool json, T value, Func<string> text) =>
        Console.WriteLine(json ? JsonSerializer.Serialize(value, Json) : text());

    private static void PrintError(bool json, ErrorKind kind, string message)
    {
        var name = kind.ToString().ToLowerInvariant();
        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new { error = name, message, exitCode = ExitCodes.For(kind) }, Json));
        }
        else
        {
            Console.Error.WriteLine($"{name}: {message}");
        }
    }

    /// <summary>One line for an exception: its message without the parameter name suffix, never a stack trace.</summary>
    internal static string Describe(Exception ex)
    {
        var message = ex switch
        {
            ArgumentOutOfRangeException a when a.ParamName is not null => a.Message.Split(Environment.NewLine)[0].Replace($" (Parameter '{a.ParamName}')", string.Empty, StringComparison.Ordinal),
            ArgumentException a when a.ParamName is not null => a.Message.Replace($" (Parameter '{a.ParamName}')", string.Empty, StringComparison.Ordinal),
            _ => ex.Message,
        };
        var line = message.Split('\n')[0].Trim();
        return line.Length > 0 ? line : ex.GetType().Name;
    }

    private static string Printable(byte[] value)
    {
        var text = Encoding.UTF8.GetString(value);
        return text.All(ch => !char.IsControl(ch)) ? text : Convert.ToHexString(value);
    }
}

/// <summary>The kinds of failure the client reports, each with one exit code (<see cref="ExitCodes.For"/>).</summary>
internal enum ErrorKind
{
    /// <summary>The command line is wrong (exit code 2).</summary>
    Usage,

    /// <summary>The cluster answered but the operation failed (exit code 1).</summary>
    Failed,

    /// <summary>No gateway answered (exit code 3).</summary>
    Unreachable,
}

/// <summary>A mistake found while running a command, reported as one line.</summary>
internal sealed class CommandException(ErrorKind kind, string message) : Exception(message)
{
    /// <summary>What kind of mistake.</summary>
    public ErrorKind Kind { get; } = kind;
}
