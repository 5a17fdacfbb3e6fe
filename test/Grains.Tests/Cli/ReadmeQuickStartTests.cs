using System.Text;
using System.Text.RegularExpressions;

namespace Orleans.Paxos.Grains.Tests.Cli;

/// <summary>Runs the README's quick start, line by line as written, against a real cluster.</summary>
[Trait("Category", "Process")]
[Collection(CliClusterCollection.Name)]
public sealed partial class ReadmeQuickStartTests(CliCluster cluster)
{
    [Fact]
    public async Task The_README_quick_start_works_as_written()
    {
        var lines = QuickStartLines();

        // The first two lines make `paxos` (publish once, then an alias); here `paxos` is the built client
        // with the test cluster's gateways, already on the PATH.
        Assert.StartsWith("dotnet publish src/Client -o .paxos", lines[0], StringComparison.Ordinal);
        Assert.StartsWith("alias paxos=\"$PWD/.paxos/Orleans.Paxos.Client\"", lines[1], StringComparison.Ordinal);
        var script = new StringBuilder("cd \"$1\"\n");
        var commands = lines.Skip(2).Select(StripComment).ToArray();
        for (var i = 0; i < commands.Length; i++)
        {
            Assert.StartsWith(commands[i].StartsWith("v=", StringComparison.Ordinal) ? "v=$(paxos " : "paxos ", commands[i], StringComparison.Ordinal);

            // A command that follows the cluster until Ctrl+C gets SIGTERM after a few seconds and must end with 0.
            var follows = commands[i].Contains("--watch", StringComparison.Ordinal) || commands[i] == "paxos watch 0";
            script.Append("echo '@@@ ").Append(i).Append("'\n")
                .Append(follows ? "timeout --preserve-status -s TERM 5 " : string.Empty).Append(commands[i]).Append('\n')
                .Append("echo \"@@@ rc $?\"\n");
        }

        var run = await cluster.ShellAsync($"set -- '{BuiltPrograms.RepositoryRoot}'\n{script}", TimeSpan.FromMinutes(3));
        Assert.True(run.Code == 0, run.ToString());
        var codes = RcLine().Matches(run.Stdout).Select(m => m.Groups[1].Value).ToArray();
        Assert.True(codes.Length == commands.Length, run.ToString());
        for (var i = 0; i < commands.Length; i++)
        {
            Assert.True(codes[i] == "0", $"'{commands[i]}' ended with exit code {codes[i]}:\n{run}");
        }

        // The outputs the comments promise.
        Assert.Matches(@"chosen: group 0 instance \d+", run.Stdout);
        Assert.Matches(@"paris  \(version \d+, group 2,", run.Stdout);
        Assert.Matches(@"group 0: master 127\.0\.0\.1:\d+", run.Stdout);
        Assert.Contains("0 failed in", run.Stdout);
        var final = await cluster.ClientAsync("kv", "get", "city");
        Assert.True(final.Code == 1 && final.Stdout.Contains("not found: city", StringComparison.Ordinal), final.ToString());
    }

    private static string[] QuickStartLines()
    {
        var readme = File.ReadAllText(Path.Combine(BuiltPrograms.RepositoryRoot, "README.md"));
        var section = readme.IndexOf("## Quick start with the client", StringComparison.Ordinal);
        Assert.True(section >= 0, "README.md has no quick start section");
        var open = readme.IndexOf("```sh\n", section, StringComparison.Ordinal) + "```sh\n".Length;
        var close = readme.IndexOf("```", open, StringComparison.Ordinal);
        return readme[open..close].Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    }

    private static string StripComment(string line)
    {
        var hash = line.IndexOf("  #", StringComparison.Ordinal);
        return (hash < 0 ? line : line[..hash]).Trim();
    }

    [GeneratedRegex(@"@@@ rc (\d+)")]
    private static partial Regex RcLine();
}
