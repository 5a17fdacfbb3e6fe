using System.Runtime.InteropServices;

namespace Orleans.Paxos.Faults.Cluster;

/// <summary>POSIX signals to other processes (kill -STOP / -CONT / -9).</summary>
internal static partial class Signals
{
    public const int SigKill = 9;

    // Linux numbering (x86-64 and arm64).
    public const int SigCont = 18;
    public const int SigStop = 19;

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
