using Orleans.Paxos.Engine.Protocol;

namespace Orleans.Paxos.Engine.Tests.Support;

/// <summary>Reads the Paxos message of a frame seen on an <see cref="InMemoryNetwork"/>.</summary>
public static class PaxosFrames
{
    /// <summary>Decodes a frame of group <paramref name="group"/> that carries a Paxos message; false for anything else.</summary>
    public static bool TryRead(byte[] frame, int group, out PaxosMsg message)
    {
        if (FrameCodec.TryDecode(frame, FrameCodec.DefaultMaxFrameLength, out var decoded) == FrameError.None
            && decoded!.GroupIndex == group
            && decoded.Paxos is { } paxos)
        {
            message = paxos;
            return true;
        }

        message = null!;
        return false;
    }

    /// <summary>Whether the frame carries a Paxos message of <paramref name="type"/> for <paramref name="group"/>.</summary>
    public static bool Is(byte[] frame, int group, PaxosMsgType type, out PaxosMsg message) =>
        TryRead(frame, group, out message) && message.MsgType == (int)type;
}
