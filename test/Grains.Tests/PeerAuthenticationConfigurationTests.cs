using System.Diagnostics;
using Microsoft.Extensions.Configuration;
using Orleans.Paxos.Engine.Node;

namespace Orleans.Paxos.Grains.Tests;

/// <summary>The <c>Paxos:PeerAuthentication</c> section: binding, the silo's Production profile, and its start-up check.</summary>
public sealed class PeerAuthenticationConfigurationTests
{
    private const string Secret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    [Fact]
    public void The_section_binds_into_the_node_options()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Paxos:PeerAuthentication:Enabled"] = "true",
            ["Paxos:PeerAuthentication:Secret"] = Secret,
        }).Build();
        var options = new PaxosNodeOptions();
        config.GetSection("Paxos").Bind(options);

        Assert.True(options.PeerAuthentication.Enabled);
        Assert.Equal(Convert.FromBase64String(Secret), options.PeerAuthentication.ResolveKey());
        Assert.DoesNotContain(Secret, options.PeerAuthentication.ToString());

        // Without the section: off, nothing to resolve.
        var plain = new PaxosNodeOptions();
        new ConfigurationBuilder().Build().GetSection("Paxos").Bind(plain);
        Assert.Null(plain.PeerAuthentication.ResolveKey());
    }

    [Fact]
    public void The_silo_production_profile_turns_authentication_on_and_needs_a_secret()
    {
        var siloDirectory = Path.GetDirectoryName(SiloDll())!;
        var production = new ConfigurationBuilder()
            .AddJsonFile(Path.Combine(siloDirectory, "appsettings.json"))
            .AddJsonFile(Path.Combine(siloDirectory, "appsettings.Production.json"))
            .Build();
        var options = new PaxosNodeOptions();
        production.GetSection("Paxos").Bind(options);
        Assert.True(options.PeerAuthentication.Enabled);
        var error = Assert.Throws<ArgumentException>(() => options.PeerAuthentication.ResolveKey());
        Assert.Contains("no secret is set", error.Message);

        // The default profile leaves it off.
        var development = new PaxosNodeOptions();
        new ConfigurationBuilder().AddJsonFile(Path.Combine(siloDirectory, "appsettings.json")).Build().GetSection("Paxos").Bind(development);
        Assert.False(development.PeerAuthentication.Enabled);
    }

    [Fact]
    [Trait("Category", "Process")]
    public async Task A_production_silo_without_a_secret_refuses_to_start_with_a_clear_message()
    {
        var work = Path.Combine(Path.GetTempPath(), "paxos-auth-silo-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
        try
        {
            var psi = new ProcessStartInfo("dotnet")
            {
                WorkingDirectory = work,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            psi.Environment["DOTNET_ENVIRONMENT"] = "Production";
            psi.ArgumentList.Add(SiloDll());
            psi.ArgumentList.Add("--Paxos:MyNode=127.0.0.1:1");
            psi.ArgumentList.Add("--Paxos:Members:0=127.0.0.1:1");
            psi.ArgumentList.Add("--Paxos:StoragePath=" + Path.Combine(work, "data"));
            psi.ArgumentList.Add("--Telemetry:PrometheusPort=0");
            using var process = Process.Start(psi)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await process.WaitForExitAsync(timeout.Token);
            var output = await stdout + await stderr;

            Assert.True(process.ExitCode == 1, output);
            Assert.Contains("The silo failed to start", output);
            Assert.Contains("PeerAuthentication", output);
            Assert.Contains("no secret is set", output);
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private static string SiloDll()
    {
        // test/Grains.Tests/bin/<Configuration>/<tfm>/ → src/Silo/bin/<Configuration>/<tfm>/
        var baseDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var repo = baseDir.Parent!.Parent!.Parent!.Parent!.Parent!.FullName;
        var path = Path.Combine(repo, "src", "Silo", "bin", baseDir.Parent!.Name, baseDir.Name, "Orleans.Paxos.Silo.dll");
        Assert.True(File.Exists(path), $"{path} is missing; build the solution first");
        return path;
    }
}
