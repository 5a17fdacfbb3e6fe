namespace Orleans.Paxos.TestSupport;

/// <summary>A new folder under the temp folder, deleted with everything in it on <see cref="Dispose"/>.</summary>
public sealed class TemporaryDirectory : IDisposable
{
    /// <summary>Creates <c>&lt;temp&gt;/&lt;prefix&gt;-&lt;guid&gt;</c>.</summary>
    public TemporaryDirectory(string prefix)
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), prefix + "-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    /// <summary>The folder's full path.</summary>
    public string Path { get; }

    /// <summary>Deletes the folder; a file still held open (e.g. by a process that outlived its test) leaves it behind.</summary>
    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
        }
    }

    /// <inheritdoc />
    public override string ToString() => Path;
}
