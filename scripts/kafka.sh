#!/usr/bin/env bash
# Apache Kafka for development, tests and benchmarks: the version pinned in
# scripts/kafka/pom.xml, its jars fetched once from Maven Central (Maven) into
# a cache directory, run by the JVM on this machine (Java 17 or newer).
#
#   scripts/kafka.sh install
#       fetch the jars if missing; prints the directory that holds them
#   scripts/kafka.sh version
#       the pinned version
#   scripts/kafka.sh cluster-id
#       a new cluster id, for the nodes of one cluster
#   scripts/kafka.sh node DIR [options]
#       runs one KRaft node (broker and controller in one process) in the
#       foreground, its configuration and data in DIR; formats DIR's storage
#       the first time. Options:
#         --id N                 node id (1)
#         --port P               client listener on 127.0.0.1 (9092)
#         --controller-port P    controller listener on 127.0.0.1 (port+1)
#         --voters LIST          the controller quorum, id@host:port,...
#                                (this node alone)
#         --cluster-id ID        the cluster's id, the same on every node
#                                (a new one)
#         --jmx-port P           JMX on 127.0.0.1:P, without authentication,
#                                for the broker's metrics (none)
#       With three voters or more, internal topics get replication factor 3
#       and every topic min.insync.replicas=2.
#   scripts/kafka.sh tool CLASS ARGS...
#       runs one of Kafka's command-line tools, e.g.
#       scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand \
#         --bootstrap-server 127.0.0.1:9092 --list
#
# Environment: HIGHLOAD_CACHE_DIR (~/.cache/highload) holds the jars;
# KAFKA_HEAP_OPTS (-Xms256m -Xmx512m) sizes each node's heap.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
POM=$ROOT/scripts/kafka/pom.xml
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")
CACHE=${HIGHLOAD_CACHE_DIR:-$HOME/.cache/highload}
LIBS=$CACHE/kafka-$VERSION/libs

die() { echo "kafka.sh: $*" >&2; exit 1; }

install() {
  [ -f "$LIBS/.complete" ] && return
  command -v java >/dev/null || die "java is missing (apt-get install openjdk-17-jre-headless)"
  command -v mvn >/dev/null || die "mvn is missing (apt-get install maven)"
  echo "kafka.sh: fetching Apache Kafka $VERSION from Maven Central into $LIBS" >&2
  rm -rf "$LIBS"
  mvn -q -B -f "$POM" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS" >&2 \
    || die "Maven could not fetch Apache Kafka $VERSION"
  touch "$LIBS/.complete"
}

java_cmd() { # java_cmd [JVM options...] MAIN ARGS...: the broker's JVM
  # The log4j2 configuration ships beside this script.
  exec java -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties" \
    -cp "$LIBS/*" "$@"
}

new_cluster_id() { # a random UUID in Kafka's form: 22 characters of base64url
  head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'
}

node() {
  local dir=${1:-}
  [ -n "$dir" ] || die "usage: kafka.sh node DIR [--id N] [--port P] [--controller-port P] [--voters LIST] [--cluster-id ID] [--jmx-port P]"
  shift
  local id=1 port=9092 controller_port='' voters='' cluster_id='' jmx=()
  while [ $# -gt 0 ]; do
    case $1 in
      --id) id=$2 ;;
      --port) port=$2 ;;
      --controller-port) controller_port=$2 ;;
      --voters) voters=$2 ;;
      --cluster-id) cluster_id=$2 ;;
      --jmx-port)
        jmx=(-Dcom.sun.management.jmxremote -Dcom.sun.management.jmxremote.authenticate=false
          -Dcom.sun.management.jmxremote.ssl=false -Dcom.sun.management.jmxremote.host=127.0.0.1
          -Dcom.sun.management.jmxremote.port="$2" -Dcom.sun.management.jmxremote.rmi.port="$2"
          -Djava.rmi.server.hostname=127.0.0.1) ;;
      *) die "unknown option $1" ;;
    esac
    shift 2
  done
  controller_port=${controller_port:-$((port + 1))}
  voters=${voters:-$id@127.0.0.1:$controller_port}
  local nodes replication min_isr
  nodes=$(tr ',' '\n' <<<"$voters" | grep -c .)
  if [ "$nodes" -ge 3 ]; then replication=3 min_isr=2; else replication=1 min_isr=1; fi
  # A node alone is its own controller: when it restarts after a crash, it
  # can register again only once its old registration has expired (9 s by
  # default). A cluster keeps Kafka's defaults, which its faults measure.
  local session=''
  [ "$nodes" -ge 3 ] || session=$'broker.session.timeout.ms=2000\nbroker.heartbeat.interval.ms=500'
  install
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
default.replication.factor=$replication
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$replication
transaction.state.log.replication.factor=$replication
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replication
share.coordinator.state.topic.min.isr=$min_isr
# Topics are created by their owner, with the replication they need, as on
# a managed Kafka: none appears because a client asked for its metadata.
auto.create.topics.enable=false
# A development broker: a group's first member starts at once, and the
# offsets topic is created with few partitions (50 by default) so that the
# first group to join does not wait for fifty of them.
group.initial.rebalance.delay.ms=0
offsets.topic.num.partitions=5
$session
PROPS
  if [ ! -f "$dir/data/meta.properties" ]; then
    cluster_id=${cluster_id:-$(new_cluster_id)}
    # --cluster-id=ID: an id may begin with "-", which would read as an option.
    (java_cmd kafka.tools.StorageTool format --ignore-formatted \
      --cluster-id="$cluster_id" -c "$dir/server.properties") >/dev/null \
      || die "formatting $dir/data failed"
  fi
  # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is a list of options
  java_cmd ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError "${jmx[@]}" kafka.Kafka "$dir/server.properties"
}

case "${1:-}" in
  install) install; echo "$LIBS" ;;
  version) echo "$VERSION" ;;
  cluster-id) new_cluster_id; echo ;;
  node) shift; node "$@" ;;
  tool) shift; install; java_cmd -Dhighload.kafka.log.level=warn -Dhighload.kafka.log.target=SYSTEM_ERR "$@" ;;
  *) die "usage: kafka.sh install | version | cluster-id | node DIR [options] | tool CLASS ARGS... (see the top of $0)" ;;
esac
