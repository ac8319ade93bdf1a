"""Durable inbox, outbox, dedup, tool-step log and dead letters in one SQLite file (WAL).

All access goes through one writer thread (:mod:`.writer`) that groups whatever work is queued
into a single transaction (group commit): many messages cost one fsync, and the event loop
never blocks on disk. A commit failure (disk full, I/O error) fails every operation of the
group with a :class:`StorageError`; the daemon's calls wait such faults out
(``wait_out_faults``: retried with back-off, ``degraded`` meanwhile), so nothing is acked or
lost until the disk takes them.

:class:`Journal` is the face of it; the SQL lives in one module per table group
(:mod:`.inbox`, :mod:`.outbox`, :mod:`.steps`, :mod:`.timers`, :mod:`.cloud`,
:mod:`.housekeeping`) as plain functions of a connection, and repair in :mod:`.repair`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import sqlean as sqlite3

from . import cloud, housekeeping, inbox, outbox, steps, timers
from .errors import JournalError, StepFailed, StepInDoubt, StorageError
from .errors import storage_error as _storage_error  # noqa: F401 - the old private name
from .inbox import DUP_WINDOW
from .outbox import Tally
from .repair import CheckReport, Salvage, check_file, recover_file
from .rows import (
    DLQ_PAYLOAD_MAX,
    PRIO_DLQ,
    PRIO_EVENT,
    PRIO_STATUS,
    Escalation,
    InboxRow,
    Incoming,
    Meta,
    OutboxRow,
    OutRow,
    Settings,
    dead_letter_payload,
)
from .schema import INBOX_STATES, JOURNAL_TABLES, SCHEMA, SCHEMA_VERSION, WAL_LIMIT, connect
from .writer import RETRY_MAX_S, RETRY_MIN_S, Writer

__all__ = [
    "DLQ_PAYLOAD_MAX", "DUP_WINDOW", "INBOX_STATES", "JOURNAL_TABLES", "PRIO_DLQ", "PRIO_EVENT",
    "PRIO_STATUS", "RETRY_MAX_S", "RETRY_MIN_S", "SCHEMA", "SCHEMA_VERSION", "WAL_LIMIT",
    "CheckReport", "Escalation", "InboxRow", "Incoming", "Journal", "JournalError", "Meta",
    "OutRow", "OutboxRow", "Salvage", "Settings", "StepFailed", "StepInDoubt", "StorageError",
    "check_file", "dead_letter_payload", "recover_file",
]

log = logging.getLogger("edged.journal")
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class Journal:
    """The journal; every public coroutine runs one table function on the writer thread.

    ``DUP_WINDOW`` is read from this module at each call rather than frozen into
    :class:`Settings`, so that a test can shrink it (``monkeypatch.setattr``).
    """

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
        self.settings = Settings(
            clock=clock, dedup_window_s=dedup_window_s,
            correlation_window_s=correlation_window_s, retention_s=retention_s,
            outbox_max_rows=outbox_max_rows, outbox_ttl_s=outbox_ttl_s,
        )
        self._tally = Tally()  # kept by the writer thread; recounted at open and clean-up
        self._writer = Writer(path, partial(connect, path, synchronous), state=self._tally,
                              on_open=self._tally.recount)

    # -- state --------------------------------------------------------------------------------

    @property
    def outbox_rows(self) -> int:
        return self._tally.rows

    @property
    def dropped_outbox(self) -> int:
        return self._tally.dropped

    @property
    def commits(self) -> int:
        return self._writer.commits

    @property
    def degraded(self) -> str:
        """The storage fault that calls are waiting out now ("" when none)."""
        return self._writer.degraded

    @property
    def wait_out_faults(self) -> bool:
        """Set by the daemon: a call that meets a storage fault is retried with back-off
        until the disk takes it, instead of failing the work it belongs to."""
        return self._writer.wait_out_faults

    @wait_out_faults.setter
    def wait_out_faults(self, on: bool) -> None:
        self._writer.wait_out_faults = on

    @property
    def on_degraded(self) -> Callable[[str], None] | None:
        """Called with the fault (or "") on each change of ``degraded``."""
        return self._writer.on_degraded

    @on_degraded.setter
    def on_degraded(self, fn: Callable[[str], None] | None) -> None:
        self._writer.on_degraded = fn

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        await self._writer.open()

    async def close(self) -> None:
        await self._writer.close()

    async def ping(self) -> None:
        """Answered by the writer thread without touching the disk (see Writer.ping)."""
        await self._writer.ping()

    async def _submit(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        """One attempt on the writer thread, whatever ``wait_out_faults`` says."""
        return await self._writer.submit(fn, *args)

    async def _call(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        """Run ``fn(conn, *args)`` on the writer thread, waiting storage faults out when
        ``wait_out_faults`` is set."""
        return await self._writer.call(fn, *args)

    # -- inbox ----------------------------------------------------------------------------------

    async def accept(self, items: Sequence[Incoming]) -> list[int | None]:
        """Journal a batch. Returns the inbox id of each item, or None for a duplicate."""
        return await self._call(inbox.accept, self.settings, self._tally, list(items),
                                DUP_WINDOW)

    async def claim(self, limit: int) -> list[InboxRow]:
        """Move up to ``limit`` ready messages to processing (priority first), durably."""
        return await self._call(inbox.claim, self.settings, limit)

    async def next_ready_at(self) -> float | None:
        """When the earliest deferred (retrying) message becomes ready, if any."""
        return await self._call(inbox.next_ready_at)

    async def complete(self, inbox_id: int, rows: Sequence[OutRow]) -> None:
        """Mark done and queue its replies/events in the same transaction."""
        await self._call(inbox.complete, self.settings, self._tally, inbox_id, list(rows))

    async def retry_later(self, inbox_id: int, error: str, delay_s: float) -> None:
        await self._call(inbox.retry_later, self.settings, inbox_id, error, delay_s)

    async def release(self, inbox_ids: Sequence[int]) -> None:
        """Put claimed messages back untouched (shutdown checkpoint): no attempt is counted.
        Never waits out a storage fault (it would hold up the stop): recovery at the next
        start requeues what this could not."""
        await self._submit(inbox.release, list(inbox_ids))

    async def kill(self, inbox_id: int, error: str, rows: Sequence[OutRow]) -> None:
        """Quarantine: state dead, with its error reply and DLQ copy queued atomically."""
        await self._call(inbox.kill, self.settings, self._tally, inbox_id, error, list(rows))

    async def recover(self, max_attempts: int) -> tuple[int, list[InboxRow]]:
        """At start-up: requeue messages interrupted by a crash.

        Returns (requeued count, rows that used up their attempts and must be quarantined).
        """
        return await self._call(inbox.recover, max_attempts)

    async def counts(self) -> dict[str, int]:
        return await self._call(inbox.counts)

    # -- steps: at-most-once side effects, and the audit trail ---------------------------------

    async def step_begin(self, inbox_id: int, key: str) -> tuple[str, bytes | None]:
        """Record that a side-effecting step starts. Returns ("new", None) when it may run,
        ("done", result) when it already ran; raises StepInDoubt when it started before a
        crash and its outcome is unknown."""
        return await self._call(steps.begin, self.settings, inbox_id, key)

    async def step_end(self, inbox_id: int, key: str, result: bytes) -> None:
        await self._call(steps.end, self.settings, inbox_id, key, result)

    async def step_fail(self, inbox_id: int, key: str, error: str) -> None:
        await self._call(steps.fail, self.settings, inbox_id, key, error)

    async def audit(self, **row: Any) -> None:
        """Record one tool call, run or refused (request, device, agent, tool, arguments,
        outcome, detail, duration)."""
        await self._call(steps.audit, self.settings, row)

    # -- scheduled messages (reminders): durable, moved to the outbox when due -------------------

    async def schedule(self, key: str, due: float, topic: str, payload: bytes,
                       priority: int = 5) -> None:
        """Publish ``payload`` on ``topic`` at ``due`` (epoch seconds); the same key replaces."""
        await self._call(timers.schedule, self.settings, key, due, topic, payload, priority)

    async def unschedule(self, key: str) -> bool:
        return await self._call(timers.unschedule, key)

    async def scheduled(self, prefix: str = "") -> list[tuple[str, float]]:
        return await self._call(timers.scheduled, prefix)

    async def release_due(self) -> tuple[int, float | None]:
        """Move due messages to the outbox; returns (moved, next due time or None)."""
        return await self._call(timers.release_due, self.settings, self._tally)

    # -- outbox ---------------------------------------------------------------------------------

    async def enqueue(self, rows: Sequence[OutRow]) -> None:
        await self._call(outbox.enqueue, self.settings, self._tally, list(rows))

    async def outbox_fetch(self, limit: int, exclude: Sequence[int] = ()) -> list[OutboxRow]:
        return await self._call(outbox.fetch, self.settings, self._tally, limit,
                                tuple(exclude))

    async def outbox_done(self, ids: Sequence[int]) -> None:
        await self._call(outbox.done, self._tally, list(ids))

    # -- cloud escalations waiting for connectivity, and the daily budget -------------------

    async def escalation_add(self, row: Escalation) -> int | None:
        """Queue an escalation; None when this request's escalation is queued already (a
        retried request queues nothing twice)."""
        return await self._call(cloud.escalation_add, row)

    async def escalations(self, limit: int = 20) -> list[Escalation]:
        """Queued escalations, oldest first (expired ones are not returned)."""
        return await self._call(cloud.escalations, self.settings, limit)

    async def escalation_done(self, esc_id: int, rows: Sequence[OutRow]) -> bool:
        """Remove a queued escalation and queue its follow-up reply, atomically: a
        follow-up goes out once. False when it was gone already."""
        return await self._call(cloud.escalation_done, self.settings, self._tally, esc_id,
                                list(rows))

    async def escalation_failed(self, esc_id: int, max_attempts: int) -> bool:
        """Count a failed attempt; True when it was dropped for having too many."""
        return await self._call(cloud.escalation_failed, esc_id, max_attempts)

    async def escalations_expire(self) -> list[tuple[str, str]]:
        """Drop expired escalations; returns their (request id, device)."""
        return await self._call(cloud.escalations_expire, self.settings)

    async def escalation_count(self) -> int:
        return await self._call(cloud.escalation_count)

    async def cloud_usage(self, day: str) -> tuple[int, int]:
        return await self._call(cloud.usage, day)

    async def cloud_spend(self, day: str, requests: int, tokens: int) -> tuple[int, int]:
        """Add to a day's usage; returns the new totals."""
        return await self._call(cloud.spend, day, requests, tokens)

    # -- housekeeping -------------------------------------------------------------------------

    async def cleanup(self) -> dict[str, int]:
        """Housekeeping; skipped (empty result) while the disk refuses writes: the status
        loop that runs it must keep going."""
        try:
            return await self._submit(housekeeping.cleanup, self.settings, self._tally,
                                      DUP_WINDOW)
        except StorageError as e:
            log.warning("journal clean-up skipped: %s", e)
            return {}

    async def shift_times(self, delta: float) -> dict[str, int]:
        """The wall clock jumped by ``delta`` s (a Pi without RTC, NTP stepping it): move
        every pending deadline with it so that the intervals hold. Otherwise a jump forward
        expires every queued reply at once, and a jump back makes a retry wait a day."""
        return await self._call(housekeeping.shift_times, float(delta))

    async def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read-only helper for the CLI, tests and status."""
        return await self._call(_query, sql, params)

    # -- settings, read-only (see :class:`Settings`) ---------------------------------------------

    @property
    def clock(self) -> Callable[[], float]:
        return self.settings.clock

    @property
    def dedup_window_s(self) -> float:
        return self.settings.dedup_window_s

    @property
    def correlation_window_s(self) -> float:
        return self.settings.correlation_window_s

    @property
    def retention_s(self) -> float:
        return self.settings.retention_s

    @property
    def outbox_max_rows(self) -> int:
        return self.settings.outbox_max_rows

    @property
    def outbox_ttl_s(self) -> float:
        return self.settings.outbox_ttl_s


def _query(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return conn.execute(sql, params).fetchall()
