using Orleans.Paxos.Engine.Consensus;
using Orleans.Paxos.Engine.StateMachines.KeyValue;

namespace Orleans.Paxos.Grains;

/// <summary>Maps engine results to grain API results.</summary>
internal static class ResultMapping
{
    public static ProposalStatus ToStatus(ProposeStatus status) => (ProposalStatus)(int)status;

    public static ProposalResult ToProposalResult(int group, ProposeResult result, string node)
    {
        var output = result.Output;
        return new ProposalResult(
            ToStatus(result.Status),
            group,
            result.InstanceId,
            result.BatchIndex,
            output as byte[],
            output switch
            {
                null => null,
                string s => s,
                byte[] => null,
                KeyValueResult kv => $"{kv.Status} version={kv.Version}",
                _ => output.ToString(),
            },
            node);
    }

    public static KvResult ToKvResult(string key, int group, ProposeResult result, string node)
    {
        if (result.Status == ProposeStatus.Ok && result.Output is KeyValueResult { Status: KeyValueStatus.Retry })
        {
            // Chosen but refused by the store (another write of the key in the same batch): nothing changed.
            return new KvResult(KvStatus.ProposalFailed, key, group, null, 0, result.InstanceId, ProposalStatus.Conflict, node);
        }

        if (result.Status != ProposeStatus.Ok || result.Output is not KeyValueResult kv)
        {
            return new KvResult(KvStatus.ProposalFailed, key, group, null, 0, result.InstanceId, ToStatus(result.Status), node);
        }

        return ToKvResult(key, group, kv, result.InstanceId, node);
    }

    public static KvResult ToKvResult(string key, int group, KeyValueResult kv, ulong instanceId, string node) =>
        new(
            kv.Status switch
            {
                KeyValueStatus.Ok => KvStatus.Ok,
                KeyValueStatus.NotFound => KvStatus.NotFound,
                KeyValueStatus.VersionConflict => KvStatus.VersionConflict,
                _ => KvStatus.BadRequest,
            },
            key,
            group,
            kv.Value,
            kv.Version,
            instanceId,
            ProposalStatus.Ok,
            node);
}
