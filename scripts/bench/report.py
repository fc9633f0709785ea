"""Turns the measurements of one scripts/bench.sh run into its three outputs:
a markdown table on stdout, a JSON document, and a PNG plot.

    python3 report.py RESULTS.jsonl META.json OUT.json OUT.png

RESULTS.jsonl holds one record a line, written by bench.sh:
  kind=wrk      a load run: binary (new|baseline), stack, scenario, label,
                connections, rows, and wrk's figures (rps, p50_us, p99_us, ...)
  kind=ceiling  a rate the targets are ratios of: pgbench or sqlite (tps)
  kind=process  binary, stack, startup_ms, idle_rss_kb, peak_rss_kb
  kind=drain    binary, stack, processed, seconds, rate (scripts/bench/drain.py);
                replayed: a second instance consumed the topic from its start
  kind=e2e      binary, stack, p50_us, p99_us, background (wrk's paced run),
                stages (mean delay from the change to each stage meanwhile);
                failed instead of the percentiles when the probe gave up
  kind=idle     binary, two idle instances on the real stack: broker_cpu (share
                of a core), fetches_per_s_per_instance (from the broker's JMX)
A wrk record on the real stack also carries broker_cpu: the broker's share
of a core during the run.
The ratio column compares each line with its ceiling: GETs with
/health/live of the same binary at the same concurrency, writes with
pgbench (real) or SQLite (embedded), lists at the large size with the same
list at the small size (p50, lower is better).
"""

import json
import sys

WRITES = {"post_user", "put_user", "post_event"}


def fmt_rps(v):
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def fmt_us(us):
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1000:
        return f"{us / 1000:.1f} ms"
    return f"{us:.0f} µs"


def fmt_rows(n):
    if not n:
        return ""
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k" if n >= 1000 else str(n)


def fmt_ratio(r):
    return f"{r:.2f}×" if r >= 0.1 else f"{r:.3f}×"


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def ratio(rec, by_key, ceilings):
    """(value, text) comparing rec with its ceiling, or (None, '')."""
    stack, binary, scen = rec["stack"], rec["binary"], rec["scenario"]
    if scen.startswith("live"):
        return None, "ceiling"
    if scen.startswith("list_") and rec.get("large"):
        small = by_key.get((binary, stack, scen, rec["connections"], "small"))
        if small and small["p50_us"]:
            r = rec["p50_us"] / small["p50_us"]
            return r, f"p50 {fmt_ratio(r)} {fmt_rows(small['rows'])}"
        return None, ""
    if scen in WRITES:
        name = "pgbench" if stack == "real" else "sqlite"
        c = ceilings.get((stack, name))
        if c:
            r = rec["rps"] / c["tps"]
            return r, f"{fmt_ratio(r)} {name}"
        return None, ""
    live = by_key.get((binary, stack, "live" if rec["connections"] <= 64 else "live_c256",
                       rec["connections"], "small")) or by_key.get((binary, stack, "live", 64, "small"))
    if live and live["rps"]:
        r = rec["rps"] / live["rps"]
        return r, f"{fmt_ratio(r)} live"
    return None, ""


