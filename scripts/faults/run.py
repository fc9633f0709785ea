#!/usr/bin/env python3
"""The fault suite: each fault under a steady write load, then what was lost.

Started by scripts/faults.sh, which builds the release binary. Everything
runs on its own ports, in a temporary directory: a PostgreSQL cluster
(initdb), a Redis, Apache Kafka (scripts/kafka.sh), and one or two
instances of the service. Nothing of the machine's own services is touched.

Two Kafkas, one at a time: a single node (topics with replication factor 1)
for the faults of PostgreSQL, Redis, the broker and one instance; a cluster
of three nodes (each broker and controller; topics with replication factor
3, min.insync.replicas 2) for the cluster-* faults and those of two
instances. The faults run in the order of FAULTS, so each Kafka starts once.

For each fault the load generator POSTs events at a fixed rate (500/s by
default) for users created beforehand, across the running instances, and
records every answer. Afterwards it reads the database and the activity
endpoint:

  requests       POSTs sent
  5xx            answers with a 5xx status
  acknowledged   answers 201 (with the event's id)
  lost           acknowledged events missing from the database
  uncounted      stored events the workers had not counted by the drain
                 deadline (late, or lost in the pipeline)
  counted twice  events the workers counted more than once
  recovery       the fault's own measure (see the faults below); for a
                 broker or cluster fault, seconds from the fault's end (the
                 broker answering again) until the activity is exact, which
                 must be within RECOVERY_LIMIT

The run fails (exit status 1) if a row lost, left uncounted or counted
twice a write, or if a Redis, broker or cluster fault gave a 5xx or
recovered later than RECOVERY_LIMIT.
"""
import argparse
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

EVENT_TYPE = "fault.write"
ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = ROOT / "scripts" / "kafka.sh"
# A broker or cluster fault's activity must be exact this long after the
# fault ends.
RECOVERY_LIMIT = 30.0
PG_BIN = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]) if Path("/usr/lib/postgresql").exists() else None


def log(msg):
    print(f"faults: {msg}", file=sys.stderr, flush=True)


