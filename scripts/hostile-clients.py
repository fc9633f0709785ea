#!/usr/bin/env python3
"""Hostile clients against a running service, with the figures that say
whether it held.

  scripts/hostile-clients.py slow-bodies  URL [--connections 200] [--seconds 20]
  scripts/hostile-clients.py slow-readers URL --pid PID [--connections 200]

slow-bodies: CONNECTIONS clients send a POST's head and then its body one
byte every 5 s (a new connection as soon as one is closed), while one
client sends ordinary writes for SECONDS; prints the writes' success rate
and how the slow uploads were answered. Exits 1 if fewer than 95% of the
writes succeeded.

slow-readers: stores 100 events whose data is 64 KiB of U+0001 (a page of
them is about 40 MB of JSON), then CONNECTIONS clients ask for that page
and never read; samples the service's resident memory (of PID, on this
machine) and counts the connections the service still holds open, until
all are closed or --seconds (60) pass. Prints the peak memory and when the
last connection was closed. Exits 1 if the peak passed --max-rss-mb (100)
or a connection outlived --deadline (HTTP_WRITE_TIMEOUT, 30 s) by 5 s.

Standard library only.
"""

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
import uuid


def target(url):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        sys.exit("hostile-clients: only http:// URLs")
    return parts.hostname, parts.port or 80


async def exchange(host, port, method, path, body=None, timeout=10.0):
    """One request on its own connection: (status, response body), or
    (None, None) on failure."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return None, None
    try:
        data = json.dumps(body).encode() if body is not None else b""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        rest = await asyncio.wait_for(reader.read(), timeout)
        status = int(line.split()[1]) if line else None
        return status, rest.split(b"\r\n\r\n", 1)[-1]
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        return None, None
    finally:
        writer.close()


async def request(host, port, method, path, body=None, timeout=10.0):
    """One request on its own connection; the status, or None on failure."""
    status, _ = await exchange(host, port, method, path, body, timeout)
    return status


async def slow_upload(host, port, answers, stop):
    """Sends a body a byte every 5 s; reconnects when closed."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        writer.write(
            b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000\r\n\r\n{"
        )
        try:
            await writer.drain()
            read = asyncio.ensure_future(reader.readline())
            while not stop.is_set():
                done, _ = await asyncio.wait({read}, timeout=5)
                if done:
                    line = read.result()
                    answer = line.split()[1].decode() if line else "closed"
                    answers[answer] = answers.get(answer, 0) + 1
                    break
                writer.write(b" ")
                await writer.drain()
            read.cancel()
        except (OSError, IndexError):
            answers["closed"] = answers.get("closed", 0) + 1
        finally:
            writer.close()


async def slow_bodies(args):
    host, port = target(args.url)
    stop = asyncio.Event()
    answers = {}
    uploads = [asyncio.ensure_future(slow_upload(host, port, answers, stop))
               for _ in range(args.connections)]
    await asyncio.sleep(2)  # every slow upload connected and started
    sent = succeeded = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        status = await request(host, port, "POST", "/api/v1/users", {
            "email": f"w{uuid.uuid4().hex}@example.com",
            "first_name": "Ordinary", "last_name": "Writer",
        })
        sent += 1
        succeeded += status == 201
    stop.set()
    await asyncio.gather(*uploads, return_exceptions=True)
    rate = 100.0 * succeeded / max(sent, 1)
    print(f"slow uploads: {args.connections} at a time; answered: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items())))
    print(f"ordinary writes: {succeeded} of {sent} succeeded ({rate:.1f}%)")
    return 0 if rate > 95.0 else 1


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def held_open(port, local_ports):
    """How many of these client connections the service still holds
    established (its side of each, from /proc/net/tcp)."""
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port \
                    and int(remote.rsplit(":", 1)[1], 16) in local_ports:
                held += 1
    return held


async def slow_readers(args):
    host, port = target(args.url)
    body = {"email": f"reader{uuid.uuid4().hex}@example.com",
            "first_name": "Slow", "last_name": "Reader"}
    status, created = await exchange(host, port, "POST", "/api/v1/users", body)
    if status != 201:
        sys.exit(f"hostile-clients: could not create a user ({status})")
    user = json.loads(created)["id"]
    payload = "\u0001" * 65536
    for i in range(100):
        status = await request(host, port, "POST", "/api/v1/events",
                               {"user_id": user, "type": "bulky", "data": payload}, timeout=30)
        if status != 201:
            sys.exit(f"hostile-clients: event {i} answered {status}")
    path = f"/api/v1/events?user_id={user}&limit=100"
    check = await request(host, port, "GET", path, timeout=60)
    print(f"the page: {path} answers {check}")

    base = rss_mb(args.pid)
    writers = []
    local_ports = set()
    for _ in range(args.connections):
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        local_ports.add(sock.getsockname()[1])
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        writers.append(writer)
    started = time.monotonic()
    await asyncio.gather(*(w.drain() for w in writers))
    peak = base
    last_open = started
    while time.monotonic() - started < args.seconds:
        peak = max(peak, rss_mb(args.pid))
        if held_open(port, local_ports):
            last_open = time.monotonic()
        elif time.monotonic() - started > 1:
            break
        await asyncio.sleep(0.25)
    closed_after = last_open - started
    still_open = held_open(port, local_ports)
    for writer in writers:
        writer.close()
    print(f"slow readers: {args.connections}, each asking for the ~40 MB page and reading nothing")
    print(f"resident memory: {base:.0f} MB before, {peak:.0f} MB at its peak")
    print(f"connections held by the service: last closed {closed_after:.1f} s after the requests"
          + (f"; {still_open} still open after {args.seconds} s" if still_open else ""))
    ok = peak < args.max_rss_mb and not still_open and closed_after <= args.deadline + 5
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["slow-bodies", "slow-readers"])
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--pid", type=int, help="the service's process (slow-readers)")
    parser.add_argument("--max-rss-mb", type=float, default=100.0)
    parser.add_argument("--deadline", type=float, default=30.0,
                        help="the service's HTTP_WRITE_TIMEOUT, in seconds")
    args = parser.parse_args()
    if args.mode == "slow-bodies":
        args.seconds = args.seconds or 20
        return asyncio.run(slow_bodies(args))
    if args.pid is None:
        parser.error("slow-readers needs --pid")
    args.seconds = args.seconds or 60
    return asyncio.run(slow_readers(args))


if __name__ == "__main__":
    sys.exit(main())
