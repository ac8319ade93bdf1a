"""Worker supervision for the model pool (:mod:`edged.models.pool`).

Starting and stopping a model's backend on its thread, calls under a deadline (past it the
worker is stopped), crash counting with a restart back-off that doubles per crash, and the
failed verdict after ``resources.crash_limit`` crashes within ``crash_window_s``. Kept apart
from the pool, which decides which model runs when (queueing, memory budget, idle unload).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, TypeVarTuple

import psutil

from ..config import ModelConfig, ResourcesConfig
from .base import Backend, ModelError, ModelUnavailable
from .process import WorkerCrashed, describe_exit

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

log = logging.getLogger("edged.models")

EmitFn = Callable[[str, dict[str, Any]], Awaitable[None]]
LOAD_TIMEOUT_S = 600.0  # a load that takes longer is a hang (a large model on an SD card: ~1 min)


def trim_heap() -> bool:
    """Give freed C-heap pages back to the OS (glibc only); True when it did something."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


def rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


class ModelFailed(ModelUnavailable):
    """The model crashed too often recently; it is not restarted until the window passes."""


@dataclass
class Crashes:
    """A model's recent worker crashes: back-off and the failed verdict."""

    times: list[float] = field(default_factory=list)  # monotonic, within the window
    total: int = 0
    last: str = ""
    failed: str = ""  # why the model is failed ("" while it may restart)
    failed_until: float = 0.0
    retry_at: float = 0.0  # no restart before this (monotonic)

    def record(self, reason: str, res: ResourcesConfig, now: float) -> bool:
        """Count a crash; True when it makes the model failed."""
        self.times = [t for t in self.times if now - t < res.crash_window_s] + [now]
        self.total += 1
        self.last = reason
        self.retry_at = now + res.restart_backoff_s * 2 ** (len(self.times) - 1)
        if len(self.times) >= res.crash_limit:
            self.failed = (f"its worker crashed {len(self.times)} times within "
                           f"{res.crash_window_s:g} s (last: {reason})")
            self.failed_until = self.times[0] + res.crash_window_s
            return True
        return False

    def check(self, now: float) -> str:
        """Why the model may not start now ("" when it may)."""
        if self.failed and now >= self.failed_until:
            self.failed, self.times = "", []
        return self.failed

    def reset(self) -> None:
        self.failed, self.times, self.retry_at = "", [], 0.0


class Supervised(Protocol):
    """What supervision uses of a pool slot (:class:`edged.models.pool._Slot`)."""

    alias: str
    cfg: ModelConfig
    backend: Backend | None
    executor: ThreadPoolExecutor | None
    busy: bool
    last_used: float
    loaded_at: float
    load_seconds: float
    rss_delta: int
    crashes: Crashes
    timeouts: int

    @property
    def loaded(self) -> bool: ...


