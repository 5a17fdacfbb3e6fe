using System.Diagnostics;

namespace Orleans.Paxos.Engine.Telemetry;

/// <summary>
/// The engine's <see cref="System.Diagnostics.ActivitySource"/>: one <c>paxos.propose</c> span per
/// proposal, from the call to <c>PaxosNode.ProposeAsync</c> until its result. Spans are created only
/// when a listener (an OpenTelemetry tracer provider with <c>AddSource("Orleans.Paxos")</c>) samples
/// them; they become children of the caller's current activity, e.g. an Orleans grain call.
/// </summary>
public static class PaxosTracing
{
    /// <summary>The activity source name, <c>"Orleans.Paxos"</c> (the same as the meter's).</summary>
    public const string SourceName = "Orleans.Paxos";

    /// <summary>The name of the span around one proposal.</summary>
    public const string ProposeActivityName = "paxos.propose";

    /// <summary>Tag: the group index (int).</summary>
    public const string GroupTag = "paxos.group";

    /// <summary>Tag: the instance the value was chosen in (long); absent when it was not chosen.</summary>
    public const string InstanceTag = "paxos.instance";

    /// <summary>Tag: the result, a <c>ProposeStatus</c> in snake case (<c>ok</c>, <c>conflict</c>, <c>timeout</c>...).</summary>
    public const string ResultTag = "paxos.result";

    /// <summary>Tag: how many instances another value won while this one was being proposed, each followed by a retry in a later instance (0 when it went through at once; int).</summary>
    public const string RetriesTag = "paxos.retries";

    /// <summary>Tag: whether the value came through BatchPropose (bool).</summary>
    public const string BatchTag = "paxos.batch";

    /// <summary>Tag: the proposing node (<c>ip:port</c>).</summary>
    public const string NodeTag = "paxos.node";

    /// <summary>The process-wide activity source of the engine.</summary>
    public static ActivitySource Source { get; } = new(SourceName, "1.0");

    /// <summary>Tags the retries on a proposal's span, if it has one (only a <c>paxos.propose</c> span is tagged).</summary>
    internal static void TagRetries(Activity? activity, int retries)
    {
        if (activity is { IsAllDataRequested: true } && ReferenceEquals(activity.Source, Source))
        {
            activity.SetTag(RetriesTag, retries);
        }
    }
}
