"""Scheduled messages (reminders): kept durably, moved to the outbox when due."""

from __future__ import annotations

import sqlean as sqlite3

from . import outbox
from .outbox import Tally
from .rows import OutRow, Settings


def schedule(conn: sqlite3.Connection, cfg: Settings, key: str, due: float, topic: str,
             payload: bytes, priority: int) -> None:
    conn.execute("INSERT OR REPLACE INTO scheduled VALUES(?,?,?,?,?,?)",
                 (key, due, topic, payload, priority, cfg.clock()))


def unschedule(conn: sqlite3.Connection, key: str) -> bool:
    return conn.execute("DELETE FROM scheduled WHERE key = ?", (key,)).rowcount > 0


def scheduled(conn: sqlite3.Connection, prefix: str) -> list[tuple[str, float]]:
    return conn.execute("SELECT key, due FROM scheduled WHERE key GLOB ? ORDER BY due",
                        (prefix.replace("*", "") + "*",)).fetchall()


def release_due(conn: sqlite3.Connection, cfg: Settings,
                tally: Tally) -> tuple[int, float | None]:
    now = cfg.clock()
    rows = conn.execute("SELECT key, topic, payload, priority FROM scheduled "
                        "WHERE due <= ?", (now,)).fetchall()
    if rows:
        conn.executemany("DELETE FROM scheduled WHERE key = ?", [(r[0],) for r in rows])
        outbox.add(conn, cfg, tally, [OutRow(topic=r[1], payload=r[2], priority=r[3],
                                             kind="scheduled") for r in rows], None, now)
    nxt = conn.execute("SELECT min(due) FROM scheduled").fetchone()[0]
    return len(rows), nxt
