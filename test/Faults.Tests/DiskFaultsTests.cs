using Orleans.Paxos.Faults.Cluster;

namespace Orleans.Paxos.Faults.Tests;

public sealed class DiskFaultsTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "paxos-diskfaults-" + Guid.NewGuid().ToString("N"));

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public void Lost_unsynced_writes_put_data_files_back_to_their_last_fsync()
    {
        var data = Path.Combine(_root, "node-0");
        var vfile = Path.Combine(data, "g0", "vfile");
        Directory.CreateDirectory(vfile);
        var synced = DataFile(Path.Combine(vfile, "0.f"), written: 300);
        var fresh = DataFile(Path.Combine(vfile, "1.f"), written: 100);
        var untracked = DataFile(Path.Combine(data, "g1", "vfile", "0.f"), written: 50);
        File.WriteAllBytes(Path.Combine(vfile, "meta"), [1, 2, 3, 4]);
        var journal = Path.Combine(_root, "journal.txt");
        File.WriteAllText(journal, $"new {synced}\nsync {synced} 100\nsync {synced} 200\nsync {Path.Combine(vfile, "meta")} 8\nnew {fresh}\nsync {synced} 1");

        var loss = DiskFaults.LoseUnsyncedWrites(data, journal);

        Assert.Equal(new UnsyncedLoss(Files: 2, Bytes: 100 + 100, Untracked: 1), loss);
        var a = File.ReadAllBytes(synced);
        Assert.Equal(1024, a.Length);
        Assert.All(a[..200], b => Assert.Equal(7, b));
        Assert.All(a[200..], b => Assert.Equal(0, b));
        Assert.All(File.ReadAllBytes(fresh), b => Assert.Equal(0, b));
        Assert.Equal(50, File.ReadAllBytes(untracked).Count(b => b == 7));
        Assert.Equal([1, 2, 3, 4], File.ReadAllBytes(Path.Combine(vfile, "meta")));
    }

    [Fact]
    public void A_new_file_line_forgets_what_was_synced_under_the_same_name()
    {
        var vfile = Path.Combine(_root, "node-0", "g0", "vfile");
        Directory.CreateDirectory(vfile);
        var path = DataFile(Path.Combine(vfile, "0.f"), written: 64);
        var journal = Path.Combine(_root, "journal.txt");
        File.WriteAllText(journal, $"new {path}\nsync {path} 1000\nnew {path}\nsync {path} 16\n");

        Assert.Equal(16, DiskFaults.ReadJournal(journal)[path]);
        Assert.Equal(48, DiskFaults.LoseUnsyncedWrites(Path.Combine(_root, "node-0"), journal).Bytes);
    }

    [Fact]
    public void The_journal_is_read_as_it_grows_and_anew_after_a_wipe()
    {
        var data = Path.Combine(_root, "node-0");
        var path = DataFile(Path.Combine(data, "g0", "vfile", "0.f"), written: 64);
        var journal = Path.Combine(_root, "journal.txt");
        File.WriteAllText(journal, $"new {path}\nsync {path} 16\nsync {path} 3");
        Assert.Equal(16, DiskFaults.ReadJournal(journal)[path]);

        // The cut last line is read once it is whole.
        File.AppendAllText(journal, $"2\nsync {path} 40\n");
        Assert.Equal(40, DiskFaults.ReadJournal(journal)[path]);
        Assert.Equal(24, DiskFaults.CountUnsyncedWrites(data, journal).Bytes);

        // A wiped silo starts a new journal, which may grow past where the old one was read.
        DiskFaults.Wipe(data, journal);
        path = DataFile(Path.Combine(data, "g0", "vfile", "0.f"), written: 64);
        File.WriteAllText(journal, $"new {path}\nsync {path} 8\n" + new string('#', 200) + "\n");
        Assert.Equal(8, DiskFaults.ReadJournal(journal)[path]);
        Assert.Equal(56, DiskFaults.LoseUnsyncedWrites(data, journal).Bytes);
        Assert.Equal(0, DiskFaults.CountUnsyncedWrites(data, journal).Bytes);
    }

    [Fact]
    public void Wipe_and_index_deletion_remove_exactly_their_files()
    {
        var data = Path.Combine(_root, "node-0");
        foreach (var g in new[] { "g0", "g1" })
        {
            Directory.CreateDirectory(Path.Combine(data, g, "vfile"));
            File.WriteAllText(Path.Combine(data, g, "index.db"), "x");
            File.WriteAllText(Path.Combine(data, g, "index.db-wal"), "x");
            File.WriteAllText(Path.Combine(data, g, "vfile", "0.f"), "x");
        }

        Assert.Equal(4, DiskFaults.DeleteIndexes(data));
        Assert.Equal(2, Directory.EnumerateFiles(data, "*", SearchOption.AllDirectories).Count());
        var journal = Path.Combine(_root, "journal.txt");
        File.WriteAllText(journal, string.Empty);
        Assert.Equal(2, DiskFaults.Wipe(data, journal));
        Assert.False(Directory.Exists(data));
        Assert.False(File.Exists(journal));
    }

    private static string DataFile(string path, int written)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var bytes = new byte[1024];
        bytes.AsSpan(0, written).Fill(7);
        File.WriteAllBytes(path, bytes);
        return Path.GetFullPath(path);
    }
}
