using Orleans.Paxos.Engine.Transport;

namespace Orleans.Paxos.Engine.Node;

/// <summary>Peer authentication options.</summary>
public sealed partial class PaxosNodeOptions
{
    /// <summary>
    /// Authenticate every frame between nodes with a shared cluster secret (HMAC-SHA256; see
    /// <see cref="NetworkTransportOptions.AuthenticationKey"/>). Off by default, which keeps the wire identical to
    /// PhxPaxos. Bound from <c>Paxos:PeerAuthentication</c>.
    /// </summary>
    public PeerAuthenticationOptions PeerAuthentication { get; set; } = new();
}

/// <summary>
/// Peer authentication of the built-in network transport: when <see cref="Enabled"/>, frames carry an HMAC-SHA256
/// tag keyed with the cluster secret and frames without a valid tag are refused. Every node of the cluster must
/// have the same secret; a PhxPaxos C++ node cannot take part. The tag authenticates the origin (a holder of the
/// secret), not freshness. The secret never appears in <see cref="ToString"/>, logs or error messages.
/// </summary>
public sealed class PeerAuthenticationOptions
{
    /// <summary>Turns authentication on; then exactly one of <see cref="Secret"/> and <see cref="SecretFile"/> is required. Default false.</summary>
    public bool Enabled { get; set; }

    /// <summary>The cluster secret, base64, at least 16 bytes once decoded (32 random bytes recommended: <c>openssl rand -base64 32</c>).</summary>
    public string? Secret { get; set; }

    /// <summary>A file holding the cluster secret as base64 text (surrounding white space ignored), instead of <see cref="Secret"/>.</summary>
    public string? SecretFile { get; set; }

    /// <summary>Whether authentication is on and where the secret comes from; never the secret.</summary>
    public override string ToString() =>
        !Enabled ? "PeerAuthentication off"
        : !string.IsNullOrEmpty(SecretFile) ? $"PeerAuthentication on (secret from file {SecretFile})"
        : !string.IsNullOrEmpty(Secret) ? "PeerAuthentication on (secret set)"
        : "PeerAuthentication on (no secret)";

    /// <summary>
    /// Validates the options and returns the key for <see cref="NetworkTransportOptions.AuthenticationKey"/>, or null
    /// when authentication is off. Reads <see cref="SecretFile"/> when set.
    /// </summary>
    /// <exception cref="ArgumentException">Enabled without a secret, both sources set, a secret while disabled, the secret
    /// is not base64, shorter than 16 bytes, or the file cannot be read. The message never contains the secret.</exception>
    public byte[]? ResolveKey()
    {
        var hasSecret = !string.IsNullOrEmpty(Secret);
        var hasFile = !string.IsNullOrEmpty(SecretFile);
        if (!Enabled)
        {
            if (hasSecret || hasFile)
            {
                throw new ArgumentException("Paxos option PeerAuthentication has a secret but Enabled is false: set PeerAuthentication:Enabled=true to authenticate peers, or remove the secret.");
            }

            return null;
        }

        if (hasSecret == hasFile)
        {
            throw new ArgumentException(hasSecret
                ? "Paxos options PeerAuthentication:Secret and PeerAuthentication:SecretFile are both set; set one."
                : "Paxos option PeerAuthentication:Enabled is true but no secret is set: set PeerAuthentication:Secret (base64) or PeerAuthentication:SecretFile (a file holding it), the same on every node, at least 16 bytes.");
        }

        string text;
        string source;
        if (hasFile)
        {
            source = "the file PeerAuthentication:SecretFile";
            try
            {
                text = File.ReadAllText(SecretFile!);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
            {
                throw new ArgumentException($"Paxos option PeerAuthentication:SecretFile: cannot read '{SecretFile}' ({ex.GetType().Name}).", ex);
            }
        }
        else
        {
            source = "PeerAuthentication:Secret";
            text = Secret!;
        }

        byte[] key;
        try
        {
            key = Convert.FromBase64String(text.Trim());
        }
        catch (FormatException)
        {
            // Not chained: the inner exception says nothing useful and must not carry the text.
            throw new ArgumentException($"Paxos option {source} is not valid base64.");
        }

        if (key.Length < NetworkTransportOptions.MinAuthenticationKeyLength)
        {
            throw new ArgumentException($"Paxos option {source} is shorter than {NetworkTransportOptions.MinAuthenticationKeyLength} bytes once decoded; use at least 16 (better 32) random bytes, e.g. openssl rand -base64 32.");
        }

        return key;
    }
}
