"""The model pool: load on first use, one generation at a time per model, idle unload, LRU.

Each model has its own thread in the daemon (which, for native runtimes, talks to the
model's worker process: :mod:`edged.models.process`), so generation never runs on the event
loop and two models can generate at once. Requests for a busy model wait in a priority queue
(higher ``priority`` first, then arrival order). Before a load the pool checks a memory
estimate against the budget and evicts idle models (least recently used first) or refuses
with a clear error rather than risking the OOM killer. A model that is generating is never
evicted.

Supervision: a call past the model's ``timeout_s`` stops its worker (the call fails, the next
one starts a new worker); a worker that dies (SIGSEGV, abort, the OOM killer) fails the call
in flight with :class:`~edged.models.process.WorkerCrashed`, and the next call restarts it
after a back-off that doubles per crash; ``resources.crash_limit`` crashes within
``crash_window_s`` mark the model failed (status degraded, a ``model_failed`` event) until
the window has passed or an operator loads it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import heapq
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, TypeVarTuple

import psutil

from ..config import ModelConfig, ResourcesConfig
from . import create_backend
from .base import Backend, Generation, GenerationRequest, ModelError, ModelUnavailable
from .process import WorkerCrashed, describe_exit

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

log = logging.getLogger("edged.models")

EmitFn = Callable[[str, dict[str, Any]], Awaitable[None]]
LOAD_TIMEOUT_S = 600.0  # a load that takes longer is a hang (a large model on an SD card: ~1 min)


class ModelMemoryError(ModelError):
    """Loading would exceed the memory budget and nothing idle can be evicted."""


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


MMAP_THRESHOLD = 1 << 20


def pin_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> bool:
    """Serve every C allocation of ``nbytes`` or more with its own mmap, returned to the OS
    when freed (glibc only; process-wide). glibc's default raises that threshold each time
    a large block is freed, up to 32 MB: after that, the transient 20-25 MB arrays that
    llama-cpp-python makes per generation (a state's logits, a mask over them) come from the
    heap and leave it fragmented. Measured: 150 generations with the prompt cache on held
    +130 MB over the loaded model with the default, +70-80 MB with the threshold pinned."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        return bool(ctypes.CDLL(name).mallopt(-3, nbytes))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


class ModelFailed(ModelUnavailable):
    """The model crashed too often recently; it is not restarted until the window passes."""


@dataclass
class _Crashes:
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


@dataclass
class _Slot:
    alias: str
    cfg: ModelConfig
    backend: Backend | None = None
    executor: ThreadPoolExecutor | None = None
    busy: bool = False
    busy_since: float = 0.0  # monotonic: when the current holder got it
    waiters: list[tuple[int, int, asyncio.Future[None]]] = field(default_factory=list)
    last_used: float = 0.0
    loaded_at: float = 0.0
    load_seconds: float = 0.0
    rss_delta: int = 0
    generations: int = 0
    tokens: int = 0
    gen_seconds: float = 0.0
    estimate: int = 0
    crashes: _Crashes = field(default_factory=_Crashes)
    timeouts: int = 0

    @property
    def loaded(self) -> bool:
        return self.backend is not None and self.backend.loaded


class ModelPool:
    def __init__(
        self,
        models: dict[str, ModelConfig],
        resources: ResourcesConfig,
        *,
        emit: EmitFn | None = None,
        clock: Callable[[], float] = time.monotonic,
        available_memory: Callable[[], int] | None = None,
        backend_factory: Callable[[str, ModelConfig], Backend] = create_backend,
    ) -> None:
        self.resources = resources
        self.clock = clock
        self._emit = emit
        self._available = available_memory or (lambda: int(psutil.virtual_memory().available))
        self._factory = backend_factory
        self._slots = {alias: _Slot(alias, cfg) for alias, cfg in models.items()}
        self._seq = itertools.count()
        self._load_lock = asyncio.Lock()
        self._idle = asyncio.Condition()
        self.threads_cap: int | None = None  # thermal policy: at most this many threads
        self.stats = {"loads": 0, "unloads": 0, "evictions": 0, "refused": 0}
        # the daemon's metrics: ("model", seconds) per generation, waiting and loading included
        self.on_timing: Callable[[str, float], None] | None = None

    # -- public API -----------------------------------------------------------------------------

    @property
    def aliases(self) -> list[str]:
        return list(self._slots)

    def loaded(self) -> list[str]:
        return [a for a, s in self._slots.items() if s.loaded]

    async def generate(self, alias: str, req: GenerationRequest, *, priority: int = 5,
                       on_token: Callable[[str], None] | None = None) -> Generation:
        """Generate with a model, loading it first if needed. ``on_token`` runs on the loop."""
        slot = self._slot(alias)
        t0 = time.perf_counter()
        await self._acquire(slot, priority)
        try:
            await self._ensure_loaded(slot)
            assert slot.backend is not None and slot.executor is not None
            loop = asyncio.get_running_loop()
            cb = None
            if on_token is not None:
                def cb(piece: str) -> None:
                    loop.call_soon_threadsafe(on_token, piece)
            gen: Generation = await self._run(slot, slot.backend.generate, req, cb,
                                              deadline=slot.cfg.timeout_s)
            slot.generations += 1
            slot.tokens += gen.completion_tokens
            slot.gen_seconds += gen.seconds
            if self.on_timing is not None:
                self.on_timing("model", time.perf_counter() - t0)
            return gen
        finally:
            await self._release(slot)

    async def stream(self, alias: str, req: GenerationRequest, *, priority: int = 5
                     ) -> AsyncIterator[str]:
        """Yield text pieces as they are generated."""
        q: asyncio.Queue[str | None] = asyncio.Queue()
        task = asyncio.ensure_future(self.generate(alias, req, priority=priority,
                                                   on_token=q.put_nowait))
        task.add_done_callback(lambda _t: q.put_nowait(None))
        try:
            while (piece := await q.get()) is not None:
                yield piece
            await task  # re-raise a generation error
        finally:
            if not task.done():
                task.cancel()

    async def embed(self, alias: str, texts: list[str], *, priority: int = 5
                    ) -> list[list[float]]:
        slot = self._slot(alias)
        await self._acquire(slot, priority)
        try:
            await self._ensure_loaded(slot)
            assert slot.backend is not None
            vectors: list[list[float]] = await self._run(slot, slot.backend.embed, texts,
                                                         deadline=slot.cfg.timeout_s)
            return vectors
        finally:
            await self._release(slot)

    async def count_tokens(self, alias: str, text: str) -> int:
        slot = self._slot(alias)
        await self._acquire(slot, 9)
        try:
            await self._ensure_loaded(slot)
            assert slot.backend is not None
            n: int = await self._run(slot, slot.backend.count_tokens, text,
                                     deadline=slot.cfg.timeout_s)
            return n
        finally:
            await self._release(slot)

    async def load(self, alias: str, *, reset: bool = False) -> None:
        """Load now; ``reset`` (an operator's request) clears a failed verdict first."""
        slot = self._slot(alias)
        if reset:
            slot.crashes.reset()
        await self._acquire(slot, 9)
        try:
            await self._ensure_loaded(slot)
        finally:
            await self._release(slot)

    async def unload(self, alias: str, reason: str = "request") -> bool:
        """Unload now if idle; False when it is busy (never unloaded mid-generation)."""
        slot = self._slot(alias)
        async with self._load_lock:
            if slot.busy or not slot.loaded:
                return False
            await self._unload(slot, reason)
            return True

    async def unload_idle(self, reason: str) -> list[str]:
        """Unload every loaded model that is not generating (memory pressure)."""
        done = []
        async with self._load_lock:
            for slot in self._slots.values():
                if slot.loaded and not slot.busy:
                    await self._unload(slot, reason)
                    done.append(slot.alias)
        return done

    async def set_threads(self, cap: int | None) -> None:
        """Thermal policy: cap the threads of loaded models (None restores the config)."""
        self.threads_cap = cap
        for slot in self._slots.values():
            if slot.loaded and slot.backend is not None and slot.executor is not None:
                n = min(slot.cfg.threads, cap) if cap else slot.cfg.threads
                with contextlib.suppress(ModelError):
                    await asyncio.get_running_loop().run_in_executor(
                        slot.executor, slot.backend.set_threads, n)

    async def run_reaper(self) -> None:
        """Unload models idle for ``resources.idle_unload_s`` (0: never); notice workers
        that died while idle."""
        idle = self.resources.idle_unload_s
        while True:
            await asyncio.sleep(min(max(idle / 4, 0.05), 5.0) if idle > 0 else 5.0)
            await self.check_workers()
            if idle > 0:
                await self.reap_idle()

    async def check_workers(self) -> list[str]:
        """Loaded models whose worker process is gone while idle (OOM-killed, killed by
        hand): counted as crashes, marked unloaded; the next call restarts them."""
        dead = []
        for slot in self._slots.values():
            b = slot.backend
            worker = getattr(b, "worker", None)
            if slot.loaded and not slot.busy and b is not None and worker is not None \
                    and not worker.alive():
                reason = describe_exit(worker.proc.poll() if worker.proc else None)
                b.unload()
                await self._crashed(slot, WorkerCrashed(reason, reason=f"{reason} while idle"))
                dead.append(slot.alias)
        return dead

    async def reap_idle(self) -> list[str]:
        idle = self.resources.idle_unload_s
        now = self.clock()
        done = []
        async with self._load_lock:
            for slot in self._slots.values():
                if slot.loaded and not slot.busy and not slot.waiters and \
                        now - slot.last_used >= idle:
                    await self._unload(slot, f"idle {now - slot.last_used:.0f} s")
                    done.append(slot.alias)
        return done

    async def close(self) -> None:
        async with self._load_lock:
            for slot in self._slots.values():
                if slot.loaded:
                    await self._unload(slot, "shutdown")
                if slot.executor is not None:
                    slot.executor.shutdown(wait=False)
                    slot.executor = None

    def stuck(self, limit_s: float) -> list[str]:
        """Models held (loading or generating) for longer than ``limit_s``."""
        now = time.monotonic()
        return [s.alias for s in self._slots.values()
                if s.busy and now - s.busy_since > limit_s]

    def failed(self) -> dict[str, str]:
        """Models marked failed after repeated crashes, with why."""
        now = time.monotonic()
        return {a: why for a, s in self._slots.items() if (why := s.crashes.check(now))}

    def describe(self) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        for slot in self._slots.values():
            backend = slot.backend or self._peek_backend(slot)
            d = backend.describe() if backend is not None else {
                "alias": slot.alias, "backend": slot.cfg.backend, "path": slot.cfg.path,
                "size_bytes": 0, "loaded": False}
            d.update(
                loaded=slot.loaded, busy=slot.busy, queued=len(slot.waiters),
                generations=slot.generations,
                tokens_per_s=round(slot.tokens / slot.gen_seconds, 1) if slot.gen_seconds else 0,
                load_seconds=round(slot.load_seconds, 3),
                rss_delta_mb=round(slot.rss_delta / 2**20, 1) if slot.loaded else 0,
                idle_s=round(now - slot.last_used, 1) if slot.loaded else None,
                crashes=slot.crashes.total, last_crash=slot.crashes.last,
                timeouts=slot.timeouts, failed=slot.crashes.check(time.monotonic()),
            )
            out.append(d)
        return out

    # -- internals ------------------------------------------------------------------------------

    def _slot(self, alias: str) -> _Slot:
        try:
            return self._slots[alias]
        except KeyError:
            raise ModelError(f"no model {alias!r}; configured: "
                             f"{', '.join(self._slots) or 'none'}") from None

    def _peek_backend(self, slot: _Slot) -> Backend | None:
        try:
            slot.backend = self._factory(slot.alias, slot.cfg)
        except ModelError:
            return None
        return slot.backend

    async def _acquire(self, slot: _Slot, priority: int) -> None:
        if not slot.busy and not slot.waiters:
            slot.busy = True
            slot.busy_since = time.monotonic()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (-priority, next(self._seq), fut)
        heapq.heappush(slot.waiters, entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                await self._release(slot)  # we were handed the model: pass it on
            elif entry in slot.waiters:
                slot.waiters.remove(entry)
                heapq.heapify(slot.waiters)
            raise

    async def _release(self, slot: _Slot) -> None:
        slot.last_used = self.clock()
        while slot.waiters:
            _p, _s, fut = heapq.heappop(slot.waiters)
            if not fut.done():
                fut.set_result(None)  # hand over: stays busy
                slot.busy_since = time.monotonic()
                return
        slot.busy = False
        async with self._idle:
            self._idle.notify_all()

    async def _ensure_loaded(self, slot: _Slot) -> None:
        if slot.loaded:
            return
        failed = slot.crashes.check(time.monotonic())
        if failed:
            raise ModelFailed(f"model {slot.alias!r} is failed: {failed}; it is tried again "
                              f"after the window, or now with `edged models load "
                              f"{slot.alias}`")
        wait = slot.crashes.retry_at - time.monotonic()
        if wait > 0:  # restart back-off after a crash
            await asyncio.sleep(wait)
        async with self._load_lock:
            if slot.loaded:
                return
            if slot.backend is None:
                slot.backend = self._factory(slot.alias, slot.cfg)
            slot.estimate = slot.backend.memory_estimate()
            await self._make_room(slot)
            if slot.executor is None:
                slot.executor = ThreadPoolExecutor(1, thread_name_prefix=f"model-{slot.alias}")
            before = rss_bytes()
            t0 = time.perf_counter()
            try:
                await self._run(slot, slot.backend.load, deadline=LOAD_TIMEOUT_S, what="load")
                if self.threads_cap and self.threads_cap < slot.cfg.threads:
                    await self._run(slot, slot.backend.set_threads, self.threads_cap)
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
            await self._event("model_loaded", slot.alias, seconds=round(slot.load_seconds, 3),
                              rss_delta_mb=round(slot.rss_delta / 2**20, 1))

    async def _make_room(self, slot: _Slot) -> None:
        """Evict idle models (LRU) until the count and memory limits allow ``slot``."""
        res = self.resources
        deadline = self.clock() + 60.0
        while True:
            others = [s for s in self._slots.values() if s.loaded and s is not slot]
            over_count = len(others) >= res.max_loaded_models
            room = self._room(others)
            if not over_count and slot.estimate <= room:
                return
            idle = sorted((s for s in others if not s.busy), key=lambda s: s.last_used)
            if idle:
                victim = idle[0]
                why = "max_loaded_models" if over_count else "memory budget"
                await self._unload(victim, f"evicted for {slot.alias} ({why})")
                self.stats["evictions"] += 1
                continue
            if not over_count or self.clock() > deadline:
                self.stats["refused"] += 1
                raise ModelMemoryError(
                    f"cannot load {slot.alias!r}: needs ~{slot.estimate / 2**20:.0f} MB, "
                    f"{max(room, 0) / 2**20:.0f} MB available within the budget"
                    + (" and every loaded model is busy" if others else "")
                )
            # Every loaded model is generating: wait for one to become idle (never evict it).
            self._load_lock.release()
            try:
                async with self._idle:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._idle.wait(), 1.0)
            finally:
                await self._load_lock.acquire()

    def _room(self, loaded: list[_Slot]) -> int:
        """Bytes a new model may use: the configured budget minus the loaded estimates, or
        what the system has available minus the reserve."""
        res = self.resources
        if res.memory_budget_mb > 0:
            return res.memory_budget_mb * 2**20 - sum(s.estimate for s in loaded)
        return self._available() - res.min_free_memory_mb * 2**20

    async def _unload(self, slot: _Slot, reason: str) -> None:
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
        await self._event("model_unloaded", slot.alias, reason=reason,
                          freed_mb=round(freed / 2**20, 1))

    async def _run(self, slot: _Slot, fn: Callable[[*Ts], T], *args: *Ts,
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
                await self._crashed(slot, e)
            else:
                log.warning("model %s: %s", slot.alias, e.reason)
                await self._event("model_timeout", slot.alias, reason=e.reason)
            raise
        except asyncio.CancelledError:
            if not fut.done():
                abort = getattr(slot.backend, "abort", None)
                if abort is not None:  # nobody wants the answer: do not wait for it
                    abort(f"was stopped: its {what} was cancelled")
                await asyncio.shield(asyncio.wait({fut}))
            raise

    async def _crashed(self, slot: _Slot, e: WorkerCrashed) -> None:
        failed = slot.crashes.record(e.reason, self.resources, time.monotonic())
        log.error("model %s: worker %s", slot.alias, e.reason)
        await self._event("model_crashed", slot.alias, reason=e.reason,
                          crashes=len(slot.crashes.times))
        if failed:
            log.error("model %s failed: %s", slot.alias, slot.crashes.failed)
            await self._event("model_failed", slot.alias, reason=slot.crashes.failed)

    async def _event(self, kind: str, alias: str, **data: Any) -> None:
        if self._emit is not None:
            with contextlib.suppress(Exception):
                await self._emit(kind, {"model": alias, **data})
