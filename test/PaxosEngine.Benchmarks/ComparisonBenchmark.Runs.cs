using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace Orleans.Paxos.Engine.Benchmarks;

/// <summary>Running one side of a row: phxbench, or this program's consensus benchmark, each as a child process.</summary>
internal static partial class ComparisonBenchmark
{
    /// <summary>The environment variable naming the phxbench binary.</summary>
    private const string PhxbenchVariable = "PAXOS_PHXBENCH";

    /// <summary>Columns of phxbench's CSV line (its README): ok 8, fail 9, ops_per_s 10, mean 11, p50 12, p99 13, cpu_pct 17.</summary>
    private const int PhxbenchColumns = 18;

    /// <summary>
    /// One phxbench run: 3 PhxPaxos nodes in 3 processes on 3 free consecutive loopback ports, a fresh folder under /tmp.
    /// Its <c>cpu_pct</c> is the CPU time of the three node processes over the window (callers included), so CPU per
    /// proposal is <c>cpu_pct / 100 × window / ok</c>.
    /// </summary>
    private static async Task<Figures> RunPhxPaxosAsync(string phxbench, Row row, Options o)
    {
        var psi = new ProcessStartInfo(phxbench) { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in new[]
        {
            "--groups", I(row.Groups), "--value", I(row.ValueBytes), "--threads", I(row.Callers),
            "--batch", row.PhxBatch ? "1" : "0", "--batch-count", I(o.BatchCount), "--sync", row.Sync ? "1" : "0",
            "--warmup", D(o.WarmupSeconds), "--duration", D(o.Seconds), "--port", I(Orleans.Paxos.TestSupport.LoopbackPorts.Range(3)),
            "--procs", "3", "--tag", "compare",
        })
        {
            psi.ArgumentList.Add(a);
        }

        // phxbench's own watchdog fires after warm-up + window + 60 s.
        var (output, disk) = await RunSideAsync(psi, TimeSpan.FromSeconds(o.WarmupSeconds + o.Seconds + 90), o).ConfigureAwait(false);
        var line = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault(l => l.StartsWith("compare,", StringComparison.Ordinal))
            ?? throw new FormatException($"phxbench printed no CSV line: {Tail(output)}");
        var f = line.Split(',');
        if (f.Length != PhxbenchColumns)
        {
            throw new FormatException($"phxbench printed {f.Length} columns, not {PhxbenchColumns}: {line}");
        }

        double Number(int column) => double.Parse(f[column], CultureInfo.InvariantCulture);
        var ok = long.Parse(f[8], CultureInfo.InvariantCulture);
        var cpuPercent = Number(17);
        return new Figures(
            Number(10),
            ok == 0 ? double.NaN : Number(11),
            ok == 0 ? double.NaN : Number(12),
            ok == 0 ? double.NaN : Number(13),
            long.Parse(f[9], CultureInfo.InvariantCulture),
            cpuPercent,
            ok == 0 ? double.NaN : cpuPercent / 100 * o.Seconds * 1e6 / ok,
            double.NaN)
        {
            Disk = disk,
        };
    }

    /// <summary>One run of <c>consensus --procs 3 --json</c> in a fresh process of this program.</summary>
    private static async Task<Figures> RunOursAsync(Row row, string side, Options o)
    {
        var parts = side.Split('+');
        var batch = parts[0];
        var shared = parts.Contains(SharedOptIn);
        var coalesce = parts.Contains(CoalesceOptIn);
        var inline = parts.Contains(InlineOptIn);
        var psi = Program.StartInfo();
        foreach (var a in new[]
        {
            "consensus", "--procs", "3", "--json", "--groups", I(row.Groups), "--value-size", I(row.ValueBytes),
            "--proposers", I(row.Callers), "--batch", batch, "--batch-count", I(o.BatchCount), "--sync", row.Sync ? "on" : "off",
            "--warmup", D(o.WarmupSeconds), "--seconds", D(o.Seconds), "--shared-log", shared ? "on" : "off",
            "--coalesce", coalesce ? "on" : "off", "--sync-continuations", inline ? "on" : "off", "--loops", I(o.Loops),
        })
        {
            psi.ArgumentList.Add(a);
        }

        // Start-up waits up to 60 s + groups / 2 for every node to vote.
        var (output, disk) = await RunSideAsync(psi, TimeSpan.FromSeconds(o.WarmupSeconds + o.Seconds + 120 + row.Groups), o).ConfigureAwait(false);
        var json = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault(l => l.StartsWith('{'))
            ?? throw new FormatException($"consensus printed no JSON line: {Tail(output)}");
        var r = JsonSerializer.Deserialize<ConsensusBenchmark.Result>(json, ConsensusBenchmark.JsonOptions)
            ?? throw new FormatException($"consensus printed null: {json}");
        return new Figures(r.OpsPerSecond, r.MeanMs, r.P50Ms, r.P99Ms, r.Failed, r.CpuPercent, r.CpuMicrosPerOp, r.AllocatedBytesPerOp)
        {
            Threads = r.Threads,
            WorkingSetBytes = r.WorkingSetBytes,
            StartSeconds = r.StartSeconds,
            Disk = disk,
        };
    }

