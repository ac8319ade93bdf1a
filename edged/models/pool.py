"""The model pool: load on first use, one generation at a time per model, idle unload, LRU.

Each model has its own worker thread, so generation never runs on the event loop and two
models can generate at once. Requests for a busy model wait in a priority queue (higher
``priority`` first, then arrival order). Before a load the pool checks a memory estimate
against the budget and evicts idle models (least recently used first) or refuses with a clear
error rather than risking the OOM killer. A model that is generating is never evicted.
After an unload the C heap is trimmed (``malloc_trim`` on glibc) so that the memory really
goes back to the system.
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
from typing import Any

import psutil

from ..config import ModelConfig, ResourcesConfig
from . import create_backend
from .base import Backend, Generation, GenerationRequest, ModelError

log = logging.getLogger("edged.models")

EmitFn = Callable[[str, dict[str, Any]], Awaitable[None]]


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
            backend = slot.backend
            gen = await loop.run_in_executor(slot.executor, backend.generate, req, cb)
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
            return await asyncio.get_running_loop().run_in_executor(
                slot.executor, slot.backend.embed, texts)
        finally:
            await self._release(slot)

    async def count_tokens(self, alias: str, text: str) -> int:
        slot = self._slot(alias)
        await self._acquire(slot, 9)
        try:
            await self._ensure_loaded(slot)
            assert slot.backend is not None
            return await asyncio.get_running_loop().run_in_executor(
                slot.executor, slot.backend.count_tokens, text)
        finally:
            await self._release(slot)

    async def load(self, alias: str) -> None:
        slot = self._slot(alias)
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
                await asyncio.get_running_loop().run_in_executor(
                    slot.executor, slot.backend.set_threads, n)

    async def run_reaper(self) -> None:
        """Unload models idle for ``resources.idle_unload_s`` (0: never)."""
        idle = self.resources.idle_unload_s
        if idle <= 0:
            return
        while True:
            await asyncio.sleep(min(max(idle / 4, 0.05), 5.0))
            await self.reap_idle()

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
            await asyncio.get_running_loop().run_in_executor(slot.executor, slot.backend.load)
            if self.threads_cap and self.threads_cap < slot.cfg.threads:
                await asyncio.get_running_loop().run_in_executor(
                    slot.executor, slot.backend.set_threads, self.threads_cap)
            slot.load_seconds = time.perf_counter() - t0
            slot.rss_delta = rss_bytes() - before
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
        before = rss_bytes()
        await asyncio.get_running_loop().run_in_executor(slot.executor, slot.backend.unload)
        trimmed = await asyncio.get_running_loop().run_in_executor(slot.executor, trim_heap)
        freed = before - rss_bytes()
        self.stats["unloads"] += 1
        log.info("unloaded model %s (%s): %.0f MB returned%s", slot.alias, reason,
                 freed / 2**20, " (heap trimmed)" if trimmed else "")
        await self._event("model_unloaded", slot.alias, reason=reason,
                          freed_mb=round(freed / 2**20, 1))

    async def _event(self, kind: str, alias: str, **data: Any) -> None:
        if self._emit is not None:
            with contextlib.suppress(Exception):
                await self._emit(kind, {"model": alias, **data})
