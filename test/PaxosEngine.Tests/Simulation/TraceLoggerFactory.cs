using Microsoft.Extensions.Logging;

namespace Orleans.Paxos.Engine.Tests.Simulation;

/// <summary>Writes the nodes' logs into a simulation's trace, with the node and the fake time, when a seed is replayed.</summary>
internal sealed class TraceLoggerFactory(Action<string> write, string node, LogLevel minimum) : ILoggerFactory
{
    public ILogger CreateLogger(string categoryName) => new Logger(write, node, minimum);

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    private sealed class Logger(Action<string> write, string node, LogLevel minimum) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= minimum;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                write($"[{node}] {logLevel}: {formatter(state, exception)}{(exception is null ? string.Empty : " " + exception.Message)}");
            }
        }
    }
}
