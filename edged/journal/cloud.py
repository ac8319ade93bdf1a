"""Cloud escalations waiting for connectivity, and the daily cloud usage they count against
(see :mod:`edged.escalation`)."""

from __future__ import annotations

import sqlean as sqlite3

from . import outbox
from .outbox import Tally
from .rows import Escalation, OutRow, Settings


def escalation_add(conn: sqlite3.Connection, e: Escalation) -> int | None:
    cur = conn.execute(
        "INSERT OR IGNORE INTO escalations(request_id, agent, device, reply_topic, props, "
        "body, priority, created, expires) VALUES (?,?,?,?,?,?,?,?,?)",
        (e.request_id, e.agent, e.device, e.reply_topic, e.props, e.body, e.priority,
         e.created, e.expires))
    return cur.lastrowid if cur.rowcount else None


def escalations(conn: sqlite3.Connection, cfg: Settings, limit: int) -> list[Escalation]:
    rows = conn.execute(
        "SELECT id, request_id, agent, device, reply_topic, props, body, priority, "
        "created, expires, attempts FROM escalations WHERE expires >= ? ORDER BY id "
        "LIMIT ?", (cfg.clock(), limit)).fetchall()
    return [Escalation(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], attempts=r[10],
                       id=r[0]) for r in rows]


def escalation_done(conn: sqlite3.Connection, cfg: Settings, tally: Tally, esc_id: int,
                    rows: list[OutRow]) -> bool:
    if conn.execute("DELETE FROM escalations WHERE id = ?", (esc_id,)).rowcount == 0:
        return False
    outbox.add(conn, cfg, tally, rows, None, cfg.clock())
    return True


def escalation_failed(conn: sqlite3.Connection, esc_id: int, max_attempts: int) -> bool:
    conn.execute("UPDATE escalations SET attempts = attempts + 1 WHERE id = ?", (esc_id,))
    return conn.execute("DELETE FROM escalations WHERE id = ? AND attempts >= ?",
                        (esc_id, max_attempts)).rowcount > 0


def escalations_expire(conn: sqlite3.Connection, cfg: Settings) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute(
        "DELETE FROM escalations WHERE expires < ? RETURNING request_id, device",
        (cfg.clock(),))]


def escalation_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM escalations").fetchone()[0])


def usage(conn: sqlite3.Connection, day: str) -> tuple[int, int]:
    rows = conn.execute("SELECT requests, tokens FROM cloud_usage WHERE day = ?",
                        (day,)).fetchall()
    return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)


def spend(conn: sqlite3.Connection, day: str, requests: int, tokens: int) -> tuple[int, int]:
    conn.execute("INSERT INTO cloud_usage VALUES (?,?,?) ON CONFLICT(day) DO UPDATE SET "
                 "requests = requests + excluded.requests, "
                 "tokens = tokens + excluded.tokens", (day, requests, tokens))
    conn.execute("DELETE FROM cloud_usage WHERE day < date(?, '-60 days')", (day,))
    r = conn.execute("SELECT requests, tokens FROM cloud_usage WHERE day = ?",
                     (day,)).fetchone()
    return int(r[0]), int(r[1])
