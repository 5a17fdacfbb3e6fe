using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Orleans.Paxos.Engine.Protocol;

/// <summary>
/// A PhxPaxos node id: an IPv4 address and a port packed into 64 bits as
/// <c>((ulong)inet_addr(ip) &lt;&lt; 32) | port</c>, where <c>inet_addr</c> is the address in network
/// byte order read as a little-endian integer. Id 0 is the null node.
/// </summary>
/// <param name="Value">The packed 64-bit id.</param>
public readonly record struct NodeId(ulong Value) : IComparable<NodeId>
{
    /// <summary>The null node (id 0, address 0.0.0.0, port 0).</summary>
    public static readonly NodeId Null = new(0);

    /// <summary>Whether this is the null node.</summary>
    public bool IsNull => Value == 0;

    /// <summary>The port (low 32 bits).</summary>
    public int Port => (int)(Value & 0xFFFFFFFFu);

    /// <summary>The IPv4 address (high 32 bits).</summary>
    public IPAddress Address
    {
        get
        {
            Span<byte> bytes = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(bytes, (uint)(Value >> 32));
            return new IPAddress(bytes);
        }
    }

    /// <summary>The node's endpoint (address and port).</summary>
    public IPEndPoint EndPoint => new(Address, Port);

    /// <summary>Packs an IPv4 address and a port.</summary>
    /// <exception cref="ArgumentException">The address is not IPv4.</exception>
    public static NodeId From(IPAddress address, int port)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        if (address.AddressFamily != AddressFamily.InterNetwork)
        {
            throw new ArgumentException($"Node ids hold IPv4 addresses only; '{address}' is not one.", nameof(address));
        }

        ArgumentOutOfRangeException.ThrowIfNegative(port);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(port, 65535);
        Span<byte> bytes = stackalloc byte[4];
        address.TryWriteBytes(bytes, out _);
        var ip32 = BinaryPrimitives.ReadUInt32LittleEndian(bytes);
        return new NodeId(((ulong)ip32 << 32) | (uint)port);
    }

    /// <summary>Packs an endpoint.</summary>
    public static NodeId From(IPEndPoint endPoint)
    {
        ArgumentNullException.ThrowIfNull(endPoint);
        return From(endPoint.Address, endPoint.Port);
    }

    /// <summary>Parses <c>"a.b.c.d:port"</c>.</summary>
    /// <exception cref="FormatException">The text is not an IPv4 address and port.</exception>
    public static NodeId Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (!IPEndPoint.TryParse(text.Trim(), out var ep) || ep.AddressFamily != AddressFamily.InterNetwork)
        {
            throw new FormatException($"'{text}' is not an IPv4 address and port such as 127.0.0.1:11111.");
        }

        return From(ep);
    }

    /// <inheritdoc />
    public int CompareTo(NodeId other) => Value.CompareTo(other.Value);

    /// <summary>The id as <c>ip:port</c>.</summary>
    public override string ToString() => IsNull ? "null" : string.Create(CultureInfo.InvariantCulture, $"{Address}:{Port}");

    /// <summary>Converts to the packed value.</summary>
    public static implicit operator ulong(NodeId id) => id.Value;
}
