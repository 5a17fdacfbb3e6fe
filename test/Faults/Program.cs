using Orleans.Paxos.Faults;

return await FaultProgram.RunAsync(args);
