using Orleans.Paxos.Silo;

// With no Paxos:MyNode setting: a three-node cluster in this process (development and demos).
// With it: one silo of a multi-machine cluster, configured from appsettings.json, environment
// variables (Paxos__MyNode=...) and the command line (--Paxos:MyNode=...).
return await SiloProgram.RunAsync(args);