def wait_until(check, timeout, step=0.1):
    """Polls check() until it returns a true value; returns it, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception:  # noqa: BLE001 - a service that is down raises
            pass
        time.sleep(step)
    return None


def request(port, method, path, body=None, timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data and data[:1] in b"{[" else data)
    finally:
        conn.close()


# --- Apache Kafka -------------------------------------------------------------

def _recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


class _Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def _take(self, fmt):
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def i8(self):
        return self._take(">b")

    def i16(self):
        return self._take(">h")

    def i32(self):
        return self._take(">i")

    def string(self):
        n = self.i16()
        if n < 0:
            return None
        value = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return value

    def i32s(self):
        return [self.i32() for _ in range(self.i32())]


def kafka_metadata(port, timeout=2.0):
    """Asks the broker on port for the metadata of every topic (Metadata v4,
    Kafka's own protocol: no JVM to start for a tool, so it can be polled).
    Returns (the ids of the brokers it knows alive, i.e. registered and not
    fenced; {topic: [(partition, leader, replicas, in-sync replicas)]})."""
    client = b"faults"
    # header v1: api key 3 (Metadata), version 4, correlation id, client id;
    # body v4: topics null (all of them), allow_auto_topic_creation false
    req = struct.pack(">hhih", 3, 4, 1, len(client)) + client + struct.pack(">ib", -1, 0)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(req)) + req)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        r = _Reader(_recv_exact(sock, size))
    r.i32()  # correlation id
    r.i32()  # throttle time
    brokers = set()
    for _ in range(r.i32()):
        brokers.add(r.i32())
        r.string()  # host
        r.i32()  # port
        r.string()  # rack
    r.string()  # cluster id
    r.i32()  # controller id: in KRaft, any broker, not the active controller
    topics = {}
    for _ in range(r.i32()):
        r.i16()  # error code
        name = r.string()
        r.i8()  # internal
        partitions = []
        for _ in range(r.i32()):
            r.i16()  # error code
            index, leader = r.i32(), r.i32()
            partitions.append((index, leader, r.i32s(), r.i32s()))
        topics[name] = partitions
    return brokers, topics


class KafkaNode:
    """One Apache Kafka KRaft node (broker and controller) run by
    scripts/kafka.sh, which execs the JVM: the child's pid is the broker."""

    def __init__(self, work, node_id, port, controller_port, voters, cluster_id):
        self.id, self.port, self.controller_port = node_id, port, controller_port
        self.voters, self.cluster_id = voters, cluster_id
        self.dir = work / f"kafka-{port}"
        self.log = work / f"kafka-{port}.log"
        self.proc = None

    def spawn(self):
        self.proc = subprocess.Popen(
            ["bash", str(KAFKA_SH), "node", str(self.dir), "--id", str(self.id), "--port", str(self.port),
             "--controller-port", str(self.controller_port), "--voters", self.voters,
             "--cluster-id", self.cluster_id],
            stdin=subprocess.DEVNULL, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)

    def answers(self):
        """Whether the node answers a client and counts itself among the
        live (unfenced) brokers."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            brokers, _ = kafka_metadata(self.port, timeout=1.0)
        except (OSError, struct.error, ConnectionError):
            return False
        return self.id in brokers

    def wait_answering(self, started, timeout=120):
        if not wait_until(self.answers, timeout, step=0.2):
            code = self.proc.poll() if self.proc else None
            raise RuntimeError(f"Kafka node {self.id} did not answer on 127.0.0.1:{self.port} within "
                               f"{timeout} s (exit status {code}; see {self.log})")
        return time.monotonic() - started

    def start(self, timeout=120):
        """Starts the node; returns the seconds until it answers."""
        started = time.monotonic()
        self.spawn()
        return self.wait_answering(started, timeout)

    def kill9(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def term(self, timeout=120):
        """SIGTERM (a controlled shutdown); returns (exit status, seconds)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = f"killed after {timeout} s"
            self.proc.wait()
        self.proc = None
        return status, time.monotonic() - started


class Kafka:
    """A single node, or a cluster of nodes that are all voters."""

    def __init__(self, work, name, ports, controller_ports):
        self.name = name
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        voters = ",".join(f"{i}@127.0.0.1:{c}" for i, c in enumerate(controller_ports, 1))
        self.nodes = [KafkaNode(work, i, p, c, voters, cluster_id)
                      for i, (p, c) in enumerate(zip(ports, controller_ports), 1)]
        self.replication = 3 if len(self.nodes) >= 3 else 1
        self.running = False

    @property
    def brokers(self):
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node(self, node_id):
        return next(n for n in self.nodes if n.id == node_id)

    def start(self):
        log(f"starting Kafka ({self.name}, {len(self.nodes)} node(s))")
        started = time.monotonic()
        for node in self.nodes:
            node.spawn()
        self.running = True
        for node in self.nodes:
            node.wait_answering(started)
        log(f"Kafka ({self.name}) answers after {time.monotonic() - started:.1f} s")

    def stop(self):
        for node in self.nodes:
            node.kill9()
        self.running = False

    def out_of_sync(self):
        """Partitions (of every topic, the internal ones too) whose replicas
        are not all in sync, as the live nodes see it; None if none answers."""
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                brokers, topics = kafka_metadata(node.port)
            except (OSError, struct.error, ConnectionError):
                continue
            if len(brokers) < len(self.nodes):
                return -1
            return sum(1 for parts in topics.values() for _, leader, replicas, isr in parts
                       if leader < 0 or set(isr) != set(replicas))
        return None

    def wait_in_sync(self, timeout=120):
        """Waits until every node is up and every replica in sync; returns
        the seconds it took, or None on the timeout."""
        started = time.monotonic()
        if wait_until(lambda: self.out_of_sync() == 0, timeout, step=0.5):
            return time.monotonic() - started
        return None

    def active_controller(self):
        """The quorum's leader, from MetadataQuorumCommand."""
        live = next(n for n in self.nodes if n.proc is not None)
        out = subprocess.run(
            ["bash", str(KAFKA_SH), "tool", "org.apache.kafka.tools.MetadataQuorumCommand",
             "--bootstrap-server", f"127.0.0.1:{live.port}", "describe", "--status"],
            capture_output=True, text=True, timeout=120)
        match = re.search(r"^LeaderId:\s*(\d+)", out.stdout, re.M)
        if not match:
            raise RuntimeError(f"MetadataQuorumCommand gave no LeaderId: {out.stdout!r} {out.stderr!r}")
        return int(match.group(1))


class Services:
    """PostgreSQL and Redis of the suite's own."""

    def __init__(self, work, ports):
        self.work, self.ports = work, ports
        self.redis = None
        self.pgdata = work / "pg"

    def _as_postgres(self, *cmd):
        if os.geteuid() == 0:
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_postgres(self):
        if PG_BIN is None:
            sys.exit("faults: PostgreSQL's server binaries are missing (apt-get install postgresql)")
        self.pgdata.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.work, "postgres")
            shutil.chown(self.pgdata, "postgres")
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "--auth=trust")
        self._pg_ctl("start")

    def _pg_ctl(self, action, *extra):
        opts = f"-p {self.ports['pg']} -k {self.pgdata} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on"
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "-w", "-l", str(self.pgdata / "log"),
                          "-o", opts, action, *extra)

    def restart_postgres(self):
        self._pg_ctl("restart", "-m", "fast")

    def stop_postgres(self):
        try:
            self._pg_ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass

    def psql(self, db, sql):
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.ports["pg"]), "-U", "postgres", "-d", db, "-tAc", sql],
            check=True, capture_output=True, text=True)
        return out.stdout

    def start_redis(self):
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.ports["redis"]), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.work)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(self.ports["redis"]), "ping"],
                                          capture_output=True).returncode == 0, 10)

    def stop_redis(self):
        if self.redis:
            self.redis.kill()
            self.redis.wait()
            self.redis = None

    def stop(self):
        self.stop_redis()
        self.stop_postgres()


