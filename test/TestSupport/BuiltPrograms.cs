namespace Orleans.Paxos.TestSupport;

/// <summary>
/// The repository's built programs, found from the running test or tool: <c>test/&lt;project&gt;/bin/&lt;configuration&gt;/&lt;tfm&gt;/</c>
/// leads to <c>src/&lt;program&gt;/bin/&lt;configuration&gt;/&lt;tfm&gt;/</c>. The projects that use them reference them
/// with <c>ReferenceOutputAssembly="false"</c>, so that building the tests builds them.
/// </summary>
public static class BuiltPrograms
{
    /// <summary>Names a Silo program to use instead of the built one (e.g. a published or older build).</summary>
    public const string SiloVariable = "PAXOS_SILO_DLL";

    private static readonly DirectoryInfo BaseDirectory = new(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));

    /// <summary>The repository's root folder.</summary>
    public static string RepositoryRoot => BaseDirectory.Parent!.Parent!.Parent!.Parent!.Parent!.FullName;

    /// <summary>The Silo program's dll (src/Silo), or the one <see cref="SiloVariable"/> names.</summary>
    public static string Silo =>
        Environment.GetEnvironmentVariable(SiloVariable) is { Length: > 0 } overridden ? overridden : Locate("Silo", "Orleans.Paxos.Silo.dll");

    /// <summary>The Client program's dll (src/Client).</summary>
    public static string Client => Locate("Client", "Orleans.Paxos.Client.dll");

    /// <summary>The dll <paramref name="dll"/> of the built project <c>src/<paramref name="project"/></c>, in this build's configuration.</summary>
    /// <exception cref="FileNotFoundException">It was not built.</exception>
    public static string Locate(string project, string dll)
    {
        var path = Path.Combine(RepositoryRoot, "src", project, "bin", BaseDirectory.Parent!.Name, BaseDirectory.Name, dll);
        return File.Exists(path) ? path : throw new FileNotFoundException($"{path} is missing; build the solution first", path);
    }
}
