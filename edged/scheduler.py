"""Periodic jobs (memory consolidation, ...) on APScheduler 3, safe against clock jumps.

A Raspberry Pi has no real-time clock: it boots in the past and NTP then steps the wall
clock forward by days; a wrong NTP server can step it back. APScheduler 3 keeps its job
times in wall-clock time, so on its own:

- a jump forward makes every missed interval due at once (a burst) unless ``coalesce`` is
  set: each job here has ``coalesce=True`` (the missed runs become one), ``max_instances=1``
  and ``misfire_grace_time=None`` (a late run still runs, once);
- a jump back leaves the next run days in the future (a stall): APScheduler never notices.

So a watch compares the wall clock with the monotonic clock every few seconds; when their
difference moves by more than ``jump_s``, it logs the jump and moves each job's next run to
"now + what was left of its interval" measured on the monotonic clock, so the job keeps
its rhythm through the jump, neither early nor late. Listeners (``on_jump``) hear of it too:
the daemon's reminder timer recomputes its sleep.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("edged.scheduler")

Job = Callable[[], Awaitable[Any]]


@dataclass
class _Entry:
    name: str
    every_s: float
    due_mono: float  # when the next run is due, on the monotonic clock
    runs: int = 0


class Scheduler:
    def __init__(self, *, jump_s: float = 30.0, watch_s: float = 2.0,
                 wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._aps = AsyncIOScheduler(timezone=dt.UTC)
        self.jump_s = jump_s
        self.watch_s = watch_s
        self._wall = wall
        self._mono = mono
        self._jobs: dict[str, _Entry] = {}
        self._listeners: list[Callable[[float], None]] = []
        self.jumps: list[float] = []
        self._offset: float | None = wall() - mono()

    def every(self, name: str, seconds: float, fn: Job, *, first_in: float | None = None
              ) -> Callable[[], None]:
        """Run ``fn`` every ``seconds`` (first after ``first_in``, default one interval).
        Returns the function that removes the job."""
        from apscheduler.triggers.interval import IntervalTrigger

        first = seconds if first_in is None else first_in
        entry = _Entry(name, seconds, self._mono() + first)
        self._jobs[name] = entry

        async def run() -> None:
            entry.due_mono = self._mono() + entry.every_s
            entry.runs += 1
            try:
                await fn()
            except Exception:  # noqa: BLE001 - one failed run must not end the schedule
                log.exception("scheduled job %s failed", name)

        self._aps.add_job(run, IntervalTrigger(seconds=seconds, timezone=dt.UTC), id=name,
                          name=name, coalesce=True, max_instances=1, misfire_grace_time=None,
                          next_run_time=self._now() + dt.timedelta(seconds=first),
                          replace_existing=True)

        def remove() -> None:
            self._jobs.pop(name, None)
            if self._aps.get_job(name) is not None:
                self._aps.remove_job(name)
        return remove

    def on_jump(self, fn: Callable[[float], None]) -> Callable[[], None]:
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn)

    def describe(self) -> list[dict[str, Any]]:
        now = self._mono()
        return [{"job": e.name, "every_s": e.every_s, "runs": e.runs,
                 "next_in_s": round(max(0.0, e.due_mono - now), 1)} for e in self._jobs.values()]

    async def run(self) -> None:
        """Start the scheduler and watch the clock until cancelled."""
        self._aps.start()
        try:
            while True:
                await asyncio.sleep(self.watch_s)
                self.poll_jump()
        finally:
            self._aps.shutdown(wait=False)

    def poll_jump(self) -> float:
        """Compare the clocks now (cheap; also called before deadline-sensitive work):
        returns the jump in seconds, 0.0 when there was none."""
        offset = self._wall() - self._mono()
        if self._offset is None:
            self._offset = offset
            return 0.0
        jump = offset - self._offset
        if abs(jump) < self.jump_s:
            return 0.0  # drift and NTP slewing accumulate in the offset until they count
        self._offset = offset
        self._jumped(jump)
        return jump

    def _jumped(self, jump: float) -> None:
        self.jumps.append(jump)
        log.warning("wall clock jumped %s by %.0f s: rescheduling %d job(s) on the monotonic "
                    "clock", "forward" if jump > 0 else "back", abs(jump), len(self._jobs))
        mono = self._mono()
        for e in self._jobs.values():
            job = self._aps.get_job(e.name)
            if job is not None:
                left = max(0.0, e.due_mono - mono)
                job.modify(next_run_time=self._now() + dt.timedelta(seconds=left))
        if self._aps.running:
            self._aps.wakeup()
        for fn in list(self._listeners):
            fn(jump)

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._wall(), dt.UTC)
