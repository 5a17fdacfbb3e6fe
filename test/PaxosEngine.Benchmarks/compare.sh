#!/usr/bin/env bash
# PhxPaxos against this engine in one run: PhxPaxos's phxbench and the consensus benchmark, 3 node processes each,
# rows interleaved (PhxPaxos, ours, ...), every row repeated (--repeat 3) and medians printed as Markdown tables,
# after the configuration and the disk's own fsync ceiling.
# Usage: test/PaxosEngine.Benchmarks/compare.sh [--quick] [options]   (--list: the plan only; --help: every option)
# phxbench is $PAXOS_PHXBENCH, else ../shared/peer/phxbench beside the repository.
# The full matrix is long (723 runs); run it on a quiet machine and compare figures within one run only.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$(dotnet build -c Release -nologo -v quiet test/PaxosEngine.Benchmarks 2>&1) || { echo "$build" >&2; exit 1; }
exec dotnet test/PaxosEngine.Benchmarks/bin/Release/net10.0/Orleans.Paxos.Engine.Benchmarks.dll compare "$@"
