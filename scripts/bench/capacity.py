#!/usr/bin/env python3
"""The capacity model's tables (docs/capacity.md), derived from one run of
scripts/bench.sh on the real stack.

    python3 scripts/bench/capacity.py bench-results/<run>.json [--target-utilization 0.7]

Reads the run's wrk records (binary "new", stack "real", the small tables)
and their `cpu` field: the share of a core the service, PostgreSQL, Redis
and the broker each took during the line, and PostgreSQL's streaming
replica when the run read from one (BENCH_READ_URL). From them:

  1. CPU per request of each component, in microseconds (share of a core
     x 1e6 / requests per second), for every scenario;
  2. what one core of each component sustains, per kind of request
     (1e6 / its CPU per request);
  3. how many cores of each, and how many instances, partitions and
     database nodes, serve 1x, 10x, 100x and 1,000x the mix the run
     measured (90% cached reads, 10% updates: scripts/bench/wrk/mix.lua),
     at --target-utilization of every core;
  4. where the first wall stands: the write rate of the largest primary
     (--largest-primary-cores) and of PostgreSQL on this machine
     (the run's pgbench ceiling).

Standard library only. Prints Markdown.
"""

import argparse
import json
import math
import sys

COMPONENTS = ("service", "postgres", "redis", "broker")
NAMES = {"service": "service", "postgres": "PostgreSQL", "redis": "Redis", "broker": "broker",
         "replica": "replica"}
# The kinds of request the model is made of, by scenario.
KINDS = [
    ("get_user", "cached read (GET /api/v1/users/{id})"),
    ("put_user", "update (PUT /api/v1/users/{id})"),
    ("post_event", "event write (POST /api/v1/events), through the pipeline"),
    ("list_events_p1", "list page (GET /api/v1/events, 10 rows)"),
    ("mix", "the mix: 9 cached reads for 1 update"),
]
SCALES = (1, 10, 100, 1000)
# vCPUs of an instance in the Kubernetes manifests (deploy/k8s: limits.cpu
# is 1 in the base, 2 in prod); the model sizes 2-vCPU instances.
INSTANCE_CORES = 2


def records(path):
    with open(path) as f:
        run = json.load(f)
    lines = {}
    for r in run["results"]:
        if (r.get("kind", "wrk") == "wrk" and r.get("binary") == "new" and r.get("stack") == "real"
                and not r.get("large") and r.get("cpu")):
            lines.setdefault(r["scenario"], r)
    if not lines:
        sys.exit(f"capacity: {path} has no real-stack line with cpu shares "
                 "(run scripts/bench.sh --stack real from a version that records them)")
    drains = [r for r in run["results"] + run.get("drain", [])
              if r.get("kind") == "drain" and r.get("binary") == "new" and r.get("stack") == "real"
              and r.get("replayed")]
    ceilings = {c["name"]: c for c in run.get("ceilings", []) if c.get("stack") == "real"}
    return run, lines, (drains[0] if drains else None), ceilings


def us_per_request(line, component):
    return line["cpu"].get(component, 0.0) * 1e6 / line["rps"]


