"""The model pool: load on first use, one generation at a time per model, idle unload, LRU.

Each model has its own thread in the daemon (which, for native runtimes, talks to the
model's worker process: :mod:`edged.models.process`), so generation never runs on the event
loop and two models can generate at once. Requests for a busy model wait in a priority queue
(higher ``priority`` first, then arrival order). Before a load the pool checks a memory
estimate against the budget and evicts idle models (least recently used first) or refuses
with a clear error rather than risking the OOM killer. A model that is generating is never
evicted.

Supervision (:mod:`edged.models.supervise`): a call past the model's ``timeout_s`` stops its
worker (the call fails, the next one starts a new worker); a worker that dies (SIGSEGV,
abort, the OOM killer) fails the call in flight with
:class:`~edged.models.process.WorkerCrashed`, and the next call restarts it after a back-off
that doubles per crash; ``resources.crash_limit`` crashes within ``crash_window_s`` mark the
model failed (status degraded, a ``model_failed`` event) until the window has passed or an
operator loads it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psutil

from ..config import ModelConfig, ResourcesConfig
from . import create_backend
from .base import Backend, Generation, GenerationRequest, ModelError

# ("x as x": moved to .supervise, still imported from here by the CLI, status and tests)
from .supervise import LOAD_TIMEOUT_S as LOAD_TIMEOUT_S
from .supervise import Crashes, EmitFn, Supervisor
from .supervise import ModelFailed as ModelFailed
from .supervise import rss_bytes as rss_bytes
from .supervise import trim_heap as trim_heap


class ModelMemoryError(ModelError):
    """Loading would exceed the memory budget and nothing idle can be evicted."""


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


@dataclass
class _Slot:
    """One configured model: its backend and thread, who holds it and who waits, its numbers."""

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
    crashes: Crashes = field(default_factory=Crashes)
    timeouts: int = 0

    @property
    def loaded(self) -> bool:
        return self.backend is not None and self.backend.loaded

    def take(self) -> bool:
        """Hold the model at once if it is free and nobody waits for it."""
        if self.busy or self.waiters:
            return False
        self.busy = True
        self.busy_since = time.monotonic()
        return True

    def hand_over(self) -> bool:
        """Pass the model to the first waiter still waiting; False (and the model is free)
        when there is none."""
        while self.waiters:
            _p, _s, fut = heapq.heappop(self.waiters)
            if not fut.done():
                fut.set_result(None)  # hand over: stays busy
                self.busy_since = time.monotonic()
                return True
        self.busy = False
        return False

    def describe(self, backend: Backend | None, now: float) -> dict[str, Any]:
        """The status of this model (``backend``: its own or a fresh one that is not
        loaded, for the file facts)."""
        d = backend.describe() if backend is not None else {
            "alias": self.alias, "backend": self.cfg.backend, "path": self.cfg.path,
            "size_bytes": 0, "loaded": False}
        d.update(
            loaded=self.loaded, busy=self.busy, queued=len(self.waiters),
            generations=self.generations,
            tokens_per_s=round(self.tokens / self.gen_seconds, 1) if self.gen_seconds else 0,
            load_seconds=round(self.load_seconds, 3),
            rss_delta_mb=round(self.rss_delta / 2**20, 1) if self.loaded else 0,
            idle_s=round(now - self.last_used, 1) if self.loaded else None,
            crashes=self.crashes.total, last_crash=self.crashes.last,
            timeouts=self.timeouts, failed=self.crashes.check(time.monotonic()),
        )
        return d


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
        self._available = available_memory or (lambda: int(psutil.virtual_memory().available))
        self._factory = backend_factory
        self._slots = {alias: _Slot(alias, cfg) for alias, cfg in models.items()}
        self._seq = itertools.count()
        self._load_lock = asyncio.Lock()
        self._idle = asyncio.Condition()
        self.threads_cap: int | None = None  # thermal policy: at most this many threads
        self.stats = {"loads": 0, "unloads": 0, "evictions": 0, "refused": 0}
        # starts, stops and watches the models' workers: deadlines, crashes, failed verdicts
        self._supervisor = Supervisor(resources, emit, clock=clock, stats=self.stats)
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
            gen: Generation = await self._supervisor.run(slot, slot.backend.generate, req, cb,
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
            vectors: list[list[float]] = await self._supervisor.run(
                slot, slot.backend.embed, texts, deadline=slot.cfg.timeout_s)
            return vectors
        finally:
            await self._release(slot)

    async def count_tokens(self, alias: str, text: str) -> int:
        slot = self._slot(alias)
        await self._acquire(slot, 9)
        try:
            await self._ensure_loaded(slot)
            assert slot.backend is not None
            n: int = await self._supervisor.run(slot, slot.backend.count_tokens, text,
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
            await self._supervisor.stop(slot, reason)
            return True

    async def unload_idle(self, reason: str) -> list[str]:
        """Unload every loaded model that is not generating (memory pressure)."""
        done = []
        async with self._load_lock:
            for slot in self._slots.values():
                if slot.loaded and not slot.busy:
                    await self._supervisor.stop(slot, reason)
                    done.append(slot.alias)
        return done

    async def set_threads(self, cap: int | None) -> None:
        """Thermal policy: cap the threads of loaded models (None restores the config)."""
        self.threads_cap = cap
        await self._supervisor.set_threads(self._slots.values(), cap)

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
        return await self._supervisor.check_workers(self._slots.values())

    async def reap_idle(self) -> list[str]:
        idle = self.resources.idle_unload_s
        now = self.clock()
        done = []
        async with self._load_lock:
            for slot in self._slots.values():
                if slot.loaded and not slot.busy and not slot.waiters and \
                        now - slot.last_used >= idle:
                    await self._supervisor.stop(slot, f"idle {now - slot.last_used:.0f} s")
                    done.append(slot.alias)
        return done

    async def close(self) -> None:
        async with self._load_lock:
            for slot in self._slots.values():
                if slot.loaded:
                    await self._supervisor.stop(slot, "shutdown")
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
        return self._supervisor.failed(self._slots.values())

    def describe(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [slot.describe(slot.backend or self._peek_backend(slot), now)
                for slot in self._slots.values()]

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
        if slot.take():
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
        if slot.hand_over():
            return
        async with self._idle:
            self._idle.notify_all()

    async def _ensure_loaded(self, slot: _Slot) -> None:
        if slot.loaded:
            return
        await self._supervisor.may_start(slot)
        async with self._load_lock:
            if slot.loaded:
                return
            if slot.backend is None:
                slot.backend = self._factory(slot.alias, slot.cfg)
            slot.estimate = slot.backend.memory_estimate()
            await self._make_room(slot)
            await self._supervisor.start(slot, self.threads_cap)

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
                await self._supervisor.stop(victim, f"evicted for {slot.alias} ({why})")
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
