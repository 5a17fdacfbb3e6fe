using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Orleans.Paxos.Engine.Checkpoints;
using Orleans.Paxos.Engine.Storage;

namespace Orleans.Paxos.Engine.Tests.Checkpoints;

/// <summary>The log cleaner's passes, run without its thread.</summary>
public sealed class LogCleanerTests
{
    [Fact]
    public void A_group_whose_cleaning_keeps_failing_is_reported_once_and_again_when_it_recovers()
    {
        var storage = new RefusingStorage(groupCount: 2);
        var groups = new[] { new Group(0), new Group(1) };
        var logs = new RecordingLogger();
        var time = new FakeTimeProvider();
        using var cleaner = new LogCleaner(groups, storage, new CheckpointControl { HoldLogCount = CheckpointControl.MinHoldLogCount }, time, "cleaner-test", logs);

        // A pass may delete as many instances as the time since the last one allows (a second's worth at most).
        void Pass()
        {
            time.Advance(TimeSpan.FromSeconds(1));
            cleaner.RunPass();
        }

        // Three passes that fail for both groups: one warning each, the rest at Debug.
        storage.Refusing = true;
        for (var pass = 0; pass < 3; pass++)
        {
            Pass();
        }

        Assert.Equal(6, storage.Refusals);
        Assert.Equal(2, logs.Count(LogLevel.Warning));
        Assert.Equal(4, logs.Count(LogLevel.Debug));

        // Cleaning works again: one line per group says so, and the log start moved.
        storage.Refusing = false;
        Pass();
        Assert.Equal(2, logs.Count(LogLevel.Information));
        Assert.All(groups, g => Assert.True(storage.MinChosen[g.Index] > 0, $"group {g.Index} was not cleaned"));
        Assert.All(groups, g => Assert.Equal(storage.MinChosen[g.Index], g.CleanedTo));

        // A new failure is a new warning.
        storage.Refusing = true;
        groups[0].Now += 1000;
        groups[0].Checkpoint += 1000;
        Pass();
        Assert.Equal(3, logs.Count(LogLevel.Warning));
    }

    private sealed class Group(int index) : ICleanableGroup
    {
        public int Index { get; } = index;

        public ulong Now { get; set; } = 2000;

        public ulong Checkpoint { get; set; } = 1500;

        public ulong CleanedTo { get; private set; }

        public ulong NowInstanceId => Now;

        public ulong CheckpointInstanceIdForCleaner => Checkpoint;

        public bool MayCleanLog => true;

        public object LogMaintenanceGate { get; } = new();

        public void OnLogCleaned(ulong minChosen) => CleanedTo = minChosen;
    }

    /// <summary>Keeps only the min-chosen marks; refuses to move them, as a stopped storage does, while <see cref="Refusing"/>.</summary>
    private sealed class RefusingStorage(int groupCount) : ILogStorage
    {
        public bool Refusing { get; set; }

        public int Refusals { get; private set; }

        public ulong[] MinChosen { get; } = new ulong[groupCount];

        public int GroupCount => groupCount;

        public string GetGroupDirectory(int groupIndex) => $"/cleaner-test/g{groupIndex}";

        public Task PutAsync(int groupIndex, ulong instanceId, ReadOnlyMemory<byte> acceptorStateData, bool sync) => throw new NotSupportedException();

        public byte[]? Get(int groupIndex, ulong instanceId) => null;

        public ulong? GetMaxInstanceId(int groupIndex) => null;

        public void DeleteBefore(int groupIndex, ulong instanceId)
        {
        }

        public ulong GetMinChosenInstanceId(int groupIndex) => MinChosen[groupIndex];

        public void SetMinChosenInstanceId(int groupIndex, ulong instanceId)
        {
            if (Refusing)
            {
                Refusals++;
                throw new LogStorageException("The log storage is stopped after an earlier write failure and accepts no more writes.");
            }

            MinChosen[groupIndex] = instanceId;
        }

        public byte[]? GetSystemVariables(int groupIndex) => null;

        public void SetSystemVariables(int groupIndex, ReadOnlySpan<byte> value) => throw new NotSupportedException();

        public byte[]? GetMasterVariables(int groupIndex) => null;

        public void SetMasterVariables(int groupIndex, ReadOnlySpan<byte> value) => throw new NotSupportedException();

        public void ClearAllLog(int groupIndex) => throw new NotSupportedException();

        public void Dispose()
        {
        }
    }

    private sealed class RecordingLogger : ILogger
    {
        private readonly List<LogLevel> _levels = [];

        public int Count(LogLevel level)
        {
            lock (_levels)
            {
                return _levels.Count(l => l == level);
            }
        }

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (_levels)
            {
                _levels.Add(logLevel);
            }
        }
    }
}
