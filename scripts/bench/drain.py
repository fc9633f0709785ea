"""Consumer drain rate. Samples GET /metrics every 100 ms until the outbox
is empty, no worker has a message queued and events_processed_total has
stopped moving for 3 s, then prints one JSON object: the messages left
when it started and the rate at which they were processed.

    python3 drain.py BASE_URL TIMEOUT_SECONDS             messages left by the writes
    python3 drain.py --from-first BASE_URL TIMEOUT_SECONDS a backlog on the topic

With --from-first the clock starts at the first processed message: the
instance has just started on a topic that holds a backlog, and its
start-up and joining the consumer group are not part of the rate.
"""

import json
import sys
import time
import urllib.request


def sample(base):
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    values = {"processed": 0.0, "published": 0.0, "backlog": 0.0, "queue": 0.0}
    names = {"events_processed_total": "processed", "events_published_total": "published",
             "outbox_backlog_rows": "backlog", "worker_queue_depth": "queue"}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            values[names[name]] += float(line.rsplit(" ", 1)[1])
    return values


def main() -> None:
    args = sys.argv[1:]
    from_first = args[:1] == ["--from-first"]
    if from_first:
        args = args[1:]
    base, timeout = args[0], float(args[1])
    start = time.perf_counter()
    first = sample(base)
    last_change, last = start, first
    if from_first:
        # Nothing counts until the first message is processed.
        while last["processed"] == first["processed"] and time.perf_counter() - start < timeout:
            time.sleep(0.01)
            last = sample(base)
        start = last_change = time.perf_counter()
    counted_from = last["processed"]
    while time.perf_counter() - start < timeout:
        time.sleep(0.1)
        now = sample(base)
        if now["processed"] != last["processed"]:
            last_change = time.perf_counter()
        last = now
        quiet = time.perf_counter() - last_change >= 3
        if quiet and now["backlog"] == 0 and now["queue"] == 0:
            break
    processed = last["processed"] - first["processed"]
    seconds = max(last_change - start, 1e-3)
    rate = (last["processed"] - counted_from) / seconds
    backlog = processed if from_first else first["backlog"] + max(0, first["published"] - first["processed"])
    print(json.dumps({
        # Unpublished rows plus published but not yet processed messages
        # (with --from-first: the messages the topic held).
        "backlog_at_start": int(backlog),
        "processed": int(processed), "seconds": round(seconds, 3),
        "rate": round(rate, 1),
        "drained": last["backlog"] == 0 and last["queue"] == 0,
    }))


if __name__ == "__main__":
    main()
