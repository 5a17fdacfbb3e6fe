using System.Runtime.InteropServices;

namespace Orleans.Paxos.TestSupport;

/// <summary>POSIX signals to other processes (kill -INT / -TERM / -STOP / -CONT / -9). Linux only.</summary>
public static partial class Signals
{
    /// <summary>Ctrl+C.</summary>
    public const int SigInt = 2;

    /// <summary>kill -9: no shutdown at all.</summary>
    public const int SigKill = 9;

    /// <summary>The polite stop of kill(1).</summary>
    public const int SigTerm = 15;

    // Linux numbering (x86-64 and arm64).

    /// <summary>Resumes a stopped process.</summary>
    public const int SigCont = 18;

    /// <summary>Stops (pauses) a process; it cannot ignore it.</summary>
    public const int SigStop = 19;

    /// <summary>Sends <paramref name="signal"/> to process <paramref name="pid"/>.</summary>
    public static void Send(int pid, int signal)
    {
        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException("Process signals are implemented for Linux only.");
        }

        if (Kill(pid, signal) != 0)
        {
            throw new InvalidOperationException($"kill({pid}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>
    /// Whether this process ignores <paramref name="signal"/> (Linux <c>/proc/self/status</c>, <c>SigIgn</c>), and so do the
    /// processes it starts: a shell starts the commands it runs in the background with SIGINT ignored, and .NET then
    /// installs no Ctrl+C handler in them.
    /// </summary>
    public static bool IsIgnoredHere(int signal)
    {
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }

        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return line is not null
            && ulong.TryParse(line["SigIgn:".Length..].Trim(), System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture, out var mask)
            && (mask & (1UL << (signal - 1))) != 0;
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
