#!/usr/bin/env bash
# The fault suite: each fault under a steady write load (500 writes/s), on
# a PostgreSQL, Redis and Apache Kafka of its own (scripts/kafka.sh), on
# ports from 25400 to 25411 (FAULTS_PORT_BASE), in a temporary directory.
# Kafka is a single node (topics with replication factor 1) for the first
# five faults, then a three-node cluster (every node broker and controller;
# topics with replication factor 3, min.insync.replicas 2) for the others;
# one runs at a time. The faults, in the order they run:
#   pg-restart                 PostgreSQL restarted
#   redis-restart              Redis stopped for 10 s
#   broker-outage              the single broker killed (-9) for 60 s
#   kill9                      the service killed (-9), restarted
#   sigterm                    the service sent SIGTERM, restarted
#   cluster-broker-restart     a broker, not the active controller, killed
#                              (-9) and restarted after 10 s
#   cluster-controller-kill    the active controller killed (-9) and
#                              restarted after 10 s
#   cluster-rolling-restart    the three brokers restarted one at a time
#                              (SIGTERM; the next once every replica is in
#                              sync again, and 5 s later)
#   rolling-restart-two        two instances, each SIGTERM'd and restarted
#                              in turn, the load on the other meanwhile
#   one-of-two-killed          two instances, one killed (-9) for good: the
#                              other takes its partitions (static membership)
#   one-of-two-killed-dynamic  the same without KAFKA_GROUP_INSTANCE_ID
# Prints one table:
#   fault | requests | 5xx | acknowledged | lost | uncounted | counted twice | recovery | note
# and exits 1 if a write was lost, left uncounted or counted twice, or if a
# Redis, broker or cluster fault gave a 5xx or its activity was not exact
# within 30 s of the fault's end.
#
#   scripts/faults.sh                          every fault (about 15 minutes
#                                              on 2 cores)
#   scripts/faults.sh --faults kill9,sigterm   some of them
#   FAULTS_BINARY=path scripts/faults.sh       a binary built elsewhere
#   FAULTS_LOG_LEVEL=info scripts/faults.sh    the instances' LOG_LEVEL (warn,
#                                              and their partition assignments);
#                                              their logs and the brokers' stay
#                                              in the work directory
#   FAULTS_STATIC_MEMBERSHIP=0 scripts/faults.sh   no instance joins the consumer
#                                              group with KAFKA_GROUP_INSTANCE_ID
#   scripts/faults.sh --help                   the other options
#
# Needs PostgreSQL's server binaries (initdb, pg_ctl; run as the postgres
# user when started as root), redis-server and redis-cli, psql, python3,
# Java 17 or newer, and Apache Kafka's jars (scripts/kafka.sh install fetches
# them with Maven the first time; this script does it before the run).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ -n "${FAULTS_BINARY:-}" ]; then
  binary=$FAULTS_BINARY
else
  echo "faults: building the release binary" >&2
  cargo build --release --locked --quiet
  binary=${CARGO_TARGET_DIR:-target}/release/highload
fi
bash scripts/kafka.sh install >/dev/null
exec python3 scripts/faults/run.py "$binary" --port-base "${FAULTS_PORT_BASE:-25400}" "$@"
