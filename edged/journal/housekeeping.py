"""Work across every table: dropping what retention no longer needs, and moving every
pending deadline when the wall clock jumps."""

from __future__ import annotations

import sqlean as sqlite3

from .outbox import Tally
from .rows import Settings


def cleanup(conn: sqlite3.Connection, cfg: Settings, tally: Tally,
            dup_window: int) -> dict[str, int]:
    now = cfg.clock()
    cutoff = now - cfg.retention_s
    old = [r[0] for r in conn.execute(
        "SELECT id FROM inbox WHERE state IN ('done', 'dead') AND updated_at < ?", (cutoff,)
    )]
    conn.executemany("DELETE FROM steps WHERE inbox_id = ?", [(i,) for i in old])
    conn.execute("DELETE FROM tool_calls WHERE ts < ?", (cutoff,))
    conn.executemany("DELETE FROM inbox WHERE id = ?", [(i,) for i in old])
    seen = conn.execute("DELETE FROM seen WHERE expires < ?", (now,)).rowcount
    last = conn.execute("SELECT max(id) FROM inbox").fetchone()[0]
    if last is not None:  # fingerprints no DUP can match any more (see inbox._duplicate)
        seen += conn.execute("DELETE FROM seen WHERE key GLOB 'h:*' AND inbox_id <= ?",
                             (last - dup_window,)).rowcount
    tally.recount(conn)
    return {"inbox": len(old), "seen": seen}


def shift_times(conn: sqlite3.Connection, delta: float) -> dict[str, int]:
    return {
        "outbox": conn.execute("UPDATE outbox SET expires_at = expires_at + ?, "
                               "created_at = created_at + ?", (delta, delta)).rowcount,
        "retries": conn.execute(
            "UPDATE inbox SET not_before = not_before + ? WHERE state = 'received' "
            "AND not_before > 0", (delta,)).rowcount,
        "seen": conn.execute("UPDATE seen SET expires = expires + ?", (delta,)).rowcount,
        "scheduled": conn.execute("UPDATE scheduled SET due = due + ?",
                                  (delta,)).rowcount,
        "escalations": conn.execute(
            "UPDATE escalations SET created = created + ?, expires = expires + ?",
            (delta, delta)).rowcount,
    }
