using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace Orleans.Paxos.Grains.Tests.Cli;

/// <summary>The Client program against a real cluster: errors, exit codes, signals, large values, keys.</summary>
[Trait("Category", "Process")]
[Collection(CliClusterCollection.Name)]
public sealed class CliTests(CliCluster cluster)
{
    [Fact]
    public async Task Watch_refuses_a_missing_group_and_ends_on_SIGTERM()
    {
        foreach (var group in new[] { "5", "-1" })
        {
            var missing = await cluster.ClientAsync("watch", group);
            Assert.True(missing.Code == 2, missing.ToString());
            Assert.Contains($"Group {group} does not exist: this cluster has groups 0..2.", missing.Stderr);
        }

        Assert.Equal(0, (await cluster.ClientAsync("propose", "0", "watched")).Code);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in (string[])[BuiltPrograms.Client, "watch", "0", .. cluster.GatewayArguments])
        {
            psi.ArgumentList.Add(a);
        }

        using var watch = Process.Start(psi)!;
        var firstLine = watch.StandardOutput.ReadLineAsync();
        Assert.True(await Task.WhenAny(firstLine, Task.Delay(TimeSpan.FromSeconds(30))) == firstLine, "watch printed nothing in 30 s");
        Assert.Matches(@"^0:\d+\.\d+ sm=\d+ ", await firstLine);
        var rest = watch.StandardOutput.ReadToEndAsync();
        var errors = watch.StandardError.ReadToEndAsync();

