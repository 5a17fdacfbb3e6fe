using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using Orleans.Paxos.Engine.Telemetry;

namespace Orleans.Paxos.Silo;

/// <summary>The <c>Telemetry</c> configuration section of the silo.</summary>
public sealed class TelemetrySettings
{
    /// <summary>The default Prometheus scrape port.</summary>
    public const int DefaultPrometheusPort = 9464;

    /// <summary>Master switch: false turns off metrics, traces and every exporter. Default true.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>The Prometheus scrape port; 0 turns the endpoint off. Default 9464.</summary>
    public int PrometheusPort { get; set; } = DefaultPrometheusPort;

    /// <summary>The host name the scrape endpoint listens on. Default <c>localhost</c>.</summary>
    public string PrometheusHost { get; set; } = "localhost";

    /// <summary>An OTLP collector (e.g. <c>http://localhost:4317</c>) to send metrics and traces to; none when empty.</summary>
    public string? OtlpEndpoint { get; set; }

    /// <summary>Whether .NET runtime metrics (GC, thread pool, exceptions) are collected. Default true.</summary>
    public bool RuntimeMetrics { get; set; } = true;

    /// <summary>Whether spans are collected (the engine's <c>paxos.propose</c> and Orleans' grain calls); they go to OTLP only. Default true.</summary>
    public bool Tracing { get; set; } = true;

    /// <summary>The scrape URL when the endpoint is on, else null.</summary>
    public string? ScrapeUrl => Enabled && PrometheusPort > 0 ? $"http://{PrometheusHost}:{PrometheusPort}/metrics" : null;

    /// <summary>Reads the section (defaults for what is missing).</summary>
    public static TelemetrySettings From(IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        var settings = new TelemetrySettings();
        configuration.GetSection("Telemetry").Bind(settings);
        if (settings.PrometheusPort is < 0 or > 65535)
        {
            throw new ArgumentException($"Telemetry:PrometheusPort must be 0 (off) or a TCP port; it is {settings.PrometheusPort}.");
        }

        if (!string.IsNullOrWhiteSpace(settings.OtlpEndpoint) && !Uri.TryCreate(settings.OtlpEndpoint, UriKind.Absolute, out _))
        {
            throw new ArgumentException($"Telemetry:OtlpEndpoint must be an absolute URI such as http://localhost:4317; it is '{settings.OtlpEndpoint}'.");
        }

        return settings;
    }
}

/// <summary>Registers the OpenTelemetry SDK on a silo host: the engine's and Orleans' meters, runtime metrics, Prometheus and OTLP.</summary>
public static class SiloTelemetry
{
    /// <summary>Orleans' meter name.</summary>
    public const string OrleansMeterName = "Microsoft.Orleans";

    /// <summary>
    /// Adds metrics (and traces when an OTLP endpoint is set) to the host as <paramref name="settings"/> say.
    /// Nothing is added when they are disabled or no exporter is configured.
    /// </summary>
    /// <param name="builder">The silo's host builder.</param>
    /// <param name="settings">What to collect and where to send it.</param>
    /// <param name="serviceInstanceId">The OpenTelemetry <c>service.instance.id</c>, e.g. the Paxos node id.</param>
    /// <returns>Whether anything was registered.</returns>
    public static bool AddPaxosTelemetry(this HostApplicationBuilder builder, TelemetrySettings settings, string serviceInstanceId)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(settings);
        var otlp = string.IsNullOrWhiteSpace(settings.OtlpEndpoint) ? null : new Uri(settings.OtlpEndpoint);
        if (!settings.Enabled || (settings.PrometheusPort == 0 && otlp is null))
        {
            return false;
        }

        var otel = builder.Services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService("orleans-paxos", serviceInstanceId: serviceInstanceId))
            .WithMetrics(m =>
            {
                m.AddMeter(PaxosMetrics.MeterName, OrleansMeterName);
                if (settings.RuntimeMetrics)
                {
                    m.AddRuntimeInstrumentation();
                }

                if (settings.PrometheusPort > 0)
                {
                    m.AddPrometheusHttpListener(o =>
                    {
                        o.Host = settings.PrometheusHost;
                        o.Port = settings.PrometheusPort;

                        // HttpListener matches the Host header: answer both loopback names, whichever was configured.
                        o.ConfigureHttpListener = (_, listener) => AddLoopbackAliases(listener.Prefixes);
                    });
                }

                if (otlp is not null)
                {
                    m.AddOtlpExporter(o => o.Endpoint = otlp);
                }
            });
        if (settings.Tracing && otlp is not null)
        {
            otel.WithTracing(t => t
                .AddSource(PaxosTracing.SourceName, "Microsoft.Orleans.Runtime", "Microsoft.Orleans.Application")
                .AddOtlpExporter(o => o.Endpoint = otlp));
        }

        return true;
    }

    /// <summary>Adds <c>127.0.0.1</c> for each <c>localhost</c> prefix and the reverse, so that the endpoint answers both.</summary>
    private static void AddLoopbackAliases(System.Net.HttpListenerPrefixCollection prefixes)
    {
        foreach (var prefix in prefixes.ToArray())
        {
            if (prefix.Contains("://localhost:", StringComparison.OrdinalIgnoreCase))
            {
                prefixes.Add(prefix.Replace("://localhost:", "://127.0.0.1:", StringComparison.OrdinalIgnoreCase));
            }
            else if (prefix.Contains("://127.0.0.1:", StringComparison.Ordinal))
            {
                prefixes.Add(prefix.Replace("://127.0.0.1:", "://localhost:", StringComparison.Ordinal));
            }
        }
    }
}
