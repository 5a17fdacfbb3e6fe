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
        var siloDirectory = Path.GetDirectoryName(BuiltPrograms.Silo)!;
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
        using var work = new TemporaryDirectory("paxos-auth-silo");
        using var silo = SiloProcess.Start(
            work.Path,
            ["--Paxos:MyNode=127.0.0.1:1", "--Paxos:Members:0=127.0.0.1:1", "--Paxos:StoragePath=" + Path.Combine(work.Path, "data"), "--Telemetry:PrometheusPort=0"],
            environment: new Dictionary<string, string> { ["DOTNET_ENVIRONMENT"] = "Production" });
        var code = await silo.WaitForExitAsync(TimeSpan.FromSeconds(60));

        Assert.True(code == 1, silo.Output);
        Assert.Contains("The silo failed to start", silo.Output);
        Assert.Contains("PeerAuthentication", silo.Output);
        Assert.Contains("no secret is set", silo.Output);
    }
}
