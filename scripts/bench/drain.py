"""Consumer drain rate: after the write scenarios, the messages they caused
are still being relayed and processed. Samples GET /metrics every 250 ms
until the outbox is empty, no worker has a message queued and
events_processed_total has stopped moving for 3 s, then prints one JSON
object: the messages left when the writes stopped and the rate at which
they were processed.

    python3 drain.py BASE_URL TIMEOUT_SECONDS
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
    base, timeout = sys.argv[1], float(sys.argv[2])
    start = time.perf_counter()
    first = sample(base)
    last_change, last = start, first
    while time.perf_counter() - start < timeout:
        time.sleep(0.25)
        now = sample(base)
        if now["processed"] != last["processed"]:
            last_change = time.perf_counter()
        last = now
        quiet = time.perf_counter() - last_change >= 3
        if quiet and now["backlog"] == 0 and now["queue"] == 0:
            break
    processed = last["processed"] - first["processed"]
    seconds = max(last_change - start, 1e-3)
    print(json.dumps({
        # Unpublished rows plus published but not yet processed messages.
        "backlog_at_start": int(first["backlog"] + max(0, first["published"] - first["processed"])),
        "processed": int(processed), "seconds": round(seconds, 3),
        "rate": round(processed / seconds, 1) if processed else 0.0,
        "drained": last["backlog"] == 0 and last["queue"] == 0,
    }))


if __name__ == "__main__":
    main()
