using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Engine.Tests.Storage;

/// <summary>Random sequences of storage operations against an in-memory model of the log.</summary>
public sealed class FileLogStoragePropertyTests
{
    public enum OpKind
    {
        Put,
        PutMany,
        Get,
        DeleteBefore,
        Reopen,
        Clear,
    }

    /// <summary>
    /// One operation. Instance ids are relative to the group's cursor (the highest id put), because a
    /// group's ids never decrease: <see cref="Step"/> 0 rewrites the cursor instance (last record wins).
    /// </summary>
    public readonly record struct Op(OpKind Kind, int Group, int Step, int Size, bool Sync)
    {
        public override string ToString() => $"{Kind}(g{Group}, step {Step}, size {Size}, {(Sync ? "sync" : "nosync")})";
    }

    public static class Arbitraries
    {
        public static Arbitrary<Op> Op() =>
            (from kind in Gen.Frequency(
                    (10, Gen.Constant(OpKind.Put)),
                    (4, Gen.Constant(OpKind.PutMany)),
                    (6, Gen.Constant(OpKind.Get)),
                    (2, Gen.Constant(OpKind.DeleteBefore)),
                    (2, Gen.Constant(OpKind.Reopen)),
                    (1, Gen.Constant(OpKind.Clear)))
             from g in Gen.Choose(0, 1)
             from step in Gen.Choose(0, 4)
             from size in Gen.Frequency((3, Gen.Choose(0, 64)), (1, Gen.Choose(500, 1500)))
             from sync in Gen.Elements(true, false)
             select new Op(kind, g, step, size, sync)).ToArbitrary();
    }

    // Seeded for a reproducible run; FsCheck prints the failing sequence (shrunk) and its seed.
    [Property(MaxTest = 40, EndSize = 60, Replay = "(20261128,13)", Arbitrary = [typeof(Arbitraries)])]
    public bool StorageMatchesModel(Op[] ops)
    {
        using var root = new TempDirectory();
        var options = new LogStorageOptions { RootPath = root.Path, GroupCount = 2, DataFileSize = 4096 };
        var model = new[] { new SortedDictionary<ulong, byte[]>(), new SortedDictionary<ulong, byte[]>() };
        var cursor = new ulong[2];
        var storage = new FileLogStorage(options);
        try
        {
            for (var i = 0; i < ops.Length; i++)
            {
                var op = ops[i];
                var g = op.Group;
                switch (op.Kind)
                {
                    case OpKind.Put:
                        cursor[g] += (ulong)op.Step % 3;
                        Put(storage, model[g], g, cursor[g], op.Size, i, op.Sync).GetAwaiter().GetResult();
                        break;
                    case OpKind.PutMany:
                        var puts = new List<Task>();
                        for (var k = 0; k <= op.Step; k++)
                        {
                            cursor[g] += (ulong)k % 2;
                            puts.Add(Put(storage, model[g], g, cursor[g], op.Size + k, (i * 8) + k, op.Sync || k == op.Step));
                        }

                        Task.WhenAll(puts).GetAwaiter().GetResult();
                        break;
                    case OpKind.Get:
                        var id = cursor[g] >= (ulong)op.Step ? cursor[g] - (ulong)op.Step : 0;
                        Assert.Equal(model[g].GetValueOrDefault(id), storage.Get(g, id));
                        break;
                    case OpKind.DeleteBefore:
                        var bound = cursor[g] + 1 - (ulong)Math.Min((ulong)op.Step, cursor[g]);
                        storage.DeleteBefore(g, bound);
                        foreach (var key in model[g].Keys.Where(k => k < bound).ToList())
                        {
                            model[g].Remove(key);
                        }

                        break;
                    case OpKind.Reopen:
                        storage.Dispose();
                        storage = new FileLogStorage(options);
                        break;
                    case OpKind.Clear:
                        storage.ClearAllLog(g);
                        model[g].Clear();
                        break;
                }

                Assert.Equal(model[g].Count == 0 ? null : model[g].Keys.Max(), storage.GetMaxInstanceId(g));
            }

            storage.Dispose();
            storage = new FileLogStorage(options);
            for (var g = 0; g < 2; g++)
            {
                for (ulong id = 0; id <= cursor[g]; id++)
                {
                    Assert.Equal(model[g].GetValueOrDefault(id), storage.Get(g, id));
                }
            }

            return true;
        }
        finally
        {
            storage.Dispose();
        }
    }

    private static Task Put(FileLogStorage storage, SortedDictionary<ulong, byte[]> model, int group, ulong id, int size, int seed, bool sync)
    {
        var body = StorageTestData.Sized(id, size, seed);
        model[id] = body;
        return storage.PutAsync(group, id, body, sync);
    }
}
