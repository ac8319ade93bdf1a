"""Durable inbox, outbox, dedup, tool-step log and dead letters in one SQLite file (WAL).

All access goes through one writer thread that groups whatever work is queued into a single
transaction (group commit): many messages cost one fsync, and the event loop never blocks on
disk. Each queued operation runs in its own SAVEPOINT, so one failing operation does not undo
its neighbours. A commit failure (disk full, I/O error) fails every operation of the group with
a :class:`StorageError`; the daemon's calls wait such faults out (``wait_out_faults``: retried
with back-off, ``degraded`` meanwhile), so nothing is acked or lost until the disk takes them.

Inbox states: received -> processing -> done | dead; a failed attempt goes back to received
with a back-off (``not_before``) until ``max_attempts``, then dead (quarantined + DLQ).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import sqlean as sqlite3

from .files import secure_dir, secure_sqlite
from .messages import DeadLetter

DLQ_PAYLOAD_MAX = 4096  # bytes of a payload a dead letter carries; beyond: size + SHA-256

WAL_LIMIT = 16 << 20  # bytes of WAL kept after a checkpoint
log = logging.getLogger("edged.journal")
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox(
  id INTEGER PRIMARY KEY,
  key TEXT NOT NULL,
  topic TEXT NOT NULL,
  payload BLOB NOT NULL,
  meta BLOB NOT NULL,
  priority INTEGER NOT NULL DEFAULT 5,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  not_before REAL NOT NULL DEFAULT 0,
  error TEXT,
  received_at REAL NOT NULL,
  updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_ready ON inbox(priority DESC, id) WHERE state = 'received';
CREATE INDEX IF NOT EXISTS inbox_open ON inbox(state) WHERE state IN ('received', 'processing');
CREATE INDEX IF NOT EXISTS inbox_age ON inbox(updated_at) WHERE state IN ('done', 'dead');
CREATE TABLE IF NOT EXISTS seen(
  key TEXT PRIMARY KEY, inbox_id INTEGER, expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_expires ON seen(expires);
CREATE TABLE IF NOT EXISTS outbox(
  id INTEGER PRIMARY KEY,
  topic TEXT NOT NULL,
  payload BLOB NOT NULL,
  props BLOB,
  qos INTEGER NOT NULL DEFAULT 1,
  retain INTEGER NOT NULL DEFAULT 0,
  priority INTEGER NOT NULL,
  kind TEXT NOT NULL,
  inbox_id INTEGER,
  created_at REAL NOT NULL,
  expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox(priority DESC, id);
CREATE TABLE IF NOT EXISTS tool_calls(
  id INTEGER PRIMARY KEY,
  ts REAL NOT NULL,
  inbox_id INTEGER,
  request_id TEXT,
  device TEXT,
  topic TEXT,
  agent TEXT,
  tool TEXT NOT NULL,
  arguments TEXT,
  outcome TEXT NOT NULL,
  detail TEXT,
  duration_ms REAL
);
CREATE INDEX IF NOT EXISTS tool_calls_device ON tool_calls(device, ts);
CREATE TABLE IF NOT EXISTS scheduled(
  key TEXT PRIMARY KEY,
  due REAL NOT NULL,
  topic TEXT NOT NULL,
  payload BLOB NOT NULL,
  priority INTEGER NOT NULL DEFAULT 5,
  created_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS scheduled_due ON scheduled(due);
CREATE TABLE IF NOT EXISTS escalations(
  id INTEGER PRIMARY KEY,
  request_id TEXT NOT NULL,
  agent TEXT NOT NULL,
  device TEXT NOT NULL,
  reply_topic TEXT NOT NULL,
  props BLOB,
  body BLOB NOT NULL,               -- JSON: the redacted messages and what the reply needs
  priority INTEGER NOT NULL DEFAULT 5,
  created REAL NOT NULL,
  expires REAL NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  UNIQUE(request_id, agent)
);
CREATE TABLE IF NOT EXISTS cloud_usage(
  day TEXT PRIMARY KEY, requests INTEGER NOT NULL, tokens INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS steps(
  inbox_id INTEGER NOT NULL,
  key TEXT NOT NULL,
  state TEXT NOT NULL,
  result BLOB,
  started_at REAL NOT NULL,
  finished_at REAL,
  PRIMARY KEY(inbox_id, key)
) WITHOUT ROWID;
"""

SCHEMA_VERSION = "1"

# Outbox priorities: higher drains first.
PRIO_STATUS = 9
PRIO_DLQ = 4
PRIO_EVENT = 1

# A DUP delivery matches a fingerprint journaled at most this many inbox rows before it: the
# broker redelivers only what was in flight (receive_maximum at a time), and it reuses a packet
# id only after 65535 deliveries, so an older fingerprint could be another message's.
DUP_WINDOW = 32768


class JournalError(Exception):
    pass


class StorageError(JournalError):
    """The disk refused the work: full, locked by another process, an I/O error, a damaged
    page. Nothing of the call was committed, so it may simply be tried again."""


# SQLite primary result codes that are the storage's fault, not the statement's: BUSY,
# LOCKED, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
_STORAGE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})
RETRY_MIN_S, RETRY_MAX_S = 0.05, 5.0  # back-off of writes that wait out a storage fault


