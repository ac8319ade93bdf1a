"""Sender: drain the outbox in priority order, a bounded window in flight, and forget a row
only once the broker acknowledged it. Also moves due timers (plugins' scheduled messages)
into the outbox.

A row that can never be published (a topic paho refuses, a packet the broker refuses five
times) is dead-lettered and dropped: it must never stop the sender or block the rows
behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from ..bus.client import MQTTBus
from ..bus.topics import is_publishable
from ..journal import OutboxRow
from .replies import PROPS_DEC, dead_letter

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("edged.spine")

SEND_ATTEMPTS = 5  # publishes of one outbox row that fail before it is dead-lettered


class Sender:
    def __init__(self, app: App, bus: MQTTBus) -> None:
        self.app = app
        self.bus = bus
        self._inflight: dict[int, asyncio.Future[None]] = {}
        self._finished: asyncio.Queue[tuple[int, bool]] = asyncio.Queue()
        self._failures: dict[int, int] = {}  # outbox row -> publishes that failed (this run)
        self._refused: set[int] = set()  # rows to dead-letter at the next fetch

    async def run(self) -> None:
        app, bus, state = self.app, self.bus, self.app.spine
        window = app.cfg.delivery.outbox_max_inflight
        inflight = self._inflight
        while True:
            if not bus.connected.is_set():
                await bus.connected.wait()
            state.outbox.clear()
            await app.clock_settled()
            room = window - len(inflight)
            rows = await app.journal.outbox_fetch(room, list(inflight)) if room > 0 else []
            rows = await self._drop_refused(rows)
            for r in rows:
                await self._publish(r)
            state.sending = len(inflight)
            if not rows or len(inflight) >= window:
                await self._wait(timeout=5.0 if inflight else None)
            await self._settle()
            state.sending = len(inflight)

    async def _publish(self, r: OutboxRow) -> None:
        props = PROPS_DEC.decode(r.props) if r.props else {}
        try:
            if not is_publishable(r.topic):
                raise ValueError("not a valid MQTT topic to publish on")
            fut = self.bus.publish(r.topic, r.payload, qos=r.qos, retain=r.retain,
                                   correlation=props.get("c"))
        except (ValueError, TypeError, OverflowError) as e:
            await self.unsendable(r, str(e))  # paho refuses it (wildcards, too long...)
            return
        self._inflight[r.id] = fut
        sent = time.perf_counter()

        def done(f: asyncio.Future[None], row_id: int = r.id) -> None:
            ok = not f.cancelled() and f.exception() is None
            if ok:
                self.app.metrics.stage("publish", time.perf_counter() - sent)
            self._finished.put_nowait((row_id, ok))

        fut.add_done_callback(done)

    async def _drop_refused(self, rows: list[OutboxRow]) -> list[OutboxRow]:
        """Dead-letter the rows that failed too often; keep the rest (and those in flight)."""
        keep = []
        for r in rows:
            if r.id in self._refused:
                self._refused.discard(r.id)
                self._failures.pop(r.id, None)
                await self.unsendable(r, f"publish failed {SEND_ATTEMPTS} times")
            elif r.id in self._inflight or self._failures.get(r.id, 0) < SEND_ATTEMPTS:
                keep.append(r)
        return keep

    async def _wait(self, timeout: float | None) -> None:
        """Until the outbox is woken or a publish completes."""
        waiter = asyncio.ensure_future(self.app.spine.outbox.wait())
        getter = asyncio.ensure_future(self._finished.get())
        try:
            await asyncio.wait({waiter, getter}, return_when=asyncio.FIRST_COMPLETED,
                               timeout=timeout)
        finally:
            waiter.cancel()
            if not getter.done():
                getter.cancel()
            elif not getter.cancelled():
                self._finished.put_nowait(getter.result())

    async def _settle(self) -> None:
        """Record the acknowledged rows as sent; count the failed ones."""
        done_ids: list[int] = []
        while not self._finished.empty():
            row_id, ok = self._finished.get_nowait()
            self._inflight.pop(row_id, None)
            if ok:
                done_ids.append(row_id)
                self._failures.pop(row_id, None)
            else:
                self._failures[row_id] = self._failures.get(row_id, 0) + 1
                if self._failures[row_id] >= SEND_ATTEMPTS:
                    self._refused.add(row_id)
        if done_ids:
            await self.app.journal.outbox_done(done_ids)
            self.app.spine.stats["out"] += len(done_ids)

    async def unsendable(self, row: OutboxRow, why: str) -> None:
        """An outbox row that can never be published: a bounded dead-letter copy (never of a
        dead letter: no loops), then gone from the outbox."""
        app = self.app
        log.warning("outbox row %d to %.80r cannot be published: %s", row.id, row.topic, why)
        app.note_error(f"unsendable {row.kind}: {why[:200]}")
        if row.kind != "dlq":
            await app.journal.enqueue([dead_letter(
                app.topics, row.topic[:1024], row.payload[:4096],
                f"cannot publish the {row.kind}: {why}", "unpublishable", None, 0)])
        await app.journal.outbox_done([row.id])
        app.spine.stats["dead"] += 1

    async def flush(self, deadline: float) -> None:
        """Shutdown: publish what is left while the broker is reachable, until ``deadline``."""
        state = self.app.spine
        state.wake_outbox()
        while self.bus.connected.is_set() and time.monotonic() < deadline:
            if self.app.journal.outbox_rows <= 0 and not state.sending:
                break
            await asyncio.sleep(0.05)


async def release_timers(app: App) -> None:
    """Move due scheduled messages to the outbox; sleep until the next one is due."""
    state = app.spine
    while True:
        state.timers.clear()
        moved, nxt = await app.journal.release_due()
        if moved:
            state.wake_outbox()
        timeout = None if nxt is None else max(0.0, nxt - app.clock())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.timers.wait(), timeout)
