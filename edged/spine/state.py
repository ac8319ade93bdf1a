"""What the spine's three tasks share: counters, the requests in flight, and the events that
wake each other. Written by ingest, dispatch and sender; read by status and metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

STAT_KEYS = ("in", "duplicates", "rejected", "processed", "failed", "dead", "out", "sink")


@dataclass
class SpineState:
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAT_KEYS, 0))
    open: int = 0  # journaled and not finished (received + processing)
    active: dict[int, asyncio.Task[None]] = field(default_factory=dict)  # inbox id -> its task
    accepted_at: dict[int, float] = field(default_factory=dict)  # inbox id -> when journaled
    sending: int = 0  # outbox rows published and not yet acknowledged
    stopping: bool = False
    work: asyncio.Event = field(default_factory=asyncio.Event)  # dispatcher: something to claim
    outbox: asyncio.Event = field(default_factory=asyncio.Event)  # sender: rows to publish
    timers: asyncio.Event = field(default_factory=asyncio.Event)  # timers: a new due time

    def wake_outbox(self) -> None:
        self.outbox.set()

    def wake_timers(self) -> None:
        self.timers.set()

    def finished(self, inbox_id: int, *, open_: bool = True) -> None:
        """A request left processing: done or dead (``open_``), or handed back for later."""
        self.active.pop(inbox_id, None)
        if open_:
            self.open = max(0, self.open - 1)
        self.work.set()