        Signals.Send(watch.Id, Signals.SigTerm);

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        await watch.WaitForExitAsync(timeout.Token);
        Assert.True(watch.ExitCode == 0, await rest + await errors);
    }

    [Fact]
    public async Task Each_kind_of_mistake_has_one_exit_code_and_one_sentence()
    {
        // A group that does not exist: the same answer from every command that takes a group.
        foreach (var args in new[] { new[] { "propose", "3", "x" }, ["master", "7"], ["members", "list", "9"], ["watch", "4"] })
        {
            var r = await cluster.ClientAsync(args);
            Assert.True(r.Code == 2, r.ToString());
            Assert.Matches(@"^usage: Group \d does not exist: this cluster has groups 0\.\.2\.\s*$", r.Stderr);
        }

        var json = await cluster.ClientAsync("master", "7", "--json");
        Assert.Equal(2, json.Code);
        using (var doc = JsonDocument.Parse(json.Stdout))
        {
            Assert.Equal("usage", doc.RootElement.GetProperty("error").GetString());
            Assert.Equal(2, doc.RootElement.GetProperty("exitCode").GetInt32());
            Assert.Contains("Group 7 does not exist", doc.RootElement.GetProperty("message").GetString());
        }

        var timeout = await cluster.ClientAsync("status", "--timeout", "0");
        Assert.True(timeout.Code == 2, timeout.ToString());
        Assert.Contains("--timeout must be at least 1 second", timeout.Stderr);

        var parse = await cluster.ClientAsync("frobnicate", "--json");
        Assert.Equal(2, parse.Code);
        Assert.Contains("\"error\":\"usage\"", parse.Stdout);

        var cluster2 = await cluster.ClientAsync("status", "--cluster-id", "not-this-one");
        Assert.True(cluster2.Code == 2, cluster2.ToString());
        Assert.Contains("cluster id 'not-this-one'", cluster2.Stderr);

        var unreachable = await ProgramRun.ClientAsync(["status", "-g", $"127.0.0.1:{LoopbackPorts.Next()}"], TimeSpan.FromSeconds(60));
        Assert.True(unreachable.Code == 3, unreachable.ToString());
        Assert.StartsWith("unreachable: No gateway answered", unreachable.Stderr);

        foreach (var r in new[] { json, timeout, cluster2, unreachable })
        {
            Assert.DoesNotContain("   at ", r.Output);
        }
    }

    [Fact]
    public async Task Bench_fails_when_operations_fail_says_why_and_ends_on_time()
    {
        var started = Stopwatch.GetTimestamp();
        var r = await cluster.ClientAsync("bench", "-d", "1", "-c", "2", "--value-size", (CliCluster.MaxValueSize + 1).ToString(CultureInfo.InvariantCulture));
        Assert.True(r.Code == 1, r.ToString());
        Assert.Contains("x: ValueTooLarge", r.Stdout);
        Assert.True(Stopwatch.GetElapsedTime(started) < TimeSpan.FromSeconds(30), r.ToString());

        var ok = await cluster.ClientAsync("bench", "-d", "1", "-c", "2", "--json");
        Assert.True(ok.Code == 0, ok.ToString());
        Assert.Contains("\"Errors\":0", ok.Stdout);
    }

    [Fact]
    public async Task Bench_ends_on_time_when_the_cluster_stops_answering()
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in (string[])[BuiltPrograms.Client, "bench", "-d", "3", "-c", "4", .. cluster.GatewayArguments])
        {
            psi.ArgumentList.Add(a);
        }

        using var bench = Process.Start(psi)!;
        var stdout = bench.StandardOutput.ReadToEndAsync();
        var progress = bench.StandardError.ReadLineAsync();
        Assert.True(await Task.WhenAny(progress, Task.Delay(TimeSpan.FromSeconds(30))) == progress, "bench printed no progress in 30 s");
        var stopped = Stopwatch.GetTimestamp();
        cluster.Silo.Pause();
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            await bench.WaitForExitAsync(timeout.Token);
        }
        finally
        {
            cluster.Silo.Resume();
        }

        // 2 s of the run were left and unanswered calls get 3 s more: not the 30 s of a call's timeout.
        Assert.True(Stopwatch.GetElapsedTime(stopped) < TimeSpan.FromSeconds(10), $"bench ended {Stopwatch.GetElapsedTime(stopped).TotalSeconds:F1} s after the cluster stopped");
        Assert.Equal(1, bench.ExitCode);
        Assert.Contains("no answer within 3 s after the end of the run", await stdout);

        // The cluster answers again.
        var status = await cluster.ClientAsync("kv", "put", "after-bench", "x");
        Assert.True(status.Code == 0, status.ToString());
    }

    [Fact]
    public async Task The_key_value_store_runs_on_the_configured_state_machine_id()
    {
        Assert.Contains($"key-value store on every group (SMID {CliCluster.KeyValueSmId})", cluster.Silo.Output);
        var put = await cluster.ClientAsync("kv", "put", "smid-check", "x", "--json");
        Assert.True(put.Code == 0, put.ToString());
        using var written = JsonDocument.Parse(put.Stdout);
        var group = written.RootElement.GetProperty("Group").GetInt32().ToString(CultureInfo.InvariantCulture);
        var instance = written.RootElement.GetProperty("InstanceId").GetUInt64().ToString(CultureInfo.InvariantCulture);
        var entry = await cluster.ClientAsync("watch", group, "--from", instance, "--count", "1", "--json");
        Assert.True(entry.Code == 0, entry.ToString());
        using var logged = JsonDocument.Parse(entry.Stdout);
        Assert.True(CliCluster.KeyValueSmId == logged.RootElement.GetProperty("SmId").GetInt32(), put.Stdout + "\n" + entry.Stdout);
    }

    [Fact]
    public async Task Values_too_long_for_the_command_line_come_from_a_file_or_standard_input()
    {
        var file = Path.Combine(cluster.Work, "big.txt");
        await File.WriteAllTextAsync(file, new string('v', 300 * 1024));
        var put = await cluster.ClientAsync("kv", "put", "big-value", "--file", file);
        Assert.True(put.Code == 0, put.ToString());
        var get = await cluster.ClientAsync("kv", "get", "big-value", "--json");
        Assert.True(get.Code == 0, get.ToString());
        using (var doc = JsonDocument.Parse(get.Stdout))
        {
            Assert.Equal(300 * 1024, doc.RootElement.GetProperty("ValueText").GetString()!.Length);
        }

        var stdin = await cluster.ShellAsync("head -c 200000 /dev/zero | tr '\\0' 'w' | paxos propose 1 --file -");
        Assert.True(stdin.Code == 0, stdin.ToString());
        Assert.Contains("chosen: group 1", stdin.Stdout);

        var both = await cluster.ClientAsync("kv", "put", "k", "v", "--file", file);
        Assert.True(both.Code == 2, both.ToString());
    }

    [Fact]
    public async Task Keys_that_are_not_UTF8_are_refused_instead_of_colliding()
    {
        var put = await cluster.ShellAsync("paxos kv put $'\\xff' first");
        Assert.True(put.Code == 2, put.ToString());
        Assert.Contains("not valid UTF-8", put.Stderr);
        var get = await cluster.ShellAsync("paxos kv get $'\\xfe'");
        Assert.True(get.Code == 2, get.ToString());

        var text = await cluster.ShellAsync("paxos kv put 'città' roma && paxos kv get 'città'");
        Assert.True(text.Code == 0, text.ToString());
        Assert.Contains("roma", text.Stdout);
    }
}
