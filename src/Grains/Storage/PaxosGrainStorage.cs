using System.Globalization;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Paxos.Engine.StateMachines.KeyValue;
using Orleans.Serialization.Serializers;
using Orleans.Storage;

namespace Orleans.Paxos.Grains.Storage;

/// <summary>
/// Orleans grain storage on the replicated key-value store (<see cref="KeyValueStateMachine"/>) of the silo's own
/// Paxos node. A grain's state is one key, <c>&lt;serviceId&gt;/state/&lt;provider&gt;/&lt;stateName&gt;/&lt;grainId&gt;</c>,
/// in the group <see cref="KeyValueClient.GroupOf"/> picks, so grains spread over the groups.
/// </summary>
/// <remarks>
/// <para>The ETag is the key's version (1 + the log instance of its last write). Writes are compare-and-set on it:
/// a stale ETag, or a null ETag when a record exists, raises <see cref="InconsistentStateException"/> and changes
/// nothing. Reads go through the log (linearizable).</para>
/// <para><c>ClearStateAsync</c> deletes the key when <see cref="PaxosGrainStorageOptions.DeleteStateOnClear"/>
/// (default; the ETag becomes null), else writes an empty record whose version is the new ETag. Either way the
/// state is reset to a new instance and <c>RecordExists</c> is false.</para>
/// </remarks>
public sealed partial class PaxosGrainStorage : IGrainStorage
{
    private const byte Present = 1;
    private const byte Cleared = 0;

    private readonly string _name;
    private readonly PaxosGrainStorageOptions _options;
    private readonly PaxosTableAccess _access;
    private readonly IGrainStorageSerializer _serializer;
    private readonly IActivatorProvider _activators;
    private readonly ILogger _logger;
    private readonly string _prefix;

    /// <summary>Creates the storage provider <paramref name="name"/>.</summary>
    public PaxosGrainStorage(
        string name,
        PaxosGrainStorageOptions options,
        PaxosTableAccess access,
        IGrainStorageSerializer serializer,
        IActivatorProvider activators,
        IOptions<ClusterOptions> cluster,
        ILogger<PaxosGrainStorage> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(cluster);
        _name = name;
        _options = options;
        _access = access;
        _serializer = options.GrainStorageSerializer ?? serializer;
        _activators = activators;
        _logger = logger;
        _prefix = $"{cluster.Value.ServiceId}/state/{name}/";
    }

    /// <inheritdoc />
    public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => ReadStateAsync(stateName, grainId, grainState, CancellationToken.None);