class Instance:
    """One process of the service."""

    def __init__(self, binary, work, name, port, env, static=True):
        self.binary, self.work, self.name, self.port, self.env = binary, work, name, port, env
        self.static = static
        self.log = work / f"{name}.log"
        self.proc = None

    def start(self):
        log_file = open(self.log, "ab")
        # A static member name per instance, kept across its restarts, as
        # the Kubernetes manifests set it (the pod name).
        env = self.env | {"SERVER_PORT": str(self.port)}
        if self.static and os.environ.get("FAULTS_STATIC_MEMBERSHIP", "1") != "0":
            env["KAFKA_GROUP_INSTANCE_ID"] = self.name
        self.proc = subprocess.Popen([str(self.binary)], env=env,
                                     cwd=self.work, stdout=log_file, stderr=subprocess.STDOUT)
        if not wait_until(lambda: request(self.port, "GET", "/health/ready", timeout=1)[0] == 200, 60):
            sys.exit(f"faults: {self.name} did not become ready; see {self.log}")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def term(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def assignments(self, since):
        """(seconds after the wall-clock time `since`, partitions) of each
        "kafka partitions assigned" line the instance logged after it."""
        found = []
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return found
        for line in lines:
            if "kafka partitions assigned" not in line:
                continue
            try:
                entry = json.loads(line)
                stamp = re.sub(r"(\.\d{6})\d*", r"\1", entry["timestamp"].replace("Z", "+00:00"))
                at = datetime.fromisoformat(stamp).timestamp()
            except (ValueError, KeyError):
                continue
            if at >= since:
                found.append((at - since, entry.get("partitions")))
        return found


class Load:
    """POSTs events at a fixed rate over the given ports, recording answers."""

    def __init__(self, ports, users, rate, threads=32):
        self.ports, self.users, self.rate, self.threads = list(ports), users, rate, threads
        self.records = []  # (start, end, status or None, event id or None, user id)
        self.lock = threading.Lock()
        self.sent = 0
        self.stop_flag = threading.Event()

    def set_ports(self, ports):
        self.ports = list(ports)

    def unanswered(self):
        """Requests that got no HTTP answer (refused, reset, timed out)."""
        return sum(1 for r in self.records if r[2] is None)

    def _worker(self):
        conns = {}
        while not self.stop_flag.is_set():
            with self.lock:
                i = self.sent
                self.sent += 1
            due = self.t0 + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ports = self.ports
            # A connection to an instance taken out of the rotation is
            # dropped, as a load balancer would: one that restarted meanwhile
            # gets a new one when it is back.
            for stale in [p for p in conns if p not in ports]:
                conns.pop(stale).close()
            port = ports[i % len(ports)]
            user = self.users[i % len(self.users)]
            body = json.dumps({"user_id": user, "type": EVENT_TYPE, "data": json.dumps({"n": i})})
            start = time.monotonic()
            status = event_id = None
            try:
                conn = conns.get(port) or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conns[port] = conn
                conn.request("POST", "/api/v1/events", body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                status = response.status
                if status == 201:
                    event_id = json.loads(data)["id"]
            except Exception:  # noqa: BLE001 - connection refused/reset: not acknowledged
                stale = conns.pop(port, None)
                if stale:
                    stale.close()
            with self.lock:
                self.records.append((start, time.monotonic(), status, event_id, user))

    def __enter__(self):
        self.t0 = time.monotonic()
        self.workers = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.threads)]
        for w in self.workers:
            w.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for w in self.workers:
            w.join()