def _storage_error(e: Exception) -> StorageError | None:
    code = getattr(e, "sqlite_errorcode", None)
    if not isinstance(e, sqlite3.Error) or code is None or code & 0xFF not in _STORAGE_CODES:
        return None
    hint = " (see `edged journal check`)" if code & 0xFF in (11, 26) else ""
    return StorageError(f"{e}{hint}")


class StepInDoubt(Exception):
    """A journaled step started before a crash and never recorded an outcome.

    It is never re-run: its side effect may already have happened.
    """


class StepFailed(Exception):
    """A journaled step raised on an earlier attempt. It is not run again (its side effect
    may have partly happened); the recorded error is raised instead."""


class Meta(msgspec.Struct, omit_defaults=True):
    """Per-message facts kept next to the raw payload."""

    device: str = ""
    reply_topic: str = ""
    correlation: bytes | None = None
    agent: str = ""
    confidence: float = 1.0
    qos: int = 1


@dataclass(slots=True)
class Incoming:
    """One message as the ingest stage classified it, ready to be journaled."""

    key: str
    key_is_content: bool
    topic: str
    payload: bytes
    meta: Meta
    priority: int = 5
    # None: to be processed; "sink": journal only; else an error to answer right away.
    outcome: str | None = None
    error_code: str = ""
    error_message: str = ""
    outbox: list[OutRow] = field(default_factory=list)
    route: str = ""  # the route filter it came in on (metrics label), not journaled
    # Dedup (see _accept). The broker's DUP flag: only a redelivery is matched by fingerprint.
    redelivered: bool = False
    # the delivery's fingerprint (messages.content_key) when ``key`` is a request key
    fingerprint: str = ""
    # False for a refusal the device may retry with the same key (rate_limited, overloaded)
    consumes_key: bool = True


@dataclass(slots=True)
class OutRow:
    topic: str
    payload: bytes
    priority: int
    kind: str  # reply | error | dlq | event
    props: bytes | None = None  # msgpack: correlation data etc.
    qos: int = 1
    retain: bool = False


@dataclass(slots=True)
class Escalation:
    """A cloud escalation waiting for connectivity (see :mod:`edged.escalation`)."""

    request_id: str
    agent: str
    device: str
    reply_topic: str
    props: bytes | None
    body: bytes
    priority: int
    created: float
    expires: float
    attempts: int = 0
    id: int = 0


@dataclass(slots=True)
class InboxRow:
    id: int
    key: str
    topic: str
    payload: bytes
    meta: Meta
    priority: int
    attempts: int


@dataclass(slots=True)
class OutboxRow:
    id: int
    topic: str
    payload: bytes
    props: bytes | None
    qos: int
    retain: bool
    priority: int
    kind: str


_META_ENC = msgspec.msgpack.Encoder()
_META_DEC = msgspec.msgpack.Decoder(Meta)


def dead_letter_payload(
    topic: str, payload: bytes, reason: str, code: str, msg_id: str | None, attempts: int
) -> bytes:
    """A dead letter; an oversized payload is kept as a prefix with its size and hash (a
    20 MiB message must not cost 27 MiB of base64 in the outbox and on the broker)."""
    size, digest = None, None
    if len(payload) > DLQ_PAYLOAD_MAX:
        size, digest = len(payload), hashlib.sha256(payload).hexdigest()
        payload = payload[:DLQ_PAYLOAD_MAX]
    try:
        body, enc = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, enc = base64.b64encode(payload).decode(), "base64"
    return msgspec.json.encode(
        DeadLetter(id=msg_id, topic=topic[:1024], reason=reason, code=code, payload=body,
                   payload_encoding=enc, attempts=attempts, ts=round(time.time(), 3),
                   payload_bytes=size, payload_sha256=digest)
    )


