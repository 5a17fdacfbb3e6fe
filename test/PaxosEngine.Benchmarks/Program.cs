using System.Diagnostics;

namespace Orleans.Paxos.Engine.Benchmarks;

/// <summary>
/// Console benchmarks of the engine. Each prints its configuration beside its figures so that runs on
/// the same machine can be compared. Usage: <c>dotnet run -c Release --project test/PaxosEngine.Benchmarks -- &lt;suite&gt; [options]</c>.
/// </summary>
internal static class Program
{
    private static readonly Dictionary<string, (string Summary, Func<string[], Task<int>> Run)> Suites = new(StringComparer.OrdinalIgnoreCase)
    {
        // Each suite registers one line here.
        ["storage"] = ("durable log puts/s with 1, 8, 64 writers (group commit)", StorageBenchmark.RunAsync),
        ["transport"] = (TransportBenchmark.Summary, TransportBenchmark.RunAsync),
        ["consensus"] = (ConsensusBenchmark.Summary, ConsensusBenchmark.RunAsync),
        ["disk"] = (DiskBenchmark.Summary, args => Task.FromResult(DiskBenchmark.Run(args))),
        ["compare"] = (ComparisonBenchmark.Summary, ComparisonBenchmark.RunAsync),
    };

    public static async Task<int> Main(string[] args)
    {
        if (args.Length == 0 || !Suites.TryGetValue(args[0], out var suite))
        {
            Console.Error.WriteLine("usage: <suite> [options]; suites:");
            foreach (var (name, (summary, _)) in Suites)
            {
                Console.Error.WriteLine($"  {name,-10} {summary}");
            }

            return args.Length == 0 ? 0 : 2;
        }

        return await suite.Run(args[1..]).ConfigureAwait(false);
    }

    /// <summary>
    /// How to start this program again as a child process (its own apphost, or <c>dotnet</c> with this assembly),
    /// standard output redirected; the caller adds the suite and its arguments.
    /// </summary>
    internal static ProcessStartInfo StartInfo()
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!)
        {
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        if (!Environment.ProcessPath!.EndsWith("Orleans.Paxos.Engine.Benchmarks", StringComparison.Ordinal))
        {
            psi.ArgumentList.Add(typeof(Program).Assembly.Location);
        }

        return psi;
    }
}
