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

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