class Journal:
    """The journal; every public coroutine runs on the writer thread."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        dedup_window_s: float = 86400.0,
        correlation_window_s: float = 300.0,
        retention_s: float = 7 * 86400.0,
        outbox_max_rows: int = 100_000,
        outbox_ttl_s: float = 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.dedup_window_s = dedup_window_s  # how long a fingerprint recognises a DUP
        self.correlation_window_s = correlation_window_s
        self.retention_s = retention_s
        self.outbox_max_rows = outbox_max_rows
        self.outbox_ttl_s = outbox_ttl_s
        self.clock = clock
        self._synchronous = synchronous
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self.commits = 0
        self.dropped_outbox = 0
        self.outbox_rows = 0  # kept by the writer thread; recounted at open and clean-up
        self._closing = False
        # The daemon sets wait_out_faults: then a call that meets a storage fault is retried
        # with back-off until the disk takes it, instead of failing the work it belongs to.
        self.wait_out_faults = False
        self.degraded = ""  # the fault that calls are waiting out now ("" when none)
        self.on_degraded: Callable[[str], None] | None = None  # on each change of state
        self._waiting = 0  # calls waiting out a fault

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            secure_dir(self.path.parent)  # 0700: the journal holds the messages themselves
        except OSError as e:
            raise JournalError(f"{self.path}: cannot create its directory: {e}") from None
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing = False
        self._thread = threading.Thread(
            target=self._run, args=(asyncio.get_running_loop(), ready), name="edged-journal",
            daemon=True,
        )
        self._thread.start()
        try:
            await ready
        except BaseException:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            raise

    async def close(self) -> None:
        if self._thread is None:
            return
        self._closing = True  # calls from now on fail instead of queueing behind the stop
        self._q.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    def _connect(self) -> sqlite3.Connection:
        secure_sqlite(self.path)  # 0600 before SQLite creates it, its WAL and SHM
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=OFF")
        # a burst (20 MiB payloads, a long outage) must not leave a WAL that never shrinks:
        # after each checkpoint SQLite truncates the file back to this size
        conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        conn.executescript(SCHEMA)
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES('schema_version', ?)", (SCHEMA_VERSION,)
        )
        return conn

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            self._conn = conn = self._connect()
        except Exception as e:  # noqa: BLE001 - reported to the opener
            loop.call_soon_threadsafe(_set_exc, ready, JournalError(f"{self.path}: {e}"))
            return
        self.outbox_rows = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        loop.call_soon_threadsafe(_set_result, ready, None)
        stop = False
        while not stop:
            item = self._q.get()
            batch = []
            while item is not None:
                if item[0] is None:  # a ping: this thread is alive; no disk access
                    item[3].call_soon_threadsafe(_set_result, item[2], None)
                else:
                    batch.append(item)
                if len(batch) >= 1024:
                    break
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
            if item is None:
                stop = True
            if batch:
                self._run_batch(conn, batch)
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        results: list[tuple[bool, Any]] = []
        group_counters = (self.outbox_rows, self.dropped_outbox)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, args, _fut, _loop in batch:
                conn.execute("SAVEPOINT op")
                counters = (self.outbox_rows, self.dropped_outbox)
                try:
                    results.append((True, fn(conn, *args)))
                    conn.execute("RELEASE op")
                except Exception as e:  # noqa: BLE001 - handed to the caller
                    err = _storage_error(e) or e
                    if not conn.in_transaction:  # e.g. SQLITE_FULL ends the whole group
                        raise err from None
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    self.outbox_rows, self.dropped_outbox = counters
                    results.append((False, err))
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as e:  # noqa: BLE001 - the whole group failed to commit
            (log.debug if self.degraded else log.error)("journal commit failed: %s", e)
            try:
                conn.execute("ROLLBACK")
            except Exception:  # noqa: BLE001
                pass
            self.outbox_rows, self.dropped_outbox = group_counters
            err = e if isinstance(e, StorageError) else \
                StorageError(f"journal commit failed: {e}")
            results = [(False, err)] * len(batch)
        for (ok, value), (_fn, _args, fut, loop) in zip(results, batch, strict=True):
            loop.call_soon_threadsafe(_set_result if ok else _set_exc, fut, value)

    async def _submit(self, fn: Callable[..., T] | None, *args: Any) -> T:
        """One attempt on the writer thread (``fn`` None: a ping)."""
        if self._thread is None or self._closing:
            raise JournalError("journal is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._q.put((fn, args, fut, loop))
        return await fut

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the writer thread. With ``wait_out_faults`` (the daemon) a storage
        fault is not the caller's failure: the call is retried with back-off until the disk
        takes it, and ``degraded`` says why meanwhile. One place for every write the daemon
        makes, so a full or locked disk pauses the work instead of failing or losing it."""
        if not self.wait_out_faults:
            return await self._submit(fn, *args)
        delay, waiting = RETRY_MIN_S, False
        try:
            while True:
                try:
                    result = await self._submit(fn, *args)
                    break
                except StorageError as e:
                    if self._closing:
                        raise
                    if not waiting:
                        waiting = True
                        self._waiting += 1
                    self._set_degraded(str(e))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        finally:
            self._waiting -= waiting
        if self.degraded and not self._waiting:  # nothing waits any more: writable again
            self._set_degraded("")
        return result

    def _set_degraded(self, fault: str) -> None:
        changed = bool(fault) != bool(self.degraded)
        self.degraded = fault
        if changed and self.on_degraded is not None:
            self.on_degraded(fault)

    async def ping(self) -> None:
        """Answered by the writer thread as it takes its next item, without touching the
        disk: a hung writer (stuck I/O) never answers; one that meets storage faults does
        (those are ``degraded``, which a restart would not cure)."""
        await self._submit(None)

    # -- inbox ----------------------------------------------------------------------------------

    async def accept(self, items: Sequence[Incoming]) -> list[int | None]:
        """Journal a batch. Returns the inbox id of each item, or None for a duplicate."""
        return await self._call(self._accept, list(items))

    def _accept(self, conn: sqlite3.Connection, items: list[Incoming]) -> list[int | None]:
        now = self.clock()
        out: list[int | None] = []
        last = conn.execute("SELECT max(id) FROM inbox").fetchone()[0] or 0
        for it in items:
            if self._duplicate(conn, it, now, last):
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
                [(key, inbox_id, now + ttl) for key, ttl in self._keys_to_keep(it)],
            )
            self._enqueue(conn, it.outbox, inbox_id, now)
            out.append(inbox_id)
        return out

    def _duplicate(self, conn: sqlite3.Connection, it: Incoming, now: float,
                   last: int) -> bool:
        """Its request key is remembered, or it is the broker's redelivery (DUP) of a delivery
        journaled among the last DUP_WINDOW rows. The fingerprint holds a packet id, which
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
        return row is not None and row[0] > now and (row[1] or 0) > last - DUP_WINDOW

    def _keys_to_keep(self, it: Incoming) -> list[tuple[str, float]]:
        """(key, how long) to remember: an id for the retention period, correlation data for
        its window, none for a refusal the device may retry with the same key; and the
        fingerprint wherever the kept key does not cover the broker's redelivery (QoS 0 is
        never redelivered)."""
        keys: list[tuple[str, float]] = []
        windowed = it.key.startswith("c:")
        if not it.key_is_content and it.consumes_key:
            keys.append((it.key, self.correlation_window_s if windowed else self.retention_s))
        fingerprint = it.key if it.key_is_content else it.fingerprint
        if fingerprint and it.meta.qos > 0 and (
                it.key_is_content or windowed or not it.consumes_key):
            keys.append((fingerprint, self.dedup_window_s))
        return keys

    async def claim(self, limit: int) -> list[InboxRow]:
        """Move up to ``limit`` ready messages to processing (priority first), durably."""
        return await self._call(self._claim, limit)

    def _claim(self, conn: sqlite3.Connection, limit: int) -> list[InboxRow]:
        now = self.clock()
        rows = conn.execute(
            "UPDATE inbox SET state = 'processing', attempts = attempts + 1, updated_at = ? "
            "WHERE id IN (SELECT id FROM inbox WHERE state = 'received' AND not_before <= ? "
            "ORDER BY priority DESC, id LIMIT ?) "
            "RETURNING id, key, topic, payload, meta, priority, attempts",
            (now, now, limit),
        ).fetchall()
        rows.sort(key=lambda r: (-r[5], r[0]))
        return [InboxRow(r[0], r[1], r[2], r[3], _META_DEC.decode(r[4]), r[5], r[6]) for r in rows]

    async def next_ready_at(self) -> float | None:
        """When the earliest deferred (retrying) message becomes ready, if any."""
        return await self._call(self._next_ready_at)

    def _next_ready_at(self, conn: sqlite3.Connection) -> float | None:
        row = conn.execute("SELECT min(not_before) FROM inbox WHERE state = 'received'").fetchone()
        return row[0] if row and row[0] is not None else None

    async def complete(self, inbox_id: int, rows: Sequence[OutRow]) -> None:
        """Mark done and queue its replies/events in the same transaction."""
        await self._call(self._complete, inbox_id, list(rows))

    def _complete(self, conn: sqlite3.Connection, inbox_id: int, rows: list[OutRow]) -> None:
        now = self.clock()
        conn.execute(
            "UPDATE inbox SET state = 'done', updated_at = ?, error = NULL WHERE id = ?",
            (now, inbox_id),
        )
        self._enqueue(conn, rows, inbox_id, now)

    async def retry_later(self, inbox_id: int, error: str, delay_s: float) -> None:
        await self._call(self._retry_later, inbox_id, error, delay_s)

    def _retry_later(
        self, conn: sqlite3.Connection, inbox_id: int, error: str, delay: float
    ) -> None:
        now = self.clock()
        conn.execute(
            "UPDATE inbox SET state = 'received', not_before = ?, error = ?, updated_at = ? "
            "WHERE id = ?",
            (now + delay, error, now, inbox_id),
        )

    async def release(self, inbox_ids: Sequence[int]) -> None:
        """Put claimed messages back untouched (shutdown checkpoint): no attempt is counted.
        Never waits out a storage fault (it would hold up the stop): recovery at the next
        start requeues what this could not."""
        await self._submit(self._release, list(inbox_ids))

    def _release(self, conn: sqlite3.Connection, ids: list[int]) -> None:
        conn.executemany(
            "UPDATE inbox SET state = 'received', attempts = max(attempts - 1, 0) "
            "WHERE id = ? AND state = 'processing'",
            [(i,) for i in ids],
        )

    async def kill(self, inbox_id: int, error: str, rows: Sequence[OutRow]) -> None:
        """Quarantine: state dead, with its error reply and DLQ copy queued atomically."""
        await self._call(self._kill, inbox_id, error, list(rows))

    def _kill(
        self, conn: sqlite3.Connection, inbox_id: int, error: str, rows: list[OutRow]
    ) -> None:
        now = self.clock()
        conn.execute(
            "UPDATE inbox SET state = 'dead', error = ?, updated_at = ? WHERE id = ?",
            (error, now, inbox_id),
        )
        self._enqueue(conn, rows, inbox_id, now)

    async def recover(self, max_attempts: int) -> tuple[int, list[InboxRow]]:
        """At start-up: requeue messages interrupted by a crash.

        Returns (requeued count, rows that used up their attempts and must be quarantined).
        """
        return await self._call(self._recover, max_attempts)

    def _recover(self, conn: sqlite3.Connection, max_attempts: int) -> tuple[int, list[InboxRow]]:
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

    async def counts(self) -> dict[str, int]:
        return await self._call(self._counts)

    def _counts(self, conn: sqlite3.Connection) -> dict[str, int]:
        out = {s: 0 for s in ("received", "processing", "done", "dead")}
        for state, n in conn.execute("SELECT state, count(*) FROM inbox GROUP BY state"):
            out[state] = n
        out["outbox"] = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        return out

    # -- steps: at-most-once side effects -------------------------------------------------------

    async def step_begin(self, inbox_id: int, key: str) -> tuple[str, bytes | None]:
        """Record that a side-effecting step starts. Returns ("new", None) when it may run,
        ("done", result) when it already ran; raises StepInDoubt when it started before a
        crash and its outcome is unknown."""
        return await self._call(self._step_begin, inbox_id, key)

    def _step_begin(self, conn: sqlite3.Connection, inbox_id: int, key: str) -> tuple[str, Any]:
        row = conn.execute(
            "SELECT state, result FROM steps WHERE inbox_id = ? AND key = ?", (inbox_id, key)
        ).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO steps(inbox_id, key, state, started_at) VALUES(?,?,'started',?)",
                (inbox_id, key, self.clock()),
            )
            return "new", None
        if row[0] == "done":
            return "done", row[1]
        if row[0] == "failed":
            raise StepFailed(f"step {key!r} failed on an earlier attempt: "
                             f"{(row[1] or b'').decode(errors='replace')}")
        raise StepInDoubt(f"step {key!r} was interrupted; its outcome is unknown")

    async def step_end(self, inbox_id: int, key: str, result: bytes) -> None:
        await self._call(self._step_end, inbox_id, key, result)

    def _step_end(self, conn: sqlite3.Connection, inbox_id: int, key: str, result: bytes) -> None:
        conn.execute(
            "UPDATE steps SET state = 'done', result = ?, finished_at = ? "
            "WHERE inbox_id = ? AND key = ?",
            (result, self.clock(), inbox_id, key),
        )

    async def step_fail(self, inbox_id: int, key: str, error: str) -> None:
        await self._call(self._step_fail, inbox_id, key, error)

    def _step_fail(self, conn: sqlite3.Connection, inbox_id: int, key: str, error: str) -> None:
        conn.execute(
            "UPDATE steps SET state = 'failed', result = ?, finished_at = ? "
            "WHERE inbox_id = ? AND key = ?",
            (error.encode(), self.clock(), inbox_id, key),
        )

    # -- scheduled messages (reminders): durable, moved to the outbox when due -------------------

    async def schedule(self, key: str, due: float, topic: str, payload: bytes,
                       priority: int = 5) -> None:
        """Publish ``payload`` on ``topic`` at ``due`` (epoch seconds); the same key replaces."""
        await self._call(self._schedule, key, due, topic, payload, priority)

    def _schedule(self, conn: sqlite3.Connection, key: str, due: float, topic: str,
                  payload: bytes, priority: int) -> None:
        conn.execute("INSERT OR REPLACE INTO scheduled VALUES(?,?,?,?,?,?)",
                     (key, due, topic, payload, priority, self.clock()))

    async def unschedule(self, key: str) -> bool:
        return await self._call(self._unschedule, key)

    def _unschedule(self, conn: sqlite3.Connection, key: str) -> bool:
        return conn.execute("DELETE FROM scheduled WHERE key = ?", (key,)).rowcount > 0

    async def scheduled(self, prefix: str = "") -> list[tuple[str, float]]:
        return await self._call(_query, "SELECT key, due FROM scheduled WHERE key GLOB ? "
                                "ORDER BY due", (prefix.replace("*", "") + "*",))

    async def release_due(self) -> tuple[int, float | None]:
        """Move due messages to the outbox; returns (moved, next due time or None)."""
        return await self._call(self._release_due)

    def _release_due(self, conn: sqlite3.Connection) -> tuple[int, float | None]:
        now = self.clock()
        rows = conn.execute("SELECT key, topic, payload, priority FROM scheduled "
                            "WHERE due <= ?", (now,)).fetchall()
        if rows:
            conn.executemany("DELETE FROM scheduled WHERE key = ?", [(r[0],) for r in rows])
            self._enqueue(conn, [OutRow(topic=r[1], payload=r[2], priority=r[3],
                                        kind="scheduled") for r in rows], None, now)
        nxt = conn.execute("SELECT min(due) FROM scheduled").fetchone()[0]
        return len(rows), nxt

    # -- audit trail ----------------------------------------------------------------------------

    async def audit(self, **row: Any) -> None:
        """Record one tool call, run or refused (request, device, agent, tool, arguments,
        outcome, detail, duration)."""
        await self._call(self._audit, row)

    def _audit(self, conn: sqlite3.Connection, row: dict[str, Any]) -> None:
        conn.execute(
            "INSERT INTO tool_calls(ts, inbox_id, request_id, device, topic, agent, tool, "
            "arguments, outcome, detail, duration_ms) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (self.clock(), row.get("inbox_id"), row.get("request_id"), row.get("device"),
             row.get("topic"), row.get("agent"), row["tool"], row.get("arguments"),
             row["outcome"], row.get("detail"), row.get("duration_ms")),
        )

    # -- outbox ---------------------------------------------------------------------------------

    async def enqueue(self, rows: Sequence[OutRow]) -> None:
        await self._call(self._enqueue_now, list(rows))

    def _enqueue_now(self, conn: sqlite3.Connection, rows: list[OutRow]) -> None:
        self._enqueue(conn, rows, None, self.clock())

    def _enqueue(
        self, conn: sqlite3.Connection, rows: list[OutRow], inbox_id: int | None, now: float
    ) -> None:
        if not rows:
            return
        conn.executemany(
            "INSERT INTO outbox(topic, payload, props, qos, retain, priority, kind, inbox_id, "
            "created_at, expires_at) VALUES(?,?,?,?,?,?,?,?,?,?)",
            [(r.topic, r.payload, r.props, r.qos, int(r.retain), r.priority, r.kind, inbox_id,
              now, now + self.outbox_ttl_s) for r in rows],
        )
        self.outbox_rows += len(rows)
        if self.outbox_rows > self.outbox_max_rows:
            self.outbox_rows = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        if self.outbox_rows > self.outbox_max_rows:
            # Bounded: shed the lowest-priority, oldest rows (events before replies).
            cur = conn.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox "
                "ORDER BY priority ASC, id ASC LIMIT ?)",
                (self.outbox_rows - self.outbox_max_rows,),
            )
            self.dropped_outbox += cur.rowcount
            self.outbox_rows -= cur.rowcount
            log.warning("outbox full: dropped %d lowest-priority rows", cur.rowcount)

    async def outbox_fetch(self, limit: int, exclude: Sequence[int] = ()) -> list[OutboxRow]:
        return await self._call(self._outbox_fetch, limit, tuple(exclude))

    def _outbox_fetch(
        self, conn: sqlite3.Connection, limit: int, exclude: tuple[int, ...]
    ) -> list[OutboxRow]:
        now = self.clock()
        expired = conn.execute("DELETE FROM outbox WHERE expires_at < ?", (now,)).rowcount
        if expired:
            self.outbox_rows -= expired
            log.warning("outbox: %d row(s) expired undelivered", expired)
        rows = conn.execute(
            "SELECT id, topic, payload, props, qos, retain, priority, kind FROM outbox "
            "ORDER BY priority DESC, id LIMIT ?",
            (limit + len(exclude),),
        ).fetchall()
        ex = set(exclude)
        return [OutboxRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7])
                for r in rows if r[0] not in ex][:limit]

    async def outbox_done(self, ids: Sequence[int]) -> None:
        await self._call(self._outbox_done, list(ids))

    def _outbox_done(self, conn: sqlite3.Connection, ids: list[int]) -> None:
        for i in ids:
            self.outbox_rows -= conn.execute("DELETE FROM outbox WHERE id = ?", (i,)).rowcount

    # -- housekeeping -------------------------------------------------------------------------

    async def cleanup(self) -> dict[str, int]:
        """Housekeeping; skipped (empty result) while the disk refuses writes: the status
        loop that runs it must keep going."""
        try:
            return await self._submit(self._cleanup)
        except StorageError as e:
            log.warning("journal clean-up skipped: %s", e)
            return {}

    def _cleanup(self, conn: sqlite3.Connection) -> dict[str, int]:
        now = self.clock()
        cutoff = now - self.retention_s
        old = [r[0] for r in conn.execute(
            "SELECT id FROM inbox WHERE state IN ('done', 'dead') AND updated_at < ?", (cutoff,)
        )]
        conn.executemany("DELETE FROM steps WHERE inbox_id = ?", [(i,) for i in old])
        conn.execute("DELETE FROM tool_calls WHERE ts < ?", (cutoff,))
        conn.executemany("DELETE FROM inbox WHERE id = ?", [(i,) for i in old])
        seen = conn.execute("DELETE FROM seen WHERE expires < ?", (now,)).rowcount
        last = conn.execute("SELECT max(id) FROM inbox").fetchone()[0]
        if last is not None:  # fingerprints no DUP can match any more (see _duplicate)
            seen += conn.execute("DELETE FROM seen WHERE key GLOB 'h:*' AND inbox_id <= ?",
                                 (last - DUP_WINDOW,)).rowcount
        self.outbox_rows = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        return {"inbox": len(old), "seen": seen}

    # -- cloud escalations waiting for connectivity, and the daily budget -------------------

    async def escalation_add(self, row: Escalation) -> int | None:
        """Queue an escalation; None when this request's escalation is queued already (a
        retried request queues nothing twice)."""
        return await self._call(self._escalation_add, row)

    def _escalation_add(self, conn: sqlite3.Connection, e: Escalation) -> int | None:
        cur = conn.execute(
            "INSERT OR IGNORE INTO escalations(request_id, agent, device, reply_topic, props, "
            "body, priority, created, expires) VALUES (?,?,?,?,?,?,?,?,?)",
            (e.request_id, e.agent, e.device, e.reply_topic, e.props, e.body, e.priority,
             e.created, e.expires))
        return cur.lastrowid if cur.rowcount else None

    async def escalations(self, limit: int = 20) -> list[Escalation]:
        """Queued escalations, oldest first (expired ones are not returned)."""
        return await self._call(self._escalations, limit)

    def _escalations(self, conn: sqlite3.Connection, limit: int) -> list[Escalation]:
        rows = conn.execute(
            "SELECT id, request_id, agent, device, reply_topic, props, body, priority, "
            "created, expires, attempts FROM escalations WHERE expires >= ? ORDER BY id "
            "LIMIT ?", (self.clock(), limit)).fetchall()
        return [Escalation(*r[1:10], attempts=r[10], id=r[0]) for r in rows]

    async def escalation_done(self, esc_id: int, rows: Sequence[OutRow]) -> bool:
        """Remove a queued escalation and queue its follow-up reply, atomically: a
        follow-up goes out once. False when it was gone already."""
        return await self._call(self._escalation_done, esc_id, list(rows))

    def _escalation_done(self, conn: sqlite3.Connection, esc_id: int,
                         rows: list[OutRow]) -> bool:
        if conn.execute("DELETE FROM escalations WHERE id = ?", (esc_id,)).rowcount == 0:
            return False
        self._enqueue(conn, rows, None, self.clock())
        return True

    async def escalation_failed(self, esc_id: int, max_attempts: int) -> bool:
        """Count a failed attempt; True when it was dropped for having too many."""
        return await self._call(self._escalation_failed, esc_id, max_attempts)

    def _escalation_failed(self, conn: sqlite3.Connection, esc_id: int,
                           max_attempts: int) -> bool:
        conn.execute("UPDATE escalations SET attempts = attempts + 1 WHERE id = ?", (esc_id,))
        return conn.execute("DELETE FROM escalations WHERE id = ? AND attempts >= ?",
                            (esc_id, max_attempts)).rowcount > 0

    async def escalations_expire(self) -> list[tuple[str, str]]:
        """Drop expired escalations; returns their (request id, device)."""
        return await self._call(self._escalations_expire)

    def _escalations_expire(self, conn: sqlite3.Connection) -> list[tuple[str, str]]:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            "DELETE FROM escalations WHERE expires < ? RETURNING request_id, device",
            (self.clock(),))]

    async def escalation_count(self) -> int:
        rows = await self._call(_query, "SELECT count(*) FROM escalations", ())
        return int(rows[0][0])

    async def cloud_usage(self, day: str) -> tuple[int, int]:
        rows = await self._call(_query, "SELECT requests, tokens FROM cloud_usage "
                                "WHERE day = ?", (day,))
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    async def cloud_spend(self, day: str, requests: int, tokens: int) -> tuple[int, int]:
        """Add to a day's usage; returns the new totals."""
        return await self._call(self._cloud_spend, day, requests, tokens)

    def _cloud_spend(self, conn: sqlite3.Connection, day: str, requests: int,
                     tokens: int) -> tuple[int, int]:
        conn.execute("INSERT INTO cloud_usage VALUES (?,?,?) ON CONFLICT(day) DO UPDATE SET "
                     "requests = requests + excluded.requests, "
                     "tokens = tokens + excluded.tokens", (day, requests, tokens))
        conn.execute("DELETE FROM cloud_usage WHERE day < date(?, '-60 days')", (day,))
        r = conn.execute("SELECT requests, tokens FROM cloud_usage WHERE day = ?",
                         (day,)).fetchone()
        return int(r[0]), int(r[1])

    async def shift_times(self, delta: float) -> dict[str, int]:
        """The wall clock jumped by ``delta`` s (a Pi without RTC, NTP stepping it): move
        every pending deadline with it so that the intervals hold. Otherwise a jump forward
        expires every queued reply at once, and a jump back makes a retry wait a day."""
        return await self._call(self._shift_times, float(delta))

    def _shift_times(self, conn: sqlite3.Connection, delta: float) -> dict[str, int]:
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

    async def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read-only helper for the CLI, tests and status."""
        return await self._call(_query, sql, params)


def _query(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return conn.execute(sql, params).fetchall()


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exc(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


# -- repair: `edged journal check` and `edged journal recover` ---------------------------------

JOURNAL_TABLES = tuple(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA))
INBOX_STATES = ("received", "processing", "done", "dead")


@dataclass(slots=True)
class CheckReport:
    """What :func:`check_file` found; no ``problems`` means the journal is sound."""

    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # rows per table
    states: dict[str, int] = field(default_factory=dict)  # inbox rows per state


def check_file(path: Path) -> CheckReport:
    """``PRAGMA integrity_check``, then a count of every journal table, the inbox states and
    the schema version. Read-only: it may run beside the daemon (WAL)."""
    report = CheckReport()
    if not path.is_file():
        report.problems.append(f"{path}: no such file")
        return report
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        try:
            found = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(20)")]
        except sqlite3.Error as e:  # not even that runs: the one thing to say
            report.problems.append(str(e))
            return report
        if found != ["ok"]:
            report.problems += found
        for table in JOURNAL_TABLES:
            try:
                report.counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            except sqlite3.Error as e:
                report.problems.append(f"table {table}: {e}")
        try:
            report.states = dict(conn.execute("SELECT state, count(*) FROM inbox GROUP BY state"))
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.Error:
            return report  # said above
        if version is None or version[0] != SCHEMA_VERSION:
            report.problems.append(f"schema version {version and version[0]!r}, expected "
                                   f"{SCHEMA_VERSION!r}")
        if odd := sorted(set(report.states) - set(INBOX_STATES)):
            report.problems.append(f"inbox rows in unknown states: {odd}")
    finally:
        conn.close()
    return report


@dataclass(slots=True)
class Salvage:
    """What :func:`recover_file` saved."""

    kept: Path  # the damaged file, moved aside
    method: str  # "copy": it read whole (VACUUM INTO); "rows": read row by row
    saved: dict[str, int]  # rows per table in the new journal
    unreadable: list[str]  # tables (with why) that lost rows


def recover_file(path: Path) -> Salvage:
    """Copy what can be read of a damaged journal into a fresh database at ``path``; the
    damaged file and its WAL stay as ``<name>.corrupt-<time>``. A file that reads whole is
    copied with VACUUM INTO; otherwise each table is read row by row, skipping unreadable
    pages (the ``.recover`` idea). The daemon must not be running."""
    if not path.is_file():
        raise JournalError(f"{path}: no such file")
    fresh = path.with_name(path.name + ".recovering")
    _remove_db(fresh)
    secure_sqlite(fresh)
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    unreadable: list[str] = []
    try:
        method = "copy" if _vacuum_into(src, fresh) else "rows"
        dst = sqlite3.connect(str(fresh), isolation_level=None)
        try:
            dst.executescript(SCHEMA)
            dst.execute("BEGIN")
            if method == "rows":
                unreadable = _copy_rows(src, dst)
            dst.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('schema_version', ?)",
                        (SCHEMA_VERSION,))
            dst.execute("COMMIT")
            saved = {t: dst.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in JOURNAL_TABLES}
        finally:
            dst.close()
    finally:
        src.close()
    kept = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while kept.exists():
        n += 1
        kept = kept.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    path.replace(kept)
    for suffix in ("-wal", "-shm"):  # a WAL left beside the new file would be replayed into it
        side = Path(f"{path}{suffix}")
        if side.exists():
            side.replace(f"{kept}{suffix}")
    fresh.replace(path)
    return Salvage(kept, method, saved, unreadable)


def _remove_db(path: Path) -> None:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        p.unlink(missing_ok=True)


def _vacuum_into(src: sqlite3.Connection, fresh: Path) -> bool:
    """The whole file in one consistent copy, when it reads whole."""
    try:
        if src.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
            return False
        src.execute("VACUUM INTO ?", (str(fresh),))
        return True
    except sqlite3.Error:
        _remove_db(fresh)
        secure_sqlite(fresh)
        return False


def _copy_rows(src: sqlite3.Connection, dst: sqlite3.Connection) -> list[str]:
    """Every journal table into ``dst``, row by row; returns the tables that lost rows."""
    lost: list[str] = []
    for table in JOURNAL_TABLES:
        info = dst.execute(f"PRAGMA table_info({table})").fetchall()
        try:
            have = {r[1] for r in src.execute(f"PRAGMA table_info({table})")}
        except sqlite3.Error as e:
            lost.append(f"{table}: {e}")
            continue
        cols = [r[1] for r in info if r[1] in have]
        if not cols:
            lost.append(f"{table}: not readable")
            continue
        insert = (f"INSERT OR IGNORE INTO {table}({', '.join(cols)}) "
                  f"VALUES({', '.join('?' * len(cols))})")

        def put(row: Sequence[Any], insert: str = insert) -> None:
            dst.execute(insert, tuple(row))

        sql = dst.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        if "WITHOUT ROWID" in sql.upper():
            pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
            whole = _read_by_key(src, table, cols, pk, put)
        else:
            whole = _read_by_rowid(src, table, cols, put)
        if not whole:
            lost.append(f"{table}: some pages unreadable")
    return lost


def _read_by_rowid(src: sqlite3.Connection, table: str, cols: list[str],
                   put: Callable[[Sequence[Any]], None]) -> bool:
    """Rows in rowid order. Past an unreadable stretch, probe ahead (doubling the step, then
    bisecting back) for the first rowid that reads. False when something was skipped."""
    sel = f"SELECT rowid, {', '.join(cols)} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?"
    top = 2**63 - 1

    def fetch(after: int, n: int) -> list[Any] | None:
        try:
            return src.execute(sel, (after, n)).fetchall()
        except sqlite3.DatabaseError:
            return None

    last, whole = -(2**63), True
    while True:
        rows = fetch(last, 64)
        if rows is None:
            rows = fetch(last, 1)
        if rows is None:  # the next row (or the way to it) is unreadable
            whole = False
            bad, step = last + 1, 1
            while (good := bad + step) < top and fetch(good - 1, 1) is None:
                bad, step = good, step * 2
            if good >= top:
                return False
            while good - bad > 1:
                mid = (bad + good) // 2
                bad, good = (mid, good) if fetch(mid - 1, 1) is None else (bad, mid)
            last = good - 1
            continue
        if not rows:
            return whole
        for r in rows:
            put(r[1:])
        last = rows[-1][0]


def _read_by_key(src: sqlite3.Connection, table: str, cols: list[str], pk: list[str],
                 put: Callable[[Sequence[Any]], None]) -> bool:
    """WITHOUT ROWID tables: forward in key order up to a bad page, then backward from the
    end up to one (what lies between two bad pages is lost)."""
    for desc in ("", " DESC"):
        order = ", ".join(f"{c}{desc}" for c in pk)
        try:
            for row in src.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}"):
                put(row)
        except sqlite3.DatabaseError:
            continue
        return desc == ""
    return False
