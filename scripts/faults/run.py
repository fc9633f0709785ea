#!/usr/bin/env python3
"""The fault suite: each fault under a steady write load, then what was lost.

Started by scripts/faults.sh, which builds the release binary. Everything
runs on its own ports, in a temporary directory: a PostgreSQL cluster
(initdb), a Redis, a tansu broker, and one or two instances of the service.
Nothing of the machine's own services is touched.

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
  recovery       the fault's own measure (see FAULTS below)
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

EVENT_TYPE = "fault.write"
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


class Services:
    """PostgreSQL, Redis and tansu of the suite's own."""

    def __init__(self, work, ports):
        self.work, self.ports = work, ports
        self.redis = self.tansu = None
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

    def start_tansu(self):
        (self.work / "tansu").mkdir(exist_ok=True)
        url = f"tcp://127.0.0.1:{self.ports['kafka']}"
        tansu = os.environ.get("TANSU_BIN", "tansu")
        self.tansu = subprocess.Popen(
            [tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "sqlite://tansu.db"],
            cwd=self.work / "tansu", stdout=open(self.work / "tansu.log", "ab"), stderr=subprocess.STDOUT)
        started = time.monotonic()
        # tansu may take minutes to listen again after a kill (seen: over
        # two); a fault's recovery is timed from when it answers, and one
        # that never does fails the run instead of passing for the service's
        # fault.
        if not wait_until(lambda: subprocess.run(
                [tansu, "topic", "list", "--broker", url],
                capture_output=True, timeout=5).returncode == 0, 300, step=0.5):
            raise RuntimeError(f"tansu did not answer on {url} within 300 s (see {self.work / 'tansu.log'})")
        return time.monotonic() - started

    def kill_tansu(self):
        if self.tansu:
            self.tansu.kill()
            self.tansu.wait()
            self.tansu = None

    def stop(self):
        self.stop_redis()
        self.kill_tansu()
        self.stop_postgres()