class Suite:
    def __init__(self, args):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="highload-faults-"))
        base = args.port_base
        self.ports = {"pg": base, "redis": base + 1, "a": base + 10, "b": base + 11}
        self.services = Services(self.work, self.ports)
        # Ports base+2..base+9: the single node's client and controller
        # listeners, then the cluster's three client and three controller ones.
        self.kafkas = {
            "single": Kafka(self.work, "single node", [base + 2], [base + 3]),
            "cluster": Kafka(self.work, "three-node cluster", [base + 4, base + 5, base + 6],
                             [base + 7, base + 8, base + 9]),
        }
        self.kafka = None
        self.rows = []
        self.round = 0

    def use_kafka(self, which):
        """The fault's Kafka, started if it is not running (the other one
        stopped: on two cores, four brokers at once would be the fault),
        and healthy: every node answering, every replica in sync."""
        kafka = self.kafkas[which]
        if self.kafka is not kafka:
            if self.kafka:
                self.kafka.stop()
            self.kafka = kafka
            kafka.start()
        if kafka.wait_in_sync() is None:
            raise RuntimeError(f"Kafka ({kafka.name}) is not healthy: a node is down or a replica out of sync")

    def env(self, db, topic):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "REDIS_", "KAFKA_", "DATABASE_URL"))}
        return env | {
            "DB_HOST": "127.0.0.1", "DB_PORT": str(self.ports["pg"]), "DB_USER": "postgres", "DB_PASSWORD": "",
            "DB_NAME": db, "DB_SSLMODE": "disable",
            "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(self.ports["redis"]),
            "KAFKA_BROKERS": self.kafka.brokers, "KAFKA_TOPIC": topic,
            "KAFKA_REPLICATION_FACTOR": str(self.kafka.replication),
            "KAFKA_GROUP_ID": f"{topic}-workers", "LOG_FORMAT": "json",
            # warn, and the consumer's assignments (info), which the
            # two-instance faults read back
            "LOG_LEVEL": os.environ.get("FAULTS_LOG_LEVEL", "warn,highload::bus::kafka::context=info"),
            "SERVER_HOST": "127.0.0.1",
        }

    def fresh(self, name, instances=("a",), static=True):
        """A database and topic of the fault's own, and its instances."""
        self.round += 1
        db, topic = f"faults_{self.round}", f"faults-{self.round}-{uuid.uuid4().hex[:6]}"
        self.services.psql("postgres", f"CREATE DATABASE {db}")
        self.db = db
        env = self.env(db, topic)
        self.instances = {n: Instance(self.args.binary, self.work, f"{name}-{n}", self.ports[n], env, static)
                          for n in instances}
        for inst in self.instances.values():
            inst.start()
        port = self.ports[instances[0]]
        self.users = []
        for i in range(self.args.users):
            status, body = request(port, "POST", "/api/v1/users",
                                   {"first_name": "Fault", "last_name": str(i), "email": f"fault-{self.round}-{i}@example.com"})
            assert status == 201, (status, body)
            self.users.append(body["id"])

    def stored(self):
        rows = self.services.psql(self.db, f"SELECT id, user_id FROM events WHERE type = '{EVENT_TYPE}'")
        return [line.split("|") for line in rows.split()]

    def activity(self, port):
        counts = {}
        for user in self.users:
            status, body = request(port, "GET", f"/api/v1/users/{user}/activity")
            counts[user] = body["events_by_type"].get(EVENT_TYPE, 0) if status == 200 else None
        return counts

    def settle(self, port, since):
        """Waits until the activity counts what is stored; returns
        (lost in the pipeline, counted twice, seconds from `since`)."""
        deadline = time.monotonic() + self.args.drain_timeout
        while True:
            per_user = {}
            for _, user in self.stored():
                per_user[user] = per_user.get(user, 0) + 1
            try:
                counted = self.activity(port)
            except Exception:  # noqa: BLE001
                counted = {}
            missing = sum(max(0, per_user.get(u, 0) - (counted.get(u) or 0)) for u in self.users)
            twice = sum(max(0, (counted.get(u) or 0) - per_user.get(u, 0)) for u in self.users)
            if (missing == 0 and len(counted) == len(self.users)) or time.monotonic() > deadline:
                return missing, twice, time.monotonic() - since

    def record(self, fault, kind, load, recovery, port, note="", recovery_s=None, settled=None):
        """The fault's row; `settled` is what the fault's own settle()
        returned if it called it (to wait out its deadline only once)."""
        records = load.records
        acked = {r[3] for r in records if r[2] == 201}
        stored = {row[0] for row in self.stored()}
        lost_acked = len(acked - stored)
        if settled is None or settled[0] == 0:
            # what was late is counted by now; or the fault did not wait
            settled = self.settle(port, time.monotonic())
        missing, twice, _ = settled
        row = {
            "fault": fault,
            "kind": kind,
            "requests": len(records),
            "5xx": sum(1 for r in records if r[2] is not None and r[2] >= 500),
            "acknowledged": len(acked),
            "lost": lost_acked,
            "uncounted": missing,
            "counted_twice": twice,
            "recovery": recovery,
            "recovery_s": recovery_s,
            "note": note,
        }
        self.rows.append(row)
        log(json.dumps(row))
        for inst in self.instances.values():
            inst.stop()
        return row

    def broker_row(self, fault, load, port, back, note, kind="broker", after=None):
        """The row of a broker or cluster fault that ended at `back`: its
        recovery is the seconds from then until the activity is exact.
        `after()`, if given, adds to the note once that is measured."""
        settled = self.settle(port, back)
        missing, _, drain = settled
        exact = missing == 0
        recovery = f"activity exact {drain:.1f} s after the fault ended" if exact else "activity not exact"
        if after:
            note = f"{note}; {after()}"
        return self.record(fault, kind, load, recovery, port, note, recovery_s=drain if exact else None,
                           settled=settled)

    # --- the faults on the single node ------------------------------------------

    def pg_restart(self):
        self.fresh("pg-restart")
        a = self.instances["a"]
        with Load([a.port], self.users, self.args.rate) as load:
            time.sleep(5)
            self.services.restart_postgres()
            back = time.monotonic()
            first_ok = wait_until(lambda: next((r[1] for r in reversed(load.records) if r[2] == 201 and r[0] > back), None), 30)
            time.sleep(5)
        slow_503 = sum(1 for r in load.records if r[2] == 503 and r[1] - r[0] > 1.0)
        recovery = f"{(first_ok - back):.1f} s to the first write" if first_ok else "no write within 30 s"
        return self.record("PostgreSQL restarted", "postgres", load, recovery, a.port,
                           f"503s slower than 1 s: {slow_503}")

    def redis_restart(self):
        self.fresh("redis-restart")
        a = self.instances["a"]
        with Load([a.port], self.users, self.args.rate) as load:
            time.sleep(5)
            self.services.stop_redis()
            time.sleep(10)
            self.services.start_redis()
            time.sleep(5)
        return self.record("Redis stopped 10 s, restarted", "redis", load, "-", a.port)

    def kill_broker(self, instance, node, down):
        """Under load on `instance`: kills `node` (-9), restarts it `down`
        seconds later; returns the load, how long the node took to answer
        after its restart, and when it did."""
        with Load([instance.port], self.users, self.args.rate) as load:
            time.sleep(5)
            node.kill9()
            time.sleep(down)
            answered = node.start()
            back = time.monotonic()
            time.sleep(2)
        return load, answered, back

    def broker_outage(self):
        self.fresh("broker")
        a = self.instances["a"]
        load, answered, back = self.kill_broker(a, self.kafka.nodes[0], self.args.broker_down)
        return self.broker_row(f"broker (single node) killed (-9) for {self.args.broker_down} s", load, a.port, back,
                               f"the broker answered {answered:.1f} s after its restart")

    def kill9(self):
        self.fresh("kill9")
        a = self.instances["a"]
        with Load([a.port], self.users, self.args.rate) as load:
            time.sleep(5)
            a.kill9()
            a.start()
            back = time.monotonic()
            time.sleep(3)
        settled = missing, _, exact = self.settle(a.port, back)
        recovery = f"activity exact {exact:.1f} s after the restart" if missing == 0 else "activity not exact"
        return self.record("service killed (-9), restarted", "service", load, recovery, a.port,
                           recovery_s=exact if missing == 0 else None, settled=settled)

    def sigterm(self):
        self.fresh("sigterm")
        a = self.instances["a"]
        with Load([a.port], self.users, self.args.rate) as load:
            time.sleep(5)
            signalled = time.monotonic()
            status = a.term()
            exited = time.monotonic()
            a.start()
            time.sleep(3)
        failed_before = sum(1 for r in load.records if r[0] < signalled and r[2] != 201)
        recovery = f"exit {status} after {exited - signalled:.1f} s"
        return self.record("SIGTERM, restarted", "service", load, recovery, a.port,
                           f"requests sent before the signal that failed: {failed_before}")

    # --- the faults on the three-node cluster ------------------------------------

    def _cluster_kill(self, name, victim_is_controller):
        self.fresh(name)
        a = self.instances["a"]
        controller = self.kafka.active_controller()
        victim = next(n for n in self.kafka.nodes if (n.id == controller) == victim_is_controller)
        load, answered, back = self.kill_broker(a, victim, self.args.cluster_down)
        what = "the active controller" if victim_is_controller else "not the controller"
        return self.broker_row(
            f"cluster: broker {victim.id} ({what}) killed (-9), restarted after {self.args.cluster_down} s",
            load, a.port, back, f"broker {victim.id} answered {answered:.1f} s after its restart",
            kind="cluster", after=self._controller_now)

    def _controller_now(self):
        try:
            return f"active controller then: {self.kafka.active_controller()}"
        except (RuntimeError, subprocess.SubprocessError, StopIteration) as err:
            return f"active controller then: unknown ({err})"

    def cluster_broker_restart(self):
        return self._cluster_kill("cluster-broker", victim_is_controller=False)

    def cluster_controller_kill(self):
        return self._cluster_kill("cluster-controller", victim_is_controller=True)

    def cluster_rolling_restart(self):
        self.fresh("cluster-rolling")
        a = self.instances["a"]
        # as an operator would: the active controller last, each node back
        # and every replica in sync before the next goes down
        controller = self.kafka.active_controller()
        order = sorted(self.kafka.nodes, key=lambda n: (n.id == controller, n.id))
        steps = []
        with Load([a.port], self.users, self.args.rate) as load:
            time.sleep(5)
            for i, node in enumerate(order):
                status, took = node.term()
                answered = node.start()
                in_sync = self.kafka.wait_in_sync(timeout=60)
                back = time.monotonic()
                steps.append(f"{node.id}: exit {status} in {took:.1f} s, answered {answered:.1f} s after its start, "
                             + (f"in sync {in_sync:.1f} s later" if in_sync is not None else "not in sync within 60 s"))
                time.sleep(self.args.rolling_pause if i < len(order) - 1 else 2)
        return self.broker_row("cluster: rolling restart of the three brokers (SIGTERM), controller last",
                               load, a.port, back, "brokers " + "; ".join(steps), kind="cluster")

    # --- the faults of two instances, on the cluster -------------------------

    def rolling_restart_two(self):
        self.fresh("rolling-two", instances=("a", "b"))
        a, b = self.instances["a"], self.instances["b"]
        steps = []
        with Load([a.port, b.port], self.users, self.args.rate) as load:
            time.sleep(5)
            for inst, other in ((a, b), (b, a)):
                # out of the rotation first, as a load balancer would
                load.set_ports([other.port])
                time.sleep(0.5)
                signalled = time.monotonic()
                status = inst.term()
                exited = time.monotonic()
                inst.start()
                back = time.monotonic()
                load.set_ports([a.port, b.port])
                steps.append(f"{inst.name[-1]}: exit {status} in {exited - signalled:.1f} s, ready {back - exited:.1f} s after its start")
                time.sleep(self.args.rolling_pause if inst is a else 2)
        settled = missing, _, exact = self.settle(a.port, back)
        recovery = f"activity exact {exact:.1f} s after the last restart" if missing == 0 else "activity not exact"
        return self.record("two instances restarted in turn (SIGTERM)", "service", load, recovery, a.port,
                           "; ".join(steps) + f"; requests unanswered: {load.unanswered()}",
                           recovery_s=exact if missing == 0 else None, settled=settled)

    def _one_of_two_killed(self, name, static):
        self.fresh(name, instances=("a", "b"), static=static)
        a, b = self.instances["a"], self.instances["b"]
        with Load([a.port, b.port], self.users, self.args.rate) as load:
            time.sleep(5)
            killed_wall = time.time()
            a.kill9()
            load.set_ports([b.port])
            killed = time.monotonic()
            time.sleep(5)
        settled = missing, _, exact = self.settle(b.port, killed)
        recovery = f"activity exact {exact:.1f} s after the kill" if missing == 0 else "activity not exact"
        taken = b.assignments(killed_wall)
        took = (f"the survivor was assigned partitions {taken[-1][1]} {taken[-1][0]:.1f} s after the kill" if taken
                else "no assignment logged by the survivor after the kill")
        membership = "static membership" if static and os.environ.get("FAULTS_STATIC_MEMBERSHIP", "1") != "0" \
            else "dynamic membership"
        return self.record(f"two instances, one killed (-9), {membership}", "service", load, recovery, b.port,
                           f"{took}; requests unanswered: {load.unanswered()}",
                           recovery_s=exact if missing == 0 else None, settled=settled)

    def one_of_two_killed(self):
        return self._one_of_two_killed("two", static=True)

    def one_of_two_killed_dynamic(self):
        return self._one_of_two_killed("two-dynamic", static=False)

    # name: (method, the Kafka it runs on, its kind). They run in this order.
    FAULTS = {
        "pg-restart": (pg_restart, "single", "postgres"),
        "redis-restart": (redis_restart, "single", "redis"),
        "broker-outage": (broker_outage, "single", "broker"),
        "kill9": (kill9, "single", "service"),
        "sigterm": (sigterm, "single", "service"),
        "cluster-broker-restart": (cluster_broker_restart, "cluster", "cluster"),
        "cluster-controller-kill": (cluster_controller_kill, "cluster", "cluster"),
        "cluster-rolling-restart": (cluster_rolling_restart, "cluster", "cluster"),
        "rolling-restart-two": (rolling_restart_two, "cluster", "service"),
        "one-of-two-killed": (one_of_two_killed, "cluster", "service"),
        "one-of-two-killed-dynamic": (one_of_two_killed_dynamic, "cluster", "service"),
    }

    def run(self, names):
        log(f"working in {self.work}")
        self.services.start_postgres()
        self.services.start_redis()
        try:
            for name in names:
                method, kafka, _ = self.FAULTS[name]
                self.use_kafka(kafka)
                log(f"--- {name}")
                method(self)
        finally:
            for inst in getattr(self, "instances", {}).values():
                inst.stop()
            for kafka in self.kafkas.values():
                kafka.stop()
            self.services.stop()
        return self.rows


