using System.Security.Cryptography;

namespace Orleans.Paxos.Engine.Transport;

/// <summary>
/// Computes and checks the peer-authentication tag of a frame: the first
/// <see cref="NetworkTransportOptions.AuthenticationTagLength"/> bytes of HMAC-SHA256(cluster secret, frame).
/// Stateless apart from the key, so one instance serves every transport thread; allocates nothing per frame.
/// </summary>
/// <remarks>
/// The tag proves that a node holding the cluster secret produced the frame bytes. It says nothing about
/// freshness: a captured authenticated frame can be replayed. Paxos tolerates duplicated messages.
/// </remarks>
internal sealed class FrameAuthenticator
{
    private const int HashLength = HMACSHA256.HashSizeInBytes;
    private readonly byte[] _key;

    /// <summary>Keeps a private copy of <paramref name="key"/>.</summary>
    public FrameAuthenticator(ReadOnlySpan<byte> key) => _key = key.ToArray();

    /// <summary>The tag length in bytes.</summary>
    public static int TagLength => NetworkTransportOptions.AuthenticationTagLength;

    /// <summary>Writes the tag of <paramref name="frame"/> into the first <see cref="TagLength"/> bytes of <paramref name="tag"/>.</summary>
    public void WriteTag(ReadOnlySpan<byte> frame, Span<byte> tag)
    {
        Span<byte> hash = stackalloc byte[HashLength];
        HMACSHA256.HashData(_key, frame, hash);
        hash[..TagLength].CopyTo(tag);
    }

    /// <summary>Whether <paramref name="tag"/> is the tag of <paramref name="frame"/>; the comparison takes constant time.</summary>
    public bool Verify(ReadOnlySpan<byte> frame, ReadOnlySpan<byte> tag)
    {
        if (tag.Length != TagLength)
        {
            return false;
        }

        Span<byte> hash = stackalloc byte[HashLength];
        HMACSHA256.HashData(_key, frame, hash);
        return CryptographicOperations.FixedTimeEquals(hash[..TagLength], tag);
    }
}
