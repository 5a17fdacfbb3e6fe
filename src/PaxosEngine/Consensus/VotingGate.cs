using Orleans.Paxos.Engine.Groups;

namespace Orleans.Paxos.Engine.Consensus;

/// <summary>One member's answer to a survey: its current instance, its promise and whether it accepted a value there.</summary>
internal readonly record struct SurveyAnswer(ulong NowInstanceId, Ballot Promised, bool AcceptedInCurrent);

/// <summary>
/// Keeps a group's acceptor from voting while its durable state may be missing promises or accepts it made
/// before ("Paxos Made Live", section 5.1: a replica that lost its disk rebuilds as a non-voting member).
/// </summary>
/// <remarks>
/// <para>
/// A node that forgot a promise could accept a lower ballot and let two values be chosen; one that forgot an
/// accept could let a chosen value be overwritten. The gate lets the acceptor vote again in one of two ways,
/// each safe with one node's state lost at a time:
/// </para>
/// <list type="bullet">
/// <item><b>Own round</b>: this node's proposer got an instance chosen with its ballot <c>c</c> by a majority of
/// the OTHER members (this acceptor abstaining), and this node learned it. Any quorum this node was part of
/// before intersects that majority, so every ballot it promised is at most <c>c</c>, and every instance it
/// accepted in is at most that one, whose value it now knows. The acceptor's promise is raised to <c>c</c>
/// and made durable before it votes.</item>
/// <item><b>Survey</b>: every other member answered (after this node started) that it is at this node's
/// instance and accepted nothing there. No quorum including this node can then have chosen a value there
/// (another member would hold the accept), and every live proposer's node has promised its own ballot first,
/// so raising this acceptor's promise to the highest reported one covers every promise it may have forgotten.
/// This is how a brand-new cluster starts: every member is at instance 0 with nothing accepted.</item>
/// </list>
/// Owned by the group's loop thread.
/// </remarks>
internal sealed class VotingGate
{
    private readonly Dictionary<ulong, SurveyAnswer> _answers = [];
    private readonly Random _random;

    public VotingGate(Random random) => _random = random;

    /// <summary>The gate's state. Written on the loop thread, read from any.</summary>
    public VotingState State { get; private set; }

    /// <summary>Why the group does not vote, or null while it votes.</summary>
    public string? Reason { get; private set; }

    /// <summary>The nonce of the survey in progress (carried in AskForLearn's ProposalID); 0 when none.</summary>
    public ulong SurveyNonce { get; private set; }

    /// <summary>A no-op proposal of this gate is queued or in flight.</summary>
    public bool OwnRoundPending { get; set; }

    /// <summary>The ballot to raise the promise to once the acceptor's record of it is durable; null when none is due.</summary>
    public Ballot? PendingFloor { get; private set; }

    /// <summary>The promise floor is being made durable; the gate opens when that completes.</summary>
    public bool Opening { get; set; }

    public bool IsVoting => State == VotingState.Voting;

    /// <summary>Sets the state at start-up.</summary>
    public void Close(VotingState state, string reason)
    {
        State = state;
        Reason = reason;
        SurveyNonce = 0;
        _answers.Clear();
    }

    /// <summary>Starts a new survey round; answers to earlier rounds are ignored from now on.</summary>
    public ulong NextSurvey()
    {
        _answers.Clear();
        ulong nonce;
        do
        {
            nonce = (ulong)_random.NextInt64();
        }
        while (nonce == 0);
        SurveyNonce = nonce;
        return nonce;
    }

    /// <summary>
    /// Records a member's answer to the current survey and returns the promise floor when every other member
    /// answered that it is at <paramref name="now"/> with nothing accepted there; null otherwise.
    /// </summary>
    public Ballot? OnSurveyAnswer(ulong nonce, ulong from, SurveyAnswer answer, IReadOnlyList<ulong> members, ulong me, ulong now)
    {
        if (State == VotingState.Voting || nonce == 0 || nonce != SurveyNonce)
        {
            return null;
        }

        _answers[from] = answer;
        var floor = Ballot.Null;
        foreach (var member in members)
        {
            if (member == me)
            {
                continue;
            }

            if (!_answers.TryGetValue(member, out var a) || a.NowInstanceId != now || a.AcceptedInCurrent)
            {
                return null;
            }

            if (a.Promised > floor)
            {
                floor = a.Promised;
            }
        }

        return floor;
    }

    /// <summary>The gate will open once the acceptor's raised promise is durable.</summary>
    public void BeginOpening(Ballot floor)
    {
        PendingFloor = floor;
        Opening = true;
    }

    /// <summary>Opens the gate: the acceptor votes from now on.</summary>
    public void Open()
    {
        State = VotingState.Voting;
        Reason = null;
        SurveyNonce = 0;
        PendingFloor = null;
        Opening = false;
        OwnRoundPending = false;
        _answers.Clear();
    }
}