def table(rows):
    head = "| fault | requests | 5xx | acknowledged | lost | uncounted | counted twice | recovery | note |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['fault']} | {r['requests']} | {r['5xx']} | {r['acknowledged']} | {r['lost']} | "
                     f"{r['uncounted']} | {r['counted_twice']} | {r['recovery']} | {r['note']} |")
    return "\n".join(lines)


def failures(row):
    """Why the row fails the run, if it does."""
    why = [f"{row[k]} {k.replace('_', ' ')}" for k in ("lost", "uncounted", "counted_twice") if row[k]]
    broker = row["kind"] in ("broker", "cluster")
    if row["5xx"] and (broker or row["kind"] == "redis"):
        why.append(f"{row['5xx']} 5xx")
    if broker and (row["recovery_s"] is None or row["recovery_s"] > RECOVERY_LIMIT):
        why.append(f"recovery not within {RECOVERY_LIMIT:.0f} s")
    return why


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", type=Path)
    parser.add_argument("--faults", default=",".join(Suite.FAULTS), help="comma-separated, of: " + ", ".join(Suite.FAULTS))
    parser.add_argument("--rate", type=float, default=500, help="writes per second (default 500)")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--broker-down", type=int, default=60,
                        help="seconds the single broker stays down in broker-outage (default 60)")
    parser.add_argument("--cluster-down", type=int, default=10,
                        help="seconds a cluster node stays down in cluster-broker-restart and "
                             "cluster-controller-kill (default 10)")
    parser.add_argument("--rolling-pause", type=float, default=5,
                        help="seconds between two restarts of a rolling restart (default 5)")
    parser.add_argument("--drain-timeout", type=float, default=120)
    parser.add_argument("--port-base", type=int, default=25400,
                        help="ports from here to here+11 (default 25400)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    names = [n for n in args.faults.split(",") if n]
    unknown = [n for n in names if n not in Suite.FAULTS]
    if unknown:
        parser.error(f"unknown faults {unknown}")
    # In the suite's order: the single node's faults, then the cluster's.
    names = [n for n in Suite.FAULTS if n in names]
    rows = Suite(args).run(names)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    bad = [(r["fault"], failures(r)) for r in rows if failures(r)]
    for fault, why in bad:
        log(f"FAILED {fault}: {', '.join(why)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
