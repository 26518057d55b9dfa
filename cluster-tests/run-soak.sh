#!/usr/bin/env bash
# A long nemesis run against one 3-broker cluster (4 with --moves) (producers, consumers and consumer-group
# members): faults from a seeded schedule for the given minutes, then the history checker.
# Prints (and keeps in target/nemesis-histories/) a summary: operations (the group's too),
# faults injected, anomalies. On anomalies the history, the brokers' data and their
# logs are kept, and the exit status is non-zero.
#
#   cluster-tests/run-soak.sh --minutes 60 --seed 7 [--quiet-stretches] [--moves] [--tls] [--log 'warn,broker::replication=debug']
#
# --quiet-stretches: producers fall silent for every other step, which strikes once the
# partitions have quiesced (stopped their Raft timers), so faults also hit quiet groups.
# --moves: 4 brokers, and replica moves (one replica to the broker holding none; decommission
# and recommission) among the faults.
# --tls: mutual TLS between brokers (through the fault proxies), TLS clients with a certificate.
set -euo pipefail
minutes=10
seed=7
log=warn
quiet=0
moves=0
tls=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --log) log="$2"; shift 2 ;;
    --quiet-stretches) quiet=1; shift ;;
    --moves) moves=1; shift ;;
    --tls) tls=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
NEMESIS_SEED="$seed" NEMESIS_MINUTES="$minutes" BROKER_LOG="$log" NEMESIS_QUIET_STRETCHES="$quiet" NEMESIS_MOVES="$moves" NEMESIS_TLS="$tls" \
  cargo test -p cluster-tests --test nemesis soak_from_the_environment -- --ignored --nocapture
echo "summary: target/nemesis-histories/summary-seed-$seed.txt"