def fmt(v):
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a bench-results/*.json of scripts/bench.sh")
    parser.add_argument("--target-utilization", type=float, default=0.7,
                        help="share of each core the sizing plans to use (0.7)")
    parser.add_argument("--largest-primary-cores", type=int, default=64,
                        help="vCPUs of the largest PostgreSQL primary on offer (64)")
    args = parser.parse_args()
    run, lines, drain, ceilings = records(args.run)
    u = args.target_utilization
    replica = run.get("read_replica")
    components = COMPONENTS + (("replica",) if replica else ())

    print(f"From `{args.run}`: commit {run.get('commit', '?')[:7]}, {run.get('cpus')} cores "
          f"({run.get('cpu', '?')}), {run.get('seconds')} s a line, {run.get('small_rows')} rows, "
          f"`{run.get('load_generator', 'wrk')}` at the connections shown; service, PostgreSQL, Redis "
          "and the broker on the same machine"
          + (f"; reads from a streaming replica at {replica}, on it too" if replica else "") + ".\n")

    print("### 1. CPU per request, by component (µs)\n")
    print("| scenario | connections | rps | " + " | ".join(NAMES[c] for c in components) + " | total |")
    print("|---|---:|---:|" + "---:|" * len(components) + "---:|")
    for scenario, line in lines.items():
        costs = [us_per_request(line, c) for c in components]
        print(f"| {line['label']} | {line['connections']} | {line['rps']:,.0f} | "
              + " | ".join(fmt(c) for c in costs) + f" | {fmt(sum(costs))} |")

    print("\n### 2. What one core of each component sustains (requests/s)\n")
    print("| kind of request | " + " | ".join(NAMES[c] for c in components) + " |")
    print("|---|" + "---:|" * len(components))
    for scenario, name in KINDS:
        if scenario not in lines:
            continue
        cells = []
        for c in components:
            cost = us_per_request(lines[scenario], c)
            cells.append(f"{1e6 / cost:,.0f}" if cost > 0.05 else "—")
        print(f"| {name} | " + " | ".join(cells) + " |")

    if "mix" not in lines:
        return
    mix = lines["mix"]
    writes = mix["rps"] / 10
    print(f"\n### 3. Sizing for multiples of the measured mix ({mix['rps']:,.0f} requests/s, "
          f"{writes:,.0f} of them updates), at {u:.0%} of every core\n")
    print("| load | requests/s | updates/s | service cores | instances (2 vCPU) | PostgreSQL primary cores "
          "| Redis cores | broker cores | consumer instances | partitions |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    drain_rate = drain["rate"] if drain else None
    for scale in SCALES:
        rate = mix["rps"] * scale
        cores = {c: rate * us_per_request(mix, c) / 1e6 / u for c in COMPONENTS}
        instances = max(2, math.ceil(cores["service"] / INSTANCE_CORES))
        # Each update is one message; a consumer instance applies drain_rate a second.
        consumers = math.ceil(writes * scale / (drain_rate * u)) if drain_rate else None
        # Every instance consumes: one without a partition while the group
        # has lag is reported unhealthy, so each needs a partition.
        partitions = max(6, consumers or 0, instances)
        print(f"| {scale:,}× | {rate:,.0f} | {writes * scale:,.0f} | {cores['service']:,.1f} | {instances:,} | "
              f"{cores['postgres']:,.1f} | {cores['redis']:,.1f} | {cores['broker']:,.1f} | "
              f"{consumers if consumers is not None else '?'} | {partitions:,} |")

    print("\n### 4. The first wall: the primary's write rate\n")
    for scenario, what, made_of in [
        ("put_user", "updates", "its row, its outbox row, then the consumer's activity update"),
        ("post_event", "events", "its row, its outbox row, its totals, then the consumer's activity update"),
    ]:
        if scenario in lines:
            pg_us = us_per_request(lines[scenario], "postgres")
            largest = args.largest_primary_cores * u * 1e6 / pg_us
            print(f"- One of the {what} costs PostgreSQL {fmt(pg_us)} µs of CPU ({made_of}): a primary "
                  f"of {args.largest_primary_cores} vCPUs at {u:.0%} takes about **{largest:,.0f} {what}/s**.")
    if "pgbench" in ceilings:
        p = ceilings["pgbench"]
        print(f"- On this machine pgbench runs the user-create transaction at {p['tps']:,.0f} tps "
              f"(-c{p['connections']}), the ceiling the write lines are ratios of.")
    if drain:
        print(f"- One consumer instance drained {drain['processed']:,} messages at {drain['rate']:,.0f} "
              "messages/s (replayed from the topic's start): the partitions needed are the consumer "
              "instances the write rate needs, at least.")
    write_line = lines.get("put_user")
    for scale in SCALES:
        need = writes * scale
        if write_line and need > args.largest_primary_cores * u * 1e6 / us_per_request(write_line, "postgres"):
            print(f"- At {scale:,}× the mix ({need:,.0f} updates/s) one primary no longer suffices: "
                  "the writes must be split by user id over several primaries (shards).")
            break


if __name__ == "__main__":
    main()