class Instance:
    """One process of the service."""

    def __init__(self, binary, work, name, port, env):
        self.binary, self.work, self.name, self.port, self.env = binary, work, name, port, env
        self.proc = None

    def start(self):
        log_file = open(self.work / f"{self.name}.log", "ab")
        # A static member name per instance, kept across its restarts, as
        # the Kubernetes manifests set it (the pod name).
        env = self.env | {"SERVER_PORT": str(self.port)}
        if os.environ.get("FAULTS_STATIC_MEMBERSHIP", "1") != "0":
            env["KAFKA_GROUP_INSTANCE_ID"] = self.name
        self.proc = subprocess.Popen([str(self.binary)], env=env,
                                     cwd=self.work, stdout=log_file, stderr=subprocess.STDOUT)
        if not wait_until(lambda: request(self.port, "GET", "/health/ready", timeout=1)[0] == 200, 60):
            sys.exit(f"faults: {self.name} did not become ready; see {self.work / (self.name + '.log')}")

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
                conns.pop(port, None)
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
        self.ports = {"pg": base, "redis": base + 1, "kafka": base + 2, "a": base + 10, "b": base + 11}
        self.services = Services(self.work, self.ports)
        self.rows = []
        self.round = 0

    def env(self, db, topic):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "REDIS_", "KAFKA_", "DATABASE_URL"))}
        return env | {
            "DB_HOST": "127.0.0.1", "DB_PORT": str(self.ports["pg"]), "DB_USER": "postgres", "DB_PASSWORD": "",
            "DB_NAME": db, "DB_SSLMODE": "disable",
            "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(self.ports["redis"]),
            "KAFKA_BROKERS": f"127.0.0.1:{self.ports['kafka']}", "KAFKA_TOPIC": topic,
            "KAFKA_GROUP_ID": f"{topic}-workers", "LOG_FORMAT": "json", "LOG_LEVEL": os.environ.get("FAULTS_LOG_LEVEL", "warn"),
            "SERVER_HOST": "127.0.0.1",
        }

    def fresh(self, name, instances=("a",)):
        """A database and topic of the fault's own, and its instances."""
        self.round += 1
        db, topic = f"faults_{self.round}", f"faults-{self.round}-{uuid.uuid4().hex[:6]}"
        self.services.psql("postgres", f"CREATE DATABASE {db}")
        self.db = db
        env = self.env(db, topic)
        self.instances = {n: Instance(self.args.binary, self.work, f"{name}-{n}", self.ports[n], env) for n in instances}
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

    def record(self, fault, load, recovery, port, note=""):
        records = load.records
        acked = {r[3] for r in records if r[2] == 201}
        stored = {row[0] for row in self.stored()}
        lost_acked = len(acked - stored)
        missing, twice, drain = self.settle(port, time.monotonic())
        row = {
            "fault": fault,
            "requests": len(records),
            "5xx": sum(1 for r in records if r[2] is not None and r[2] >= 500),
            "acknowledged": len(acked),
            "lost": lost_acked,
            "uncounted": missing,
            "counted_twice": twice,
            "recovery": recovery,
            "note": note,
        }
        self.rows.append(row)
        log(json.dumps(row))
        for inst in self.instances.values():
            inst.stop()
        return row

    # --- the faults ---------------------------------------------------------

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
        return self.record("PostgreSQL restarted", load, recovery, a.port, f"503s slower than 1 s: {slow_503}")

    def redis_restart(self):
        self.fresh("redis-restart")
        a = self.instances["a"]
        with Load([a.port], self.users, self.args.rate) as load:
            time.sleep(5)
            self.services.stop_redis()
            time.sleep(10)
            self.services.start_redis()
            time.sleep(5)
        return self.record("Redis stopped 10 s, restarted", load, "-", a.port)

    def broker_outage(self):
        self.fresh("broker")
        a = self.instances["a"]
        with Load([a.port], self.users, self.args.rate) as load:
            time.sleep(5)
            self.services.kill_tansu()
            time.sleep(self.args.broker_down)
            restart = self.services.start_tansu()
            back = time.monotonic()
            time.sleep(2)
        missing, _, drain = self.settle(a.port, back)
        recovery = f"drained {drain:.1f} s after the broker returned" if missing == 0 else "not drained"
        return self.record(f"broker killed for {self.args.broker_down} s", load, recovery, a.port,
                           f"the broker answered {restart:.1f} s after its restart")

    def kill9(self):
        self.fresh("kill9")
        a = self.instances["a"]
        with Load([a.port], self.users, self.args.rate) as load:
            time.sleep(5)
            a.kill9()
            a.start()
            back = time.monotonic()
            time.sleep(3)
        missing, _, exact = self.settle(a.port, back)
        recovery = f"activity exact {exact:.1f} s after the restart" if missing == 0 else "activity not exact"
        return self.record("service killed (-9), restarted", load, recovery, a.port)

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
        return self.record("SIGTERM, restarted", load, recovery, a.port,
                           f"requests sent before the signal that failed: {failed_before}")

    def one_of_two_killed(self):
        self.fresh("two", instances=("a", "b"))
        a, b = self.instances["a"], self.instances["b"]
        with Load([a.port, b.port], self.users, self.args.rate) as load:
            time.sleep(5)
            a.kill9()
            load.set_ports([b.port])
            killed = time.monotonic()
            time.sleep(5)
        missing, _, exact = self.settle(b.port, killed)
        recovery = f"activity exact {exact:.1f} s after the kill" if missing == 0 else "activity not exact"
        return self.record("two instances, one killed (-9)", load, recovery, b.port)

    FAULTS = {
        "pg-restart": pg_restart,
        "redis-restart": redis_restart,
        "broker-outage": broker_outage,
        "kill9": kill9,
        "sigterm": sigterm,
        "one-of-two-killed": one_of_two_killed,
    }

    def run(self, names):
        log(f"working in {self.work}")
        self.services.start_postgres()
        self.services.start_redis()
        self.services.start_tansu()
        try:
            for name in names:
                log(f"--- {name}")
                self.FAULTS[name](self)
        finally:
            for inst in getattr(self, "instances", {}).values():
                inst.stop()
            self.services.stop()
        return self.rows


def table(rows):
    head = "| fault | requests | 5xx | acknowledged | lost | uncounted | counted twice | recovery | note |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['fault']} | {r['requests']} | {r['5xx']} | {r['acknowledged']} | {r['lost']} | "
                     f"{r['uncounted']} | {r['counted_twice']} | {r['recovery']} | {r['note']} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", type=Path)
    parser.add_argument("--faults", default=",".join(Suite.FAULTS), help="comma-separated, of: " + ", ".join(Suite.FAULTS))
    parser.add_argument("--rate", type=float, default=500, help="writes per second (default 500)")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--broker-down", type=int, default=60, help="seconds the broker stays down (default 60)")
    parser.add_argument("--drain-timeout", type=float, default=120)
    parser.add_argument("--port-base", type=int, default=25400)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    names = [n for n in args.faults.split(",") if n]
    unknown = [n for n in names if n not in Suite.FAULTS]
    if unknown:
        parser.error(f"unknown faults {unknown}")
    rows = Suite(args).run(names)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    bad = [r for r in rows if r["lost"] or r["uncounted"] or r["counted_twice"]
           or (r["5xx"] and r["fault"].startswith(("Redis", "broker")))]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
