#!/usr/bin/env bash
# The fault suite: each fault under a steady write load (500 writes/s), on
# a PostgreSQL, Redis and Kafka-compatible broker (tansu) of its own, on
# ports from 25400 (FAULTS_PORT_BASE). Prints one table:
#   fault | requests | 5xx | acknowledged | lost | uncounted | counted twice | recovery
# and exits 1 if a write was lost or counted twice, or if a Redis or broker
# fault gave a 5xx.
#
#   scripts/faults.sh                          every fault (about 5 minutes)
#   scripts/faults.sh --faults kill9,sigterm   some of them
#   FAULTS_BINARY=path scripts/faults.sh       a binary built elsewhere
#   FAULTS_LOG_LEVEL=info scripts/faults.sh    the instances' LOG_LEVEL (warn);
#                                              their logs stay in the work directory
#   FAULTS_STATIC_MEMBERSHIP=0 scripts/faults.sh   instances join the consumer group
#                                              without KAFKA_GROUP_INSTANCE_ID
#
# Needs PostgreSQL's server binaries (initdb, pg_ctl; run as the postgres
# user when started as root), redis-server and redis-cli, psql, tansu
# (scripts/dev-services.sh installs it), python3.
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
exec python3 scripts/faults/run.py "$binary" --port-base "${FAULTS_PORT_BASE:-25400}" "$@"
