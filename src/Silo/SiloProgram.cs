using System.Globalization;
using System.Net;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.Memory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;
using Orleans.Paxos.Grains;
using Orleans.Paxos.Grains.Hosting;

namespace Orleans.Paxos.Silo;

/// <summary>The silo host: one silo from configuration, or a three-silo local cluster by default.</summary>
public static class SiloProgram
{
    /// <summary>Paxos ports of the local cluster's nodes.</summary>
    public static readonly int[] LocalPaxosPorts = [11111, 11112, 11113];

    /// <summary>Orleans silo-to-silo ports of the local cluster.</summary>
    public static readonly int[] LocalSiloPorts = [11211, 11212, 11213];

    /// <summary>Orleans gateway (client) ports of the local cluster.</summary>
    public static readonly int[] LocalGatewayPorts = [30000, 30001, 30002];

    /// <summary>Runs until Ctrl+C or SIGTERM; returns the process exit code.</summary>
    public static async Task<int> RunAsync(string[] args)
    {
        var probe = new ConfigurationBuilder()
            .AddJsonFile(Path.Combine(AppContext.BaseDirectory, "appsettings.json"), optional: true)
            .AddEnvironmentVariables()
            .AddCommandLine(args)
            .Build();
        try
        {
            return string.IsNullOrWhiteSpace(probe["Paxos:MyNode"])
                ? await RunLocalClusterAsync(args)
                : await RunSingleSiloAsync(args);
        }
        catch (Exception ex)
        {
            // The last line names the cause, however deep the hosting and Orleans wrappers put it.
            Console.Error.WriteLine($"The silo failed to start: {DescribeStartFailure(ex)}");
            return 1;
        }
    }

    /// <summary>
    /// One sentence for a failed start: the messages of the exception and its causes, outermost first,
    /// without the wrappers that say nothing (aggregates, lifecycle cancellations), and what to do about a
    /// taken Prometheus port.
    /// </summary>
    public static string DescribeStartFailure(Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        var messages = new List<string>();
        var prometheusPortTaken = false;
        for (Exception? e = exception; e is not null; e = e is AggregateException { InnerExceptions.Count: > 0 } a ? a.InnerExceptions[0] : e.InnerException)
        {
            if (e is HttpListenerException or System.Net.Sockets.SocketException && messages.Any(m => m.Contains("Prometheus", StringComparison.Ordinal)))
            {
                prometheusPortTaken = true;
            }

            var wrapper = e is AggregateException || e.GetType().Name is "OrleansLifecycleCanceledException" or "TargetInvocationException";
            var message = e.Message.Trim().TrimEnd('.');
            if (!wrapper && message.Length > 0 && !messages.Any(m => m.Contains(message, StringComparison.Ordinal)))
            {
                messages.Add(message);
            }
        }

        var text = messages.Count == 0 ? exception.GetType().Name : string.Join(": ", messages) + ".";
        return prometheusPortTaken
            ? text + " Each silo on a host needs its own --Telemetry:PrometheusPort (or 0 for none)."
            : text;
    }

    private static async Task<int> RunSingleSiloAsync(string[] args)
    {
        var builder = CreateBuilder(args, new Dictionary<string, string?>());
        var config = builder.Configuration;
        var siloPort = config.GetValue("Orleans:SiloPort", 11211);
        var gatewayPort = config.GetValue("Orleans:GatewayPort", 30000);
        var advertised = IPAddress.Parse(config["Orleans:AdvertisedIP"] ?? "127.0.0.1");
        ConfigureSilo(builder, siloPort, gatewayPort, advertised, network: null);
        if (config[FaultInjectionTransportFactory.ConfigurationKey] is { Length: > 0 } controlFile)
        {
            // Testing only: the harness partitions silo processes by rewriting this file.
            builder.Services.AddSingleton<IPaxosTransportFactory>(sp => new FaultInjectionTransportFactory(controlFile, sp.GetRequiredService<ILoggerFactory>()));
            Console.WriteLine($"Fault injection on: Paxos traffic obeys {Path.GetFullPath(controlFile)}.");
        }

        var telemetry = TelemetrySettings.From(config);
        builder.AddPaxosTelemetry(telemetry, config["Paxos:MyNode"]!);
        var host = builder.Build();
        var dispose = true;
        try
        {
            await host.StartAsync();
            var engine = host.Services.GetRequiredService<PaxosEngineHost>();
            Console.WriteLine($"Silo up: Paxos node {engine.MyNodeId}, silo port {siloPort}, clients connect to {advertised}:{gatewayPort}; data in {Path.GetFullPath(engine.Options.StoragePath)}; {KeyValueStoreSettings.From(config)}.");
            PrintTelemetry(telemetry);
            await PrintStatusAsync(host.Services.GetRequiredService<IGrainFactory>(), engine.GroupCount);

            // Not WaitForShutdownAsync: once the Paxos majority is gone (this silo stops last, or is cut off), Orleans'
            // stop would retry its last membership writes for minutes. Cut short, the Paxos node is stopped and Orleans'
            // stop may still run, so its services are left undisposed: the process ends here.
            dispose = await host.WaitForPaxosShutdownAsync();
            return 0;
        }
        finally
        {
            if (dispose)
            {
                host.Dispose();
            }
            else
            {
                // The host stays undisposed, but the lines logged so far (the cause, the node's stop) must reach the
                // console before the process ends: the console logger writes from a queue of its own.
                foreach (var provider in host.Services.GetServices<ILoggerProvider>())
                {
                    provider.Dispose();
                }
            }
        }
    }