class Supervisor:
    """Runs each model's backend on the model's own thread and watches its worker."""

    def __init__(self, resources: ResourcesConfig, emit: EmitFn | None, *,
                 clock: Callable[[], float], stats: dict[str, int]) -> None:
        self.resources = resources
        self._emit = emit
        self.clock = clock
        self.stats = stats  # the pool's: "loads" and "unloads" are counted here

    async def may_start(self, slot: Supervised) -> None:
        """Raise :class:`ModelFailed` while the model is failed; else wait out the restart
        back-off of its last crash."""
        failed = slot.crashes.check(time.monotonic())
        if failed:
            raise ModelFailed(f"model {slot.alias!r} is failed: {failed}; it is tried again "
                              f"after the window, or now with `edged models load "
                              f"{slot.alias}`")
        wait = slot.crashes.retry_at - time.monotonic()
        if wait > 0:  # restart back-off after a crash
            await asyncio.sleep(wait)

    async def start(self, slot: Supervised, threads_cap: int | None) -> None:
        """Load ``slot.backend`` on the model's thread (under :data:`LOAD_TIMEOUT_S`), then
        count, log and announce it."""
        assert slot.backend is not None
        if slot.executor is None:
            slot.executor = ThreadPoolExecutor(1, thread_name_prefix=f"model-{slot.alias}")
        before = rss_bytes()
        t0 = time.perf_counter()
        try:
            await self.run(slot, slot.backend.load, deadline=LOAD_TIMEOUT_S, what="load")
            if threads_cap and threads_cap < slot.cfg.threads:
                await self.run(slot, slot.backend.set_threads, threads_cap)
        except WorkerCrashed as e:
            e.args = (f"model {slot.alias!r}: its worker {e.reason} while loading",)
            raise
        slot.load_seconds = time.perf_counter() - t0
        worker = getattr(slot.backend, "worker", None)
        slot.rss_delta = worker.rss() if worker is not None else rss_bytes() - before
        slot.loaded_at = slot.last_used = self.clock()
        self.stats["loads"] += 1
        log.info("loaded model %s (%s) in %.2f s, +%.0f MB RSS", slot.alias,
                 slot.cfg.backend, slot.load_seconds, slot.rss_delta / 2**20)
        await self.event("model_loaded", slot.alias, seconds=round(slot.load_seconds, 3),
                         rss_delta_mb=round(slot.rss_delta / 2**20, 1))

    async def stop(self, slot: Supervised, reason: str) -> None:
        """Unload ``slot.backend`` on the model's thread and give the C heap back; count,
        log and announce it."""
        assert slot.backend is not None and slot.executor is not None
        loop = asyncio.get_running_loop()
        worker = getattr(slot.backend, "worker", None)
        before = worker.rss() if worker is not None else rss_bytes()
        await loop.run_in_executor(slot.executor, slot.backend.unload)
        if worker is not None:  # the worker's memory went with its process
            trimmed, freed = False, before
        else:
            trimmed = await loop.run_in_executor(slot.executor, trim_heap)
            freed = before - rss_bytes()
        self.stats["unloads"] += 1
        log.info("unloaded model %s (%s): %.0f MB returned%s", slot.alias, reason,
                 freed / 2**20, " (heap trimmed)" if trimmed else "")
        await self.event("model_unloaded", slot.alias, reason=reason,
                         freed_mb=round(freed / 2**20, 1))

    async def set_threads(self, slots: Iterable[Supervised], cap: int | None) -> None:
        """Cap the threads of the loaded models (None: back to each one's config)."""
        for slot in slots:
            if slot.loaded and slot.backend is not None and slot.executor is not None:
                n = min(slot.cfg.threads, cap) if cap else slot.cfg.threads
                with contextlib.suppress(ModelError):
                    await asyncio.get_running_loop().run_in_executor(
                        slot.executor, slot.backend.set_threads, n)

    async def run(self, slot: Supervised, fn: Callable[[*Ts], T], *args: *Ts,
                  deadline: float | None = None, what: str = "call") -> T:
        """``fn(*args)`` on the model's thread. Past ``deadline`` the worker is stopped (the
        call fails with WorkerCrashed); a crash is recorded. If the caller is cancelled the
        model stays held until the call returns, so that calls never overlap."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(slot.executor, fn, *args)
        try:
            done, _ = await asyncio.wait({fut}, timeout=deadline)
            if not done:
                abort = getattr(slot.backend, "abort", None)
                if abort is None:  # in-process: nothing can stop it; wait for it
                    return await fut
                slot.timeouts += 1
                abort(f"was stopped: {what} exceeded its deadline of {deadline:g} s")
            return fut.result() if fut.done() else await fut
        except WorkerCrashed as e:
            if not e.deadline:
                await self.crashed(slot, e)
            else:
                log.warning("model %s: %s", slot.alias, e.reason)
                await self.event("model_timeout", slot.alias, reason=e.reason)
            raise
        except asyncio.CancelledError:
            if not fut.done():
                abort = getattr(slot.backend, "abort", None)
                if abort is not None:  # nobody wants the answer: do not wait for it
                    abort(f"was stopped: its {what} was cancelled")
                await asyncio.shield(asyncio.wait({fut}))
            raise

    async def check_workers(self, slots: Iterable[Supervised]) -> list[str]:
        """Loaded models whose worker process is gone while idle (OOM-killed, killed by
        hand): counted as crashes, marked unloaded; the next call restarts them."""
        dead = []
        for slot in slots:
            b = slot.backend
            worker = getattr(b, "worker", None)
            if slot.loaded and not slot.busy and b is not None and worker is not None \
                    and not worker.alive():
                reason = describe_exit(worker.proc.poll() if worker.proc else None)
                b.unload()
                await self.crashed(slot, WorkerCrashed(reason, reason=f"{reason} while idle"))
                dead.append(slot.alias)
        return dead

    def failed(self, slots: Iterable[Supervised]) -> dict[str, str]:
        """Models marked failed after repeated crashes, with why."""
        now = time.monotonic()
        return {s.alias: why for s in slots if (why := s.crashes.check(now))}

    async def crashed(self, slot: Supervised, e: WorkerCrashed) -> None:
        failed = slot.crashes.record(e.reason, self.resources, time.monotonic())
        log.error("model %s: worker %s", slot.alias, e.reason)
        await self.event("model_crashed", slot.alias, reason=e.reason,
                         crashes=len(slot.crashes.times))
        if failed:
            log.error("model %s failed: %s", slot.alias, slot.crashes.failed)
            await self.event("model_failed", slot.alias, reason=slot.crashes.failed)

    async def event(self, kind: str, alias: str, **data: Any) -> None:
        """A model event (``model_loaded``, ``model_crashed``, ...); never fails the caller."""
        if self._emit is not None:
            with contextlib.suppress(Exception):
                await self._emit(kind, {"model": alias, **data})
