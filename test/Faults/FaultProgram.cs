using System.Globalization;
using Orleans.Paxos.Faults.Checking;
using Orleans.Paxos.Faults.History;

namespace Orleans.Paxos.Faults;

/// <summary>The command line: run a fault scenario, record a history against a running cluster, or check a history file.</summary>
public static class FaultProgram
{
    private const string Usage = """
        usage:
          faults check <history.jsonl>                 check a history (linearizability per key, lost writes)
          faults run [--nodes 3] [--seconds 30] [--clients 6] [--keys 4] [--seed N]
                     [--nemesis kill,pause,partition,wipe,index,unsynced|all]
                     [--groups 2] [--work DIR] [--min-faults N]
                                                       start real silo processes, run workload and nemesis, check
                                                       (--min-faults: go on past --seconds until N faults, at most 3x)
          faults record -g ip:port [-g ...] [--seconds 30] [--clients 6] [--keys 4] [--seed N] [--out FILE]
                                                       record a history against a running cluster, then check it
        exit codes: 0 passed, 1 a check failed, 2 usage error
        """;

    /// <summary>Runs the command line; returns the exit code.</summary>
    public static async Task<int> RunAsync(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        if (args.Length == 0)
        {
            Console.Error.WriteLine(Usage);
            return 2;
        }

        try
        {
            switch (args[0])
            {
                case "check" when args.Length == 2:
                    var history = HistoryFile.Read(args[1]);
                    var report = HistoryReport.Check(history);
                    Console.WriteLine(report.Describe());
                    return report.Passed ? 0 : 1;
                case "run":
                    {
                        var options = FaultRunOptions.Parse(args.AsSpan(1));
                        var result = await FaultRun.RunAsync(options, Console.Out);
                        return result.Passed ? 0 : 1;
                    }

                case "record":
                    {
                        var options = FaultRunOptions.Parse(args.AsSpan(1));
                        var result = await FaultRun.RecordAsync(options, Console.Out);
                        return result.Passed ? 0 : 1;
                    }

                default:
                    Console.Error.WriteLine(Usage);
                    return 2;
            }
        }
        catch (FormatException ex)
        {
            Console.Error.WriteLine(ex.Message);
            Console.Error.WriteLine(Usage);
            return 2;
        }
        catch (InvalidOperationException ex)
        {
            // A run that could not go on (e.g. a silo that no longer starts): a failed check, not a crash.
            Console.Error.WriteLine(ex.Message);
            Console.WriteLine("FAILED: " + (ex.InnerException?.Message ?? ex.Message).Split('\n')[0]);
            return 1;
        }
    }

    internal static int ParseInt(string s) => int.Parse(s, NumberStyles.Integer, CultureInfo.InvariantCulture);
}