    /// <summary>One side's run: its output, and what the disks did during its busiest window (<see cref="DiskActivity"/>).</summary>
    private static async Task<(string Output, (double WriteMBPerSecond, double FlushesPerSecond) Disk)> RunSideAsync(ProcessStartInfo psi, TimeSpan timeout, Options o)
    {
        var disk = DiskActivity.Start();
        string output;
        await using (disk.ConfigureAwait(false))
        {
            output = await RunProcessAsync(psi, timeout).ConfigureAwait(false);
        }

        return (output, disk.Busiest(TimeSpan.FromSeconds(o.Seconds)));
    }

    /// <summary>
    /// Runs a child process to its end and returns its standard output; its standard error is returned in the
    /// exception when it exits with an error. Killed (with its children) after <paramref name="timeout"/>.
    /// </summary>
    private static async Task<string> RunProcessAsync(ProcessStartInfo psi, TimeSpan timeout)
    {
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.UseShellExecute = false;
        var command = $"{Path.GetFileName(psi.FileName)} {string.Join(' ', psi.ArgumentList)}";
        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {command}");
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using (var deadline = new CancellationTokenSource(timeout))
        {
            try
            {
                await process.WaitForExitAsync(deadline.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync().ConfigureAwait(false);
                throw new TimeoutException($"{command} did not finish within {timeout.TotalSeconds:0} s and was killed");
            }
        }

        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{command} exited with {process.ExitCode}: {Tail(await error.ConfigureAwait(false))}");
        }

        return await output.ConfigureAwait(false);
    }

    /// <summary>
    /// The phxbench binary: <c>PAXOS_PHXBENCH</c>, else <c>../shared/peer/phxbench</c> relative to the repository root
    /// (the folder holding <c>Orleans.Paxos.sln</c>, found above this program or the current folder).
    /// </summary>
    private static string LocatePhxbench()
    {
        var named = Environment.GetEnvironmentVariable(PhxbenchVariable);
        if (!string.IsNullOrEmpty(named))
        {
            return File.Exists(named)
                ? Path.GetFullPath(named)
                : throw new FileNotFoundException($"{PhxbenchVariable} is '{named}', which is not a file");
        }

        var root = RepositoryRoot();
        var beside = root is null ? null : Path.GetFullPath(Path.Combine(root, "..", "shared", "peer", "phxbench"));
        return beside is not null && File.Exists(beside)
            ? beside
            : throw new FileNotFoundException(
                $"phxbench (PhxPaxos's benchmark driver) not found: set {PhxbenchVariable} to its path, or put it at " +
                (beside ?? "../shared/peer/phxbench relative to the repository root (Orleans.Paxos.sln was not found above this program or the current folder)"));
    }

    private static string? RepositoryRoot()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Orleans.Paxos.sln")))
                {
                    return dir.FullName;
                }
            }
        }

        return null;
    }

    /// <summary>The commit this program was built from, as <c>git describe --always --dirty</c> says; "unknown" without git.</summary>
    private static async Task<string> DescribeCommitAsync()
    {
        var root = RepositoryRoot();
        if (root is null)
        {
            return "unknown";
        }

        var psi = new ProcessStartInfo("git");
        foreach (var a in new[] { "-C", root, "describe", "--always", "--dirty" })
        {
            psi.ArgumentList.Add(a);
        }

        try
        {
            return (await RunProcessAsync(psi, TimeSpan.FromSeconds(10)).ConfigureAwait(false)).Trim();
        }
        catch (Exception ex) when (ex is InvalidOperationException or TimeoutException or System.ComponentModel.Win32Exception)
        {
            return "unknown";
        }
    }

    private static string Tail(string text)
    {
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return lines.Length == 0 ? "(nothing)" : string.Join(" | ", lines.TakeLast(3));
    }

    private static string I(int value) => value.ToString(CultureInfo.InvariantCulture);

    private static string D(double value) => value.ToString(CultureInfo.InvariantCulture);
}
