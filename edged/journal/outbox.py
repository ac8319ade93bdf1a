"""The outbox: replies, events and dead letters waiting for the broker, bounded in rows and
age. The rows are counted in memory (:class:`Tally`) so that every enqueue need not count."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlean as sqlite3

from .rows import OutboxRow, OutRow, Settings

log = logging.getLogger("edged.journal")


@dataclass(slots=True)
class Tally:
    """Outbox rows now and rows shed so far. Changed on the writer thread only, which puts
    it back (save/restore) when the work that changed it rolls back."""

    rows: int = 0
    dropped: int = 0

    def save(self) -> tuple[int, ...]:
        return self.rows, self.dropped

    def restore(self, saved: tuple[int, ...]) -> None:
        self.rows, self.dropped = saved

    def recount(self, conn: sqlite3.Connection) -> None:
        self.rows = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]


def enqueue(conn: sqlite3.Connection, cfg: Settings, tally: Tally, rows: list[OutRow]) -> None:
    add(conn, cfg, tally, rows, None, cfg.clock())


def add(conn: sqlite3.Connection, cfg: Settings, tally: Tally, rows: list[OutRow],
        inbox_id: int | None, now: float) -> None:
    """Queue ``rows`` (for ``inbox_id``, if any) in the caller's transaction."""
    if not rows:
        return
    conn.executemany(
        "INSERT INTO outbox(topic, payload, props, qos, retain, priority, kind, inbox_id, "
        "created_at, expires_at) VALUES(?,?,?,?,?,?,?,?,?,?)",
        [(r.topic, r.payload, r.props, r.qos, int(r.retain), r.priority, r.kind, inbox_id,
          now, now + cfg.outbox_ttl_s) for r in rows],
    )
    tally.rows += len(rows)
    if tally.rows > cfg.outbox_max_rows:
        tally.recount(conn)
    if tally.rows > cfg.outbox_max_rows:
        # Bounded: shed the lowest-priority, oldest rows (events before replies).
        cur = conn.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox "
            "ORDER BY priority ASC, id ASC LIMIT ?)",
            (tally.rows - cfg.outbox_max_rows,),
        )
        tally.dropped += cur.rowcount
        tally.rows -= cur.rowcount
        log.warning("outbox full: dropped %d lowest-priority rows", cur.rowcount)


def fetch(conn: sqlite3.Connection, cfg: Settings, tally: Tally, limit: int,
          exclude: tuple[int, ...]) -> list[OutboxRow]:
    """The next rows to publish (priority first), leaving out those in flight (``exclude``);
    expired rows are dropped on the way."""
    now = cfg.clock()
    expired = conn.execute("DELETE FROM outbox WHERE expires_at < ?", (now,)).rowcount
    if expired:
        tally.rows -= expired
        log.warning("outbox: %d row(s) expired undelivered", expired)
    rows = conn.execute(
        "SELECT id, topic, payload, props, qos, retain, priority, kind FROM outbox "
        "ORDER BY priority DESC, id LIMIT ?",
        (limit + len(exclude),),
    ).fetchall()
    ex = set(exclude)
    return [OutboxRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7])
            for r in rows if r[0] not in ex][:limit]


def done(conn: sqlite3.Connection, tally: Tally, ids: list[int]) -> None:
    for i in ids:
        tally.rows -= conn.execute("DELETE FROM outbox WHERE id = ?", (i,)).rowcount
