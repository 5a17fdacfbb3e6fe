#!/usr/bin/env bash
# Every row of the PhxPaxos comparison table, in one run, with the disk's own ceiling measured first.
# Usage: test/PaxosEngine.Benchmarks/phxpaxos-table.sh [extra consensus options, e.g. --procs 3 or --seconds 5]
# Takes about four minutes. Compare figures within one run: this machine's disk changes from hour to hour.
set -euo pipefail
cd "$(dirname "$0")/../.."
dotnet build -c Release test/PaxosEngine.Benchmarks >/dev/null
bench() { dotnet test/PaxosEngine.Benchmarks/bin/Release/net10.0/Orleans.Paxos.Engine.Benchmarks.dll "$@"; }

bench disk --threads 1,8,24 --value-size 100,102400
echo
bench consensus --groups 1,4,16 --proposers 8,32 --batch off,auto --disk "$@"
echo
bench consensus --groups 1,4 --proposers 32 --batch on,idle --disk "$@" | tail -n 4
bench consensus --groups 16 --proposers 32 --batch on,idle --batch-count 2 --disk "$@" | tail -n 2
bench consensus --groups 4 --proposers 8 --value-size 102400 --batch off,auto --disk "$@" | tail -n 2
echo
bench consensus --groups 1,4,16 --proposers 8 --batch auto --sync off "$@" | tail -n 3
