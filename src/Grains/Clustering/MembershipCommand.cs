using System.Text;

namespace Orleans.Paxos.Grains.Clustering;

/// <summary>The operations of the replicated membership table, as proposed to the log.</summary>
internal enum MembershipOperation : byte
{
    ReadAll = 1,
    ReadRow = 2,
    InsertRow = 3,
    UpdateRow = 4,
    UpdateIAmAlive = 5,
    DeleteTable = 6,
    CleanupDefunct = 7,
}

/// <summary>
/// One decoded membership operation. The encoding is a version byte, the operation, the cluster id and the
/// operation's arguments, written with <see cref="BinaryWriter"/> (little-endian, length-prefixed UTF-8).
/// </summary>
internal sealed record MembershipCommand(
    MembershipOperation Operation,
    string ClusterId,
    MembershipEntry? Entry = null,
    SiloAddress? Silo = null,
    string? ETag = null,
    int TableVersion = 0,
    DateTime Time = default)
{
    private const byte FormatVersion = 1;

    public static MembershipCommand ReadAll(string clusterId) => new(MembershipOperation.ReadAll, clusterId);

    public static MembershipCommand ReadRow(string clusterId, SiloAddress silo) => new(MembershipOperation.ReadRow, clusterId, Silo: silo);

    public static MembershipCommand Insert(string clusterId, MembershipEntry entry, int tableVersion) =>
        new(MembershipOperation.InsertRow, clusterId, entry, TableVersion: tableVersion);

    public static MembershipCommand Update(string clusterId, MembershipEntry entry, string etag, int tableVersion) =>
        new(MembershipOperation.UpdateRow, clusterId, entry, ETag: etag, TableVersion: tableVersion);

    public static MembershipCommand IAmAlive(string clusterId, SiloAddress silo, DateTime time) =>
        new(MembershipOperation.UpdateIAmAlive, clusterId, Silo: silo, Time: time);

    public static MembershipCommand Delete(string clusterId) => new(MembershipOperation.DeleteTable, clusterId);

    public static MembershipCommand Cleanup(string clusterId, DateTime before) => new(MembershipOperation.CleanupDefunct, clusterId, Time: before);

    /// <summary>Whether the operation changes the table.</summary>
    public bool IsWrite => Operation is not (MembershipOperation.ReadAll or MembershipOperation.ReadRow);

    public byte[] Encode()
    {
        using var stream = new MemoryStream();
        using (var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(FormatVersion);
            w.Write((byte)Operation);
            w.Write(ClusterId);
            w.Write(Entry is not null);
            if (Entry is not null)
            {
                MembershipEntryCodec.Write(w, Entry);
            }

            w.Write(Silo is null ? string.Empty : Silo.ToParsableString());
            w.Write(ETag ?? string.Empty);
            w.Write(TableVersion);
            w.Write(Time.Ticks);

            // Two silos may send byte-identical commands; the engine would take the other's chosen value for its own.
            w.Write(Guid.NewGuid().ToByteArray());
        }

        return stream.ToArray();
    }

    /// <exception cref="InvalidDataException">The bytes are not a membership command.</exception>
    public static MembershipCommand Decode(ReadOnlySpan<byte> value)
    {
        try
        {
            using var stream = new MemoryStream(value.ToArray(), writable: false);
            using var r = new BinaryReader(stream, Encoding.UTF8);
            var format = r.ReadByte();
            if (format != FormatVersion)
            {
                throw new InvalidDataException($"Unknown membership command format {format}.");
            }

            var op = (MembershipOperation)r.ReadByte();
            var clusterId = r.ReadString();
            var entry = r.ReadBoolean() ? MembershipEntryCodec.Read(r) : null;
            var silo = r.ReadString();
            var etag = r.ReadString();
            var version = r.ReadInt32();
            var time = new DateTime(r.ReadInt64(), DateTimeKind.Utc);
            return new MembershipCommand(op, clusterId, entry, silo.Length == 0 ? null : SiloAddress.FromParsableString(silo), etag.Length == 0 ? null : etag, version, time);
        }
        catch (Exception ex) when (ex is EndOfStreamException or FormatException or ArgumentException or IndexOutOfRangeException)
        {
            throw new InvalidDataException("A membership command does not decode: " + ex.Message, ex);
        }
    }
}

/// <summary>Writes and reads a <see cref="MembershipEntry"/> field by field (stable across Orleans versions).</summary>
internal static class MembershipEntryCodec
{
    public static void Write(BinaryWriter w, MembershipEntry e)
    {
        w.Write(e.SiloAddress.ToParsableString());
        w.Write((int)e.Status);
        var suspects = e.SuspectTimes;
        w.Write(suspects?.Count ?? -1);
        if (suspects is not null)
        {
            foreach (var (silo, time) in suspects)
            {
                w.Write(silo.ToParsableString());
                w.Write(time.Ticks);
            }
        }

        w.Write(e.ProxyPort);
        w.Write(e.HostName ?? string.Empty);
        w.Write(e.SiloName ?? string.Empty);
        w.Write(e.RoleName is not null);
        w.Write(e.RoleName ?? string.Empty);
        w.Write(e.UpdateZone);
        w.Write(e.FaultZone);
        w.Write(e.StartTime.ToUniversalTime().Ticks);
        w.Write(e.IAmAliveTime.ToUniversalTime().Ticks);
    }

    public static MembershipEntry Read(BinaryReader r)
    {
        var entry = new MembershipEntry
        {
            SiloAddress = SiloAddress.FromParsableString(r.ReadString()),
            Status = (SiloStatus)r.ReadInt32(),
        };
        var count = r.ReadInt32();
        if (count >= 0)
        {
            entry.SuspectTimes = new List<Tuple<SiloAddress, DateTime>>(count);
            for (var i = 0; i < count; i++)
            {
                var silo = SiloAddress.FromParsableString(r.ReadString());
                entry.SuspectTimes.Add(Tuple.Create(silo, new DateTime(r.ReadInt64(), DateTimeKind.Utc)));
            }
        }

        entry.ProxyPort = r.ReadInt32();
        entry.HostName = r.ReadString();
        entry.SiloName = r.ReadString();
        var hasRole = r.ReadBoolean();
        var role = r.ReadString();
        entry.RoleName = hasRole ? role : null;
        entry.UpdateZone = r.ReadInt32();
        entry.FaultZone = r.ReadInt32();
        entry.StartTime = new DateTime(r.ReadInt64(), DateTimeKind.Utc);
        entry.IAmAliveTime = new DateTime(r.ReadInt64(), DateTimeKind.Utc);
        return entry;
    }

    public static MembershipEntry Copy(MembershipEntry e)
    {
        using var stream = new MemoryStream();
        using (var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true))
        {
            Write(w, e);
        }

        stream.Position = 0;
        using var r = new BinaryReader(stream, Encoding.UTF8);
        return Read(r);
    }
}
