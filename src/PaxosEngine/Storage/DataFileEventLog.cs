using System.Globalization;
using System.Text;

namespace Orleans.Paxos.Engine.Storage;

/// <summary>
/// The human-readable <c>vfile/LOG</c> of a group, in PhxPaxos's format
/// (<c>"yyyy-MM-dd HH:mm:ss:fff &lt;message&gt;\n"</c>, local time). Written only on rare events
/// (open, rollover, truncate, delete), so each line opens, appends and closes the file.
/// </summary>
internal sealed class DataFileEventLog(string path)
{
    private readonly object _lock = new();

    public string Path { get; } = path;

    public void Write(string message)
    {
        var line = DateTime.Now.ToString("yyyy-MM-dd HH:mm:ss:fff", CultureInfo.InvariantCulture) + " " + message + "\n";
        lock (_lock)
        {
            File.AppendAllText(Path, line, Encoding.ASCII);
        }
    }
}
