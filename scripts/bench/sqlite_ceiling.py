"""SQLite's one-row-per-transaction rate: the ceiling of the embedded stack's
writes. Creates a scratch database with the service's schema
(migrations/sqlite/*.sql), in WAL mode with synchronous=NORMAL as the
service opens it, then for SECONDS commits one user and its outbox row per
transaction, as POST /api/v1/users does. Prints one JSON object.

    python3 sqlite_ceiling.py DB_PATH MIGRATIONS_DIR SECONDS
"""

import json
import os
import sqlite3
import sys
import time
import uuid


def main() -> None:
    path, migrations, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    # isolation_level=None: transactions are opened and committed explicitly.
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    for name in sorted(os.listdir(migrations)):
        if name.endswith(".sql"):
            with open(os.path.join(migrations, name)) as f:
                db.executescript(f.read())
    payload = json.dumps({"id": str(uuid.uuid4()), "type": "user_created", "data": "{}",
                          "timestamp": "2026-01-01T00:00:00.000000Z"})
    now = "2026-01-01T00:00:00.000000Z"
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        user = uuid.uuid4()
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO users (id, email, first_name, last_name, created_at, updated_at)"
            " VALUES (?, ?, 'Bench', 'User', ?, ?)",
            (user.bytes, f"{user}@sqlite.example", now, now))
        db.execute(
            "INSERT INTO outbox (message_id, key, payload, created_at) VALUES (?, ?, ?, ?)",
            (uuid.uuid4().bytes, str(user), payload, now))
        db.execute("COMMIT")
        count += 1
    elapsed = time.perf_counter() - start
    db.close()
    print(json.dumps({"transactions": count, "seconds": round(elapsed, 3),
                      "tps": round(count / elapsed, 1),
                      "mean_us": round(elapsed / count * 1e6, 1)}))


if __name__ == "__main__":
    main()