    /// <inheritdoc />
    public async Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(grainState);
        var key = Key(stateName, grainId);
        var result = await RunAsync("read", key, KeyValueCommand.Get(Encoding.UTF8.GetBytes(key)), cancellationToken).ConfigureAwait(false);
        if (result.Status == KeyValueStatus.Ok && result.Value is { Length: > 0 } value)
        {
            grainState.ETag = Version(result.Version);
            if (value[0] == Present)
            {
                grainState.State = _serializer.Deserialize<T>(new BinaryData(value.AsMemory(1)));
                grainState.RecordExists = true;
            }
            else
            {
                grainState.State = CreateInstance<T>();
                grainState.RecordExists = false;
            }
        }
        else
        {
            grainState.ETag = null;
            grainState.State = CreateInstance<T>();
            grainState.RecordExists = false;
        }
    }

    /// <inheritdoc />
    public Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => WriteStateAsync(stateName, grainId, grainState, CancellationToken.None);

    /// <inheritdoc />
    public async Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(grainState);
        var key = Key(stateName, grainId);
        var expected = Expected(key, grainState.ETag);
        var data = _serializer.Serialize(grainState.State);
        var payload = new byte[data.Length + 1];
        payload[0] = Present;
        data.ToMemory().Span.CopyTo(payload.AsSpan(1));
        var result = await RunAsync("write", key, KeyValueCommand.CompareAndSet(Encoding.UTF8.GetBytes(key), payload, expected), cancellationToken).ConfigureAwait(false);
        Check(result, key, grainState.ETag, "write");
        grainState.ETag = Version(result.Version);
        grainState.RecordExists = true;
    }

    /// <inheritdoc />
    public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => ClearStateAsync(stateName, grainId, grainState, CancellationToken.None);

    /// <inheritdoc />
    public async Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(grainState);
        var key = Key(stateName, grainId);
        var expected = Expected(key, grainState.ETag);
        var keyBytes = Encoding.UTF8.GetBytes(key);
        if (_options.DeleteStateOnClear)
        {
            var result = await RunAsync("clear", key, KeyValueCommand.Delete(keyBytes, expected), cancellationToken).ConfigureAwait(false);
            if (result.Status != KeyValueStatus.NotFound)
            {
                Check(result, key, grainState.ETag, "clear");
            }

            grainState.ETag = null;
        }
        else
        {
            var result = await RunAsync("clear", key, KeyValueCommand.CompareAndSet(keyBytes, [Cleared], expected), cancellationToken).ConfigureAwait(false);
            Check(result, key, grainState.ETag, "clear");
            grainState.ETag = Version(result.Version);
        }

        grainState.State = CreateInstance<T>();
        grainState.RecordExists = false;
    }

    private string Key(string stateName, GrainId grainId) => _prefix + stateName + "/" + grainId.ToString();

    private static string Version(ulong version) => version.ToString(CultureInfo.InvariantCulture);

    private ulong Expected(string key, string? etag)
    {
        if (etag is null)
        {
            return 0;
        }

        if (!ulong.TryParse(etag, NumberStyles.None, CultureInfo.InvariantCulture, out var version) || version == 0)
        {
            throw new InconsistentStateException($"Grain storage '{_name}': ETag '{etag}' of {key} is not a version this provider issued.", null, etag);
        }

        return version;
    }

    private void Check(KeyValueResult result, string key, string? etag, string what)
    {
        switch (result.Status)
        {
            case KeyValueStatus.Ok:
                return;
            case KeyValueStatus.VersionConflict or KeyValueStatus.NotFound:
                var stored = result.Version == 0 ? null : Version(result.Version);
                LogConflict(_name, what, key, etag, stored);
                throw new InconsistentStateException(
                    $"Grain storage '{_name}': {what} of {key} with ETag '{etag ?? "(none)"}' refused: the stored version is '{stored ?? "(none)"}'.",
                    stored,
                    etag);
            default:
                throw new PaxosTableException($"Grain storage '{_name}': {what} of {key} failed: {result.Status}.");
        }
    }

    private async Task<KeyValueResult> RunAsync(string what, string key, byte[] operation, CancellationToken cancellationToken)
    {
        var host = _access.Host;
        var machine = host.KeyValue
            ?? throw new PaxosTableException($"Grain storage '{_name}': node {host.MyNodeId} has no key-value store mounted; call AddPaxosKeyValueStore() on the silo.");
        var group = KeyValueClient.GroupOf(key, host.GroupCount);

        // The store refuses a second write of one key within one instance (a batch); propose again.
        for (var attempt = 1; ; attempt++)
        {
            var output = await _access.ProposeAsync($"grain storage '{_name}' {what} of {key}", group, machine.SmId, PaxosTableAccess.WithNonce(operation), cancellationToken).ConfigureAwait(false);
            var result = output as KeyValueResult
                ?? throw new PaxosTableException($"Grain storage '{_name}': state machine {machine.SmId} on group {group} is not the key-value store.");
            if (result.Status == KeyValueStatus.Retry && attempt < 16)
            {
                continue;
            }

            return result;
        }
    }

    private T CreateInstance<T>() => _activators.GetActivator<T>().Create();

    [LoggerMessage(Level = LogLevel.Debug, Message = "Grain storage {Name}: {What} of {Key} with ETag {ETag} refused; stored version {Stored}.")]
    private partial void LogConflict(string name, string what, string key, string? etag, string? stored);

    /// <summary>Creates the named provider from the silo's services (for <c>AddGrainStorage</c>).</summary>
    public static IGrainStorage Create(IServiceProvider services, string name)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = services.GetRequiredService<IOptionsMonitor<PaxosGrainStorageOptions>>().Get(name);
        return ActivatorUtilities.CreateInstance<PaxosGrainStorage>(services, name, options);
    }
}

/// <summary>Settings of a Paxos grain storage provider.</summary>
public sealed class PaxosGrainStorageOptions : IStorageProviderSerializerOptions
{
    /// <summary>Whether <c>ClearStateAsync</c> deletes the record (true, default) or writes an empty one that keeps a version.</summary>
    public bool DeleteStateOnClear { get; set; } = true;

    /// <summary>The serializer of the state; default: the silo's grain storage serializer (Orleans' serializer).</summary>
    public IGrainStorageSerializer GrainStorageSerializer { get; set; } = null!;
}
