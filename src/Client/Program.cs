using Orleans.Paxos.Client;

// Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 cluster unreachable.
return await ClientCommands.RunAsync(args);
