"""The inbox and its dedup memory (``seen``).

A message goes received -> processing -> done | dead; a failed attempt goes back to received
with a back-off (``not_before``) until its attempts are used up, then dead (quarantined + DLQ).
Its replies and dead letters are queued in the same transaction as its change of state.
"""

from __future__ import annotations

import msgspec
import sqlean as sqlite3

from . import outbox
from .outbox import Tally
from .rows import InboxRow, Incoming, Meta, OutRow, Settings

# A DUP delivery matches a fingerprint journaled at most this many inbox rows before it: the
# broker redelivers only what was in flight (receive_maximum at a time), and it reuses a packet
# id only after 65535 deliveries, so an older fingerprint could be another message's.
DUP_WINDOW = 32768

_META_ENC = msgspec.msgpack.Encoder()
_META_DEC = msgspec.msgpack.Decoder(Meta)


def accept(conn: sqlite3.Connection, cfg: Settings, tally: Tally, items: list[Incoming],
           dup_window: int) -> list[int | None]:
    """Journal ``items``; the inbox id of each, or None for a duplicate."""
    now = cfg.clock()
    out: list[int | None] = []
    last = conn.execute("SELECT max(id) FROM inbox").fetchone()[0] or 0
    for it in items:
        if _duplicate(conn, it, now, last, dup_window):
            out.append(None)
            continue
        state = "received" if it.outcome is None else ("done" if it.outcome == "sink" else
                                                        "dead")
        cur = conn.execute(
            "INSERT INTO inbox(key, topic, payload, meta, priority, state, error, "
            "received_at, updated_at) VALUES(?,?,?,?,?,?,?,?,?)",
            (it.key, it.topic, it.payload, _META_ENC.encode(it.meta), it.priority, state,
             f"{it.error_code}: {it.error_message}" if it.error_code else None, now, now),
        )
        inbox_id = last = cur.lastrowid
        conn.executemany(
            "INSERT OR REPLACE INTO seen(key, inbox_id, expires) VALUES(?,?,?)",
            [(key, inbox_id, now + ttl) for key, ttl in _keys_to_keep(cfg, it)],
        )
        outbox.add(conn, cfg, tally, it.outbox, inbox_id, now)
        out.append(inbox_id)
    return out


def _duplicate(conn: sqlite3.Connection, it: Incoming, now: float, last: int,
               dup_window: int) -> bool:
    """Its request key is remembered, or it is the broker's redelivery (DUP) of a delivery
    journaled among the last ``dup_window`` rows. The fingerprint holds a packet id, which
    the broker reuses after 65535 deliveries: older ones must not match."""
    if not it.key_is_content:
        row = conn.execute("SELECT expires FROM seen WHERE key = ?", (it.key,)).fetchone()
        if row is not None and row[0] > now:
            return True
    fingerprint = it.key if it.key_is_content else it.fingerprint
    if not (it.redelivered and fingerprint):
        return False  # the same words again, not a redelivery: a new request
    row = conn.execute("SELECT expires, inbox_id FROM seen WHERE key = ?",
                       (fingerprint,)).fetchone()
    return row is not None and row[0] > now and (row[1] or 0) > last - dup_window


def _keys_to_keep(cfg: Settings, it: Incoming) -> list[tuple[str, float]]:
    """(key, how long) to remember: an id for the retention period, correlation data for
    its window, none for a refusal the device may retry with the same key; and the
    fingerprint wherever the kept key does not cover the broker's redelivery (QoS 0 is
    never redelivered)."""
    keys: list[tuple[str, float]] = []
    windowed = it.key.startswith("c:")
    if not it.key_is_content and it.consumes_key:
        keys.append((it.key, cfg.correlation_window_s if windowed else cfg.retention_s))
    fingerprint = it.key if it.key_is_content else it.fingerprint
    if fingerprint and it.meta.qos > 0 and (
            it.key_is_content or windowed or not it.consumes_key):
        keys.append((fingerprint, cfg.dedup_window_s))
    return keys


def claim(conn: sqlite3.Connection, cfg: Settings, limit: int) -> list[InboxRow]:
    now = cfg.clock()
    rows = conn.execute(
        "UPDATE inbox SET state = 'processing', attempts = attempts + 1, updated_at = ? "
        "WHERE id IN (SELECT id FROM inbox WHERE state = 'received' AND not_before <= ? "
        "ORDER BY priority DESC, id LIMIT ?) "
        "RETURNING id, key, topic, payload, meta, priority, attempts",
        (now, now, limit),
    ).fetchall()
    rows.sort(key=lambda r: (-r[5], r[0]))
    return [InboxRow(r[0], r[1], r[2], r[3], _META_DEC.decode(r[4]), r[5], r[6]) for r in rows]


def next_ready_at(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT min(not_before) FROM inbox WHERE state = 'received'").fetchone()
    return row[0] if row and row[0] is not None else None


def complete(conn: sqlite3.Connection, cfg: Settings, tally: Tally, inbox_id: int,
             rows: list[OutRow]) -> None:
    now = cfg.clock()
    conn.execute(
        "UPDATE inbox SET state = 'done', updated_at = ?, error = NULL WHERE id = ?",
        (now, inbox_id),
    )
    outbox.add(conn, cfg, tally, rows, inbox_id, now)


def retry_later(conn: sqlite3.Connection, cfg: Settings, inbox_id: int, error: str,
                delay: float) -> None:
    now = cfg.clock()
    conn.execute(
        "UPDATE inbox SET state = 'received', not_before = ?, error = ?, updated_at = ? "
        "WHERE id = ?",
        (now + delay, error, now, inbox_id),
    )


def release(conn: sqlite3.Connection, ids: list[int]) -> None:
    conn.executemany(
        "UPDATE inbox SET state = 'received', attempts = max(attempts - 1, 0) "
        "WHERE id = ? AND state = 'processing'",
        [(i,) for i in ids],
    )


def kill(conn: sqlite3.Connection, cfg: Settings, tally: Tally, inbox_id: int, error: str,
         rows: list[OutRow]) -> None:
    now = cfg.clock()
    conn.execute(
        "UPDATE inbox SET state = 'dead', error = ?, updated_at = ? WHERE id = ?",
        (error, now, inbox_id),
    )
    outbox.add(conn, cfg, tally, rows, inbox_id, now)


def recover(conn: sqlite3.Connection, max_attempts: int) -> tuple[int, list[InboxRow]]:
    poisoned = conn.execute(
        "SELECT id, key, topic, payload, meta, priority, attempts FROM inbox "
        "WHERE state = 'processing' AND attempts >= ?",
        (max_attempts,),
    ).fetchall()
    cur = conn.execute(
        "UPDATE inbox SET state = 'received' WHERE state = 'processing' AND attempts < ?",
        (max_attempts,),
    )
    return cur.rowcount, [
        InboxRow(r[0], r[1], r[2], r[3], _META_DEC.decode(r[4]), r[5], r[6]) for r in poisoned
    ]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    out = {s: 0 for s in ("received", "processing", "done", "dead")}
    for state, n in conn.execute("SELECT state, count(*) FROM inbox GROUP BY state"):
        out[state] = n
    out["outbox"] = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    return out