def main():
    results_path, meta_path, json_out, png_out = sys.argv[1:5]
    records = load(results_path)
    with open(meta_path) as f:
        meta = json.load(f)
    runs = [r for r in records if r["kind"] == "wrk"]
    ceilings = {(r["stack"], r["name"]): r for r in records if r["kind"] == "ceiling"}
    procs = [r for r in records if r["kind"] == "process"]
    by_key = {}
    for r in runs:
        r["size"] = "large" if r.get("large") else "small"
        by_key[(r["binary"], r["stack"], r["scenario"], r["connections"], r["size"])] = r
    has_baseline = any(r["binary"] == "baseline" for r in runs)

    # The table: the new binary's lines, each with its ceiling ratio and,
    # with --baseline, its throughput against the baseline's same line.
    head = ["scenario", "stack", "rps", "p50", "p99", "ratio to its ceiling"]
    if has_baseline:
        head += ["new/baseline rps", "new/baseline p99"]
    head.append("errors")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        if r["binary"] != "new":
            continue
        value, text = ratio(r, by_key, ceilings)
        r["ratio_to_ceiling"] = value
        r["ratio_text"] = text
        errors = sum(r["errors"].values())
        label = f"{r['label']}, c{r['connections']}"
        if r.get("rows"):
            label += f", {fmt_rows(r['rows'])} rows"
        cells = [label, r["stack"], fmt_rps(r["rps"]), fmt_us(r["p50_us"]), fmt_us(r["p99_us"]), text]
        if has_baseline:
            base = by_key.get(("baseline", r["stack"], r["scenario"], r["connections"], r["size"]))
            if base and base["rps"] and base["p99_us"]:
                r["vs_baseline_rps"] = r["rps"] / base["rps"]
                r["vs_baseline_p99"] = r["p99_us"] / base["p99_us"]
                cells += [fmt_ratio(r["vs_baseline_rps"]), fmt_ratio(r["vs_baseline_p99"])]
            else:
                cells += ["—", "—"]
        cells.append(f"{errors} of {r['requests']}" if errors else "0")
        lines.append("| " + " | ".join(cells) + " |")
    for (stack, name), c in sorted(ceilings.items()):
        what = {"pgbench": "ceiling: pgbench, user + outbox row per transaction, c64",
                "sqlite": "ceiling: SQLite, user + outbox row per transaction (WAL, synchronous=NORMAL)"}[name]
        cells = [what, stack, fmt_rps(c["tps"]), "", "", ""] + (["", ""] if has_baseline else []) + [""]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))

    if procs:
        print()
        print("| binary | stack | start-up (exec to ready) | idle RSS | peak RSS |")
        print("|---|---|---|---|---|")
        for p in procs:
            print(f"| {p['binary']} | {p['stack']} | {p['startup_ms']:.0f} ms | "
                  f"{p['idle_rss_kb'] / 1024:.1f} MB | {p['peak_rss_kb'] / 1024:.1f} MB |")
    drains = {(r["binary"], r["stack"]): r for r in records if r["kind"] == "drain"}
    e2es = {(r["binary"], r["stack"]): r for r in records if r["kind"] == "e2e"}
    if drains or e2es:
        print()
        print("| binary | stack | consumer drain | end-to-end p50 | end-to-end p99 | events/s meanwhile "
              "| mean delay meanwhile (bus had it / worker took it / activity applied) |")
        print("|---|---|---|---|---|---|---|")
        for key in sorted(set(drains) | set(e2es), key=lambda k: (k[0] != "new", k[1])):
            d, e = drains.get(key), e2es.get(key)
            drain = (f"{fmt_rps(d['rate'])} msg/s ({d['processed']} messages"
                     f"{' from the topic' if d.get('replayed') else ''}"
                     f"{'' if d['drained'] else ', not drained'})") if d else ""
            bg = e.get("background") if e else None
            st = (e.get("stages") or {}) if e else {}
            stages = " / ".join(fmt_us(st[k]["mean_us"]) if k in st else "—"
                                for k in ("relayed", "consumed", "applied")) if st else ""
            if e and "failed" in e:
                p50, p99 = f"gave up: {e['failed']}", "—"
            else:
                p50, p99 = (fmt_us(e["p50_us"]), fmt_us(e["p99_us"])) if e else ("", "")
            print(f"| {key[0]} | {key[1]} | {drain} | {p50} | {p99} | "
                  f"{fmt_rps(bg['rps']) if bg else ''} | {stages} |")

    brokered = [r for r in runs if r.get("broker_cpu") is not None and r["scenario"] in WRITES | {"mix"}]
    idles = [r for r in records if r["kind"] == "idle"]
    if brokered or idles:
        print()
        print("| binary | broker's share of a core | while |")
        print("|---|---|---|")
        for r in brokered:
            print(f"| {r['binary']} | {r['broker_cpu']:.2f} | {r['label']}, c{r['connections']}, "
                  f"{fmt_rps(r['rps'])} rps |")
        for r in idles:
            fetches = r.get("fetches_per_s_per_instance")
            fetches = "?" if fetches is None else f"{fetches:.1f}"
            print(f"| {r['binary']} | {r['broker_cpu']:.3f} | {r['instances']} idle instances, "
                  f"{fetches} consumer fetches/s each, over {r['seconds']:.0f} s |")

    with open(json_out, "w") as f:
        json.dump({**meta, "results": runs, "ceilings": list(ceilings.values()), "processes": procs,
                   "drain": [r for r in records if r["kind"] == "drain"],
                   "end_to_end": [r for r in records if r["kind"] == "e2e"], "idle": idles},
                  f, indent=2)
    plot(runs, png_out, meta)


def plot(runs, png_out, meta):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = []
    for r in runs:
        label = f"{r['label']} c{r['connections']}" + (f" ({fmt_rows(r['rows'])})" if r.get("rows") else "")
        r["plot_label"] = label
        if label not in labels:
            labels.append(label)
    series = []
    for binary in ("new", "baseline"):
        for stack in ("real", "embedded"):
            if any(r["binary"] == binary and r["stack"] == stack for r in runs):
                series.append((binary, stack))
    width = 0.8 / max(1, len(series))
    colours = {("new", "real"): "tab:blue", ("new", "embedded"): "tab:orange",
               ("baseline", "real"): "lightsteelblue", ("baseline", "embedded"): "navajowhite"}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(14, 9), sharex=True)
    for i, (binary, stack) in enumerate(series):
        index = {r["plot_label"]: r for r in runs if r["binary"] == binary and r["stack"] == stack}
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        rps = [index[l]["rps"] if l in index else 0 for l in labels]
        p50 = [index[l]["p50_us"] / 1000 if l in index else float("nan") for l in labels]
        p99 = [index[l]["p99_us"] / 1000 if l in index else float("nan") for l in labels]
        name = f"{stack}" + (f" ({binary})" if len(series) > 2 else "")
        top.bar(xs, rps, width, label=name, color=colours[(binary, stack)])
        bottom.bar(xs, p99, width, color=colours[(binary, stack)], alpha=0.45,
                   label=f"{name} p99")
        bottom.scatter(xs, p50, marker="_", s=120, color="black", zorder=3,
                       label="p50" if i == 0 else None)
    top.set_yscale("log")
    top.set_ylabel("requests/s (log)")
    top.legend(fontsize=8)
    top.grid(axis="y", alpha=0.3)
    bottom.set_yscale("log")
    bottom.set_ylabel("latency ms (log): bar p99, tick p50")
    bottom.legend(fontsize=8, ncol=3)
    bottom.grid(axis="y", alpha=0.3)
    bottom.set_xticks(range(len(labels)))
    bottom.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    title = f"highload {meta.get('commit', '')[:7]}"
    if meta.get("baseline_commit"):
        title += f" vs baseline {meta['baseline_commit'][:7]}"
    title += f" — {meta.get('mode', '')}, {meta.get('seconds', '')} s per line, wrk -t2, {meta.get('cpus', '')} cores"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png_out, dpi=72)


if __name__ == "__main__":
    main()