    private static async Task<int> RunLocalClusterAsync(string[] args)
    {
        using var stop = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            stop.Cancel();
        };
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx =>
        {
            ctx.Cancel = true;
            stop.Cancel();
        });

        // The ports can be moved (e.g. --LocalCluster:PaxosPort=21111) to run beside another cluster.
        var probe = new ConfigurationBuilder().AddEnvironmentVariables().AddCommandLine(args).Build();
        var paxosPorts = Ports(probe.GetValue("LocalCluster:PaxosPort", LocalPaxosPorts[0]));
        var siloPorts = Ports(probe.GetValue("LocalCluster:SiloPort", LocalSiloPorts[0]));
        var gatewayPorts = Ports(probe.GetValue("LocalCluster:GatewayPort", LocalGatewayPorts[0]));
        var members = paxosPorts.Select(p => $"127.0.0.1:{p}").ToArray();
        var network = new InProcessPaxosNetwork();
        var stopBarrier = new PaxosNodeStopBarrier(paxosPorts.Length);
        var hosts = new List<IHost>();
        TelemetrySettings? telemetry = null;
        try
        {
            for (var i = 0; i < paxosPorts.Length; i++)
            {
                var defaults = new Dictionary<string, string?>
                {
                    ["Paxos:MyNode"] = members[i],
                    ["Paxos:GroupCount"] = "3",
                    ["Paxos:StoragePath"] = Path.Combine("data", "node-" + paxosPorts[i].ToString(CultureInfo.InvariantCulture)),
                    ["Paxos:Transport"] = "Network",
                    ["Paxos:UseMaster"] = "true",
                    ["Paxos:UseMembership"] = "true",
                    ["Paxos:MasterLease"] = "00:00:05",
                };
                for (var m = 0; m < members.Length; m++)
                {
                    defaults["Paxos:Members:" + m.ToString(CultureInfo.InvariantCulture)] = members[m];
                }

                var builder = CreateBuilder(args, defaults);
                builder.Services.AddSingleton<IHostLifetime, ProcessOwnedLifetime>();
                builder.Services.AddSingleton(stopBarrier);
                var useInProcess = string.Equals(builder.Configuration["Paxos:Transport"], "InProcess", StringComparison.OrdinalIgnoreCase);
                ConfigureSilo(builder, siloPorts[i], gatewayPorts[i], IPAddress.Loopback, useInProcess ? network : null);
                if (i == 0)
                {
                    // The three silos share this process and the engine's meter, so one endpoint serves them all:
                    // each engine series carries its node in the paxos_node label.
                    telemetry = TelemetrySettings.From(builder.Configuration);
                    builder.AddPaxosTelemetry(telemetry, "local-cluster");
                }

                hosts.Add(builder.Build());
            }

            // Together: a silo joins Orleans only once the Paxos majority that holds the membership table is up.
            await StartTogetherAsync(hosts, stop.Token);

            var engine = hosts[0].Services.GetRequiredService<PaxosEngineHost>();
            Console.WriteLine($"Local Paxos cluster up: {hosts.Count} silos, {engine.GroupCount} groups, {KeyValueStoreSettings.From(hosts[0].Services.GetRequiredService<IConfiguration>())}.");
            for (var i = 0; i < hosts.Count; i++)
            {
                var e = hosts[i].Services.GetRequiredService<PaxosEngineHost>();
                Console.WriteLine($"  node {e.MyNodeId}  silo 127.0.0.1:{siloPorts[i]}  gateway 127.0.0.1:{gatewayPorts[i]}  data {Path.GetFullPath(e.Options.StoragePath)}");
            }

            PrintTelemetry(telemetry!);
            Console.WriteLine($"Clients connect to gateways {string.Join(", ", gatewayPorts.Select(p => "127.0.0.1:" + p.ToString(CultureInfo.InvariantCulture)))}, e.g. dotnet run --project src/Client -- status");
            await PrintStatusAsync(hosts[0].Services.GetRequiredService<IGrainFactory>(), engine.GroupCount);
            Console.WriteLine("Press Ctrl+C to stop.");
            await Task.Delay(Timeout.Infinite, stop.Token).ContinueWith(_ => { }, TaskScheduler.Default);
        }
        catch (OperationCanceledException)
        {
        }
        finally
        {
            Console.WriteLine("Stopping...");
            // Together: each silo's last membership writes need the Paxos majority the others' nodes provide.
            await Task.WhenAll(hosts.Select(async (host, i) =>
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
                try
                {
                    await host.StopAsync(timeout.Token);
                }
                catch (Exception ex)
                {
                    // Stopping must not replace the reason the program is ending.
                    Console.Error.WriteLine($"Silo {i} did not stop cleanly: {ex.Message}");
                }

                DisposeQuietly(host);
            }));

            Console.WriteLine("Stopped.");
        }

        return 0;
    }

    private static int[] Ports(int first) => [first, first + 1, first + 2];

    /// <summary>
    /// Starts the hosts at once. When one fails the others' starts are cancelled (they would wait for a
    /// Paxos majority that may never come), and the failure of the lowest-numbered silo that failed is thrown.
    /// </summary>
    private static async Task StartTogetherAsync(IReadOnlyList<IHost> hosts, CancellationToken cancellationToken)
    {
        using var abort = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var failures = new Exception?[hosts.Count];
        await Task.WhenAll(hosts.Select(async (host, i) =>
        {
            try
            {
                await host.StartAsync(abort.Token);
            }
            catch (Exception ex)
            {
                failures[i] = ex;
                await abort.CancelAsync();
            }
        }));

        if (failures.FirstOrDefault(f => f is not null and not OperationCanceledException) is { } failure)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        }

        cancellationToken.ThrowIfCancellationRequested();
        if (failures.FirstOrDefault(f => f is not null) is { } cancelled)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(cancelled);
        }
    }

    private static void DisposeQuietly(IHost host)
    {
        try
        {
            host.Dispose();
        }
        catch (Exception ex)
        {
            Console.Error.WriteLine($"A silo did not shut down cleanly: {ex.Message}");
        }
    }

    private static HostApplicationBuilder CreateBuilder(string[] args, Dictionary<string, string?> defaults)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
        {
            Args = args,
            ContentRootPath = AppContext.BaseDirectory,
            EnvironmentName = ResolveEnvironment(args),
        });

        // Defaults go first so that appsettings.json, the environment and the command line override them.
        builder.Configuration.Sources.Insert(0, new MemoryConfigurationSource { InitialData = defaults.Concat(ProviderDefaults).ToDictionary() });
        builder.Logging.AddFilter("Orleans", LogLevel.Warning);
        builder.Logging.AddFilter("Orleans.Runtime.Silo", LogLevel.Error);
        builder.Logging.AddFilter("Orleans.Paxos", LogLevel.Information);
        builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
        builder.Logging.AddFilter("Polly", LogLevel.Warning);
        builder.Logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss ";
        });
        return builder;
    }

    /// <summary>
    /// The host environment: <c>DOTNET_ENVIRONMENT</c> or <c>--environment</c> when given, else
    /// <see cref="Environments.Development"/> (not .NET's usual Production), so that a plain run needs no secret.
    /// <c>Production</c> loads <c>appsettings.Production.json</c>, which turns peer authentication on.
    /// </summary>
    private static string ResolveEnvironment(string[] args)
    {
        var probe = new ConfigurationBuilder().AddEnvironmentVariables("DOTNET_").AddCommandLine(args).Build();
        return probe[HostDefaults.EnvironmentKey] is { Length: > 0 } name ? name : Environments.Development;
    }

    /// <summary>
    /// Orleans' own providers, chosen through Orleans' configuration (<c>Orleans:Clustering:ProviderType</c>,
    /// <c>Orleans:Reminders:ProviderType</c>, <c>Orleans:GrainStorage:Default:ProviderType</c>): Paxos unless the
    /// configuration names another provider (whose package the program must then reference).
    /// </summary>
    public static readonly Dictionary<string, string?> ProviderDefaults = new()
    {
        ["Orleans:Clustering:ProviderType"] = PaxosProviderBuilder.Name,
        ["Orleans:Reminders:ProviderType"] = PaxosProviderBuilder.Name,
        ["Orleans:GrainStorage:Default:ProviderType"] = PaxosProviderBuilder.Name,
    };

    private static void ConfigureSilo(HostApplicationBuilder builder, int siloPort, int gatewayPort, IPAddress advertised, InProcessPaxosNetwork? network)
    {
        var clusterId = builder.Configuration["Orleans:ClusterId"] ?? "paxos";
        var serviceId = builder.Configuration["Orleans:ServiceId"] ?? "paxos";
        if (network is not null)
        {
            builder.Services.AddSingleton<IPaxosTransportFactory>(network);
        }

        builder.UseOrleans(silo =>
        {
            // Clustering, grain storage and reminders come from Orleans:Clustering / Orleans:GrainStorage /
            // Orleans:Reminders (ProviderDefaults: Paxos, on this silo's own node; no external store, no primary silo).
            silo.ConfigureEndpoints(advertised, siloPort, gatewayPort, listenOnAnyHostAddress: false);
            silo.Configure<ClusterOptions>(o =>
            {
                o.ClusterId = clusterId;
                o.ServiceId = serviceId;
            });
            silo.Configure<ClusterMembershipOptions>(o =>
            {
                // Failure detection: a dead silo is declared after NumMissedProbesLimit probes of ProbeTimeout
                // each (Orleans' defaults, 3 x 5 s, keep grains on a killed silo unreachable for 15-20 s).
                o.ProbeTimeout = TimeSpan.FromSeconds(2);
                o.NumMissedProbesLimit = 3;
                builder.Configuration.GetSection("Orleans:Membership").Bind(o);
            });
            silo.Configure<ReminderOptions>(builder.Configuration.GetSection("Orleans:ReminderOptions"));
            silo.Configure<SiloMessagingOptions>(builder.Configuration.GetSection("Orleans:Messaging"));
            silo.AddActivityPropagation();
            silo.AddPaxos();
            var kv = KeyValueStoreSettings.From(builder.Configuration);
            if (kv.Enabled)
            {
                silo.AddPaxosKeyValueStore(kv.SmId);
            }

            foreach (var id in LogOnlyStateMachine.IdsFrom(builder.Configuration, kv))
            {
                silo.AddPaxosStateMachine(group: null, (_, _) => new LogOnlyStateMachine(id));
            }
        });
    }

    private static void PrintTelemetry(TelemetrySettings telemetry)
    {
        if (!telemetry.Enabled)
        {
            Console.WriteLine("Telemetry off (Telemetry:Enabled=false).");
            return;
        }

        Console.WriteLine(telemetry.ScrapeUrl is { } url
            ? $"Prometheus scrape endpoint: {url}"
            : "Prometheus endpoint off (Telemetry:PrometheusPort=0).");
        if (!string.IsNullOrWhiteSpace(telemetry.OtlpEndpoint))
        {
            Console.WriteLine($"OTLP export of metrics{(telemetry.Tracing ? " and traces" : string.Empty)} to {telemetry.OtlpEndpoint}");
        }
    }

    private static async Task PrintStatusAsync(IGrainFactory grains, int groups)
    {
        Console.WriteLine($"{"group",5} {"node",-18} {"now",10} {"min chosen",10} {"lag",6} {"master",-18}");
        for (var g = 0; g < groups; g++)
        {
            try
            {
                var status = await grains.GetGrain<IPaxosGroupGrain>(g).GetStatusAsync().WaitAsync(TimeSpan.FromSeconds(10));
                foreach (var n in status.Nodes)
                {
                    Console.WriteLine(n.Reachable
                        ? $"{g,5} {n.Node,-18} {n.NowInstanceId,10} {n.MinChosenInstanceId,10} {n.Lag,6} {n.Master ?? "-",-18}"
                        : $"{g,5} {n.Silo,-18} unreachable: {n.StoppedReason}");
                }
            }
            catch (Exception ex) when (ex is TimeoutException or OrleansException)
            {
                Console.WriteLine($"{g,5} status unavailable: {ex.Message}");
            }
        }
    }

    /// <summary>A host lifetime that leaves Ctrl+C to the program, which stops the three hosts in order.</summary>
    private sealed class ProcessOwnedLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
