"""What agents and tools call: record turns, recall memories, remember, forget.

:class:`Memory` drives one :class:`~edged.memory.store.MemoryStore` from one dedicated thread
(SQLite work and vector scans never block the event loop, and the connection is never shared
between threads) and embeds through the daemon's embedder. Recall ranks the nearest memories
of a scope by similarity, then weights them by importance and recency:

    score = similarity + 0.1 * importance + 0.1 * 0.5 ** (age_days / 30)

so that among equally similar memories the important and the fresh ones come first, while a
clearly more similar memory still wins.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlean

from ..config import MemoryConfig
from .store import KINDS, MemoryRow, MemoryStore, MemoryStoreError, Turn

log = logging.getLogger("edged.memory")
T = TypeVar("T")
P = ParamSpec("P")

EmbedFn = Callable[[list[str]], Awaitable[list[list[float]]]]

IMPORTANCE_WEIGHT = 0.1
RECENCY_WEIGHT = 0.1
RECENCY_HALF_LIFE_DAYS = 30.0
# a kind's default importance: what the user said about themselves outlives chit-chat
DEFAULT_IMPORTANCE = {"preference": 0.8, "decision": 0.7, "fact": 0.6, "summary": 0.4,
                      "episode": 0.3}


def rank(rows: list[MemoryRow], now: float) -> list[MemoryRow]:
    for m in rows:
        age_days = max(0.0, now - max(m.updated, m.last_used or 0.0)) / 86400
        recency = 0.5 ** (age_days / RECENCY_HALF_LIFE_DAYS)
        m.score = (m.similarity or 0.0) + IMPORTANCE_WEIGHT * m.importance + \
            RECENCY_WEIGHT * recency
    return sorted(rows, key=lambda m: -(m.score or 0.0))


class Memory:
    """The memory service of a running daemon (or of the CLI)."""

    def __init__(self, cfg: MemoryConfig, path: str | Path, *, embed: EmbedFn | None,
                 embedder_id: str, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.store = MemoryStore(path, clock=clock)
        self.clock = clock
        self._embed = embed
        self.embedder_id = embedder_id
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="edged-memory")
        self._reembed_lock = asyncio.Lock()
        # the daemon's metrics: ("memory", seconds) per record/recent/recall on a request's path
        self.on_timing: Callable[[str, float], None] | None = None

    async def run(self, fn: Callable[P, T], *args: P.args, **kw: P.kwargs) -> T:
        """Run a store call on the memory thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: fn(*args, **kw))

    def _took(self, t0: float) -> None:
        if self.on_timing is not None:
            self.on_timing("memory", time.perf_counter() - t0)

    async def open(self) -> int:
        """Open the database and register the embedder; returns memories to re-embed."""
        await self.run(self.store.open)
        if self._embed is None:
            return 0
        dim = len((await self._embed(["dimension probe"]))[0])
        try:
            return await self.run(self.store.use_embedder, self.embedder_id, dim)
        except sqlean.Error as e:  # a damaged file that opened: as unusable as one that did not
            raise MemoryStoreError(f"cannot open the memory database {self.store.path}: "
                                   f"{e}") from e

    async def close(self) -> None:
        await self.run(self.store.close)
        self._thread.shutdown(wait=True)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if self._embed is None:
            raise MemoryStoreError("no embedder: memory search needs memory.embedder")
        return await self._embed(texts)

    # -- short-term ----------------------------------------------------------------------------

    async def record(self, scope: str, session: str, request_id: str, user: str,
                     assistant: str, tools: list[dict[str, Any]] | None = None) -> None:
        t0 = time.perf_counter()
        await self.run(self.store.add_turns, scope, session, request_id, user, assistant, tools)
        self._took(t0)

    async def recent(self, session: str, *, within_s: float | None = None) -> list[Turn]:
        t0 = time.perf_counter()
        since = self.clock() - within_s if within_s is not None else None
        turns = await self.run(self.store.recent_turns, session, max_turns=self.cfg.max_turns,
                               max_tokens=self.cfg.turn_tokens, since=since)
        self._took(t0)
        return turns

    # -- long-term -----------------------------------------------------------------------------

    async def recall(self, query: str, scope: str, *, k: int | None = None,
                     kinds: Sequence[str] | None = None, since: float | None = None,
                     min_similarity: float | None = None, touch: bool = True
                     ) -> list[MemoryRow]:
        """The k best memories of ``scope`` for ``query`` (see the module doc for the
        weighting); marks them used."""
        t0 = time.perf_counter()
        k = k or self.cfg.recall_k
        floor = self.cfg.min_similarity if min_similarity is None else min_similarity
        [vec] = await self.embed([query])
        # a few more candidates than asked: the weighting may reorder the tail
        rows = await self.run(self.store.search, vec, scope, k=max(k * 3, 10), kinds=kinds,
                              since=since)
        rows = [r for r in rows if (r.similarity or 0.0) >= floor]
        best = rank(rows, self.clock())[:k]
        if best and touch:
            await self.run(self.store.touch, [m.id for m in best])
        self._took(t0)
        return best

    async def remember(self, scope: str, text: str, kind: str = "fact", *,
                       importance: float | None = None, sources: Sequence[str] = (),
                       private: bool | None = None) -> int:
        """Store one memory as is (no ADD/UPDATE decision: see Consolidator.absorb)."""
        from ..redact import is_sensitive

        if kind not in KINDS:
            raise MemoryStoreError(f"unknown kind {kind!r}; expected one of {KINDS}")
        [vec] = await self.embed([text])
        return await self.run(self.store.add, scope, kind, text, vec,
                              importance=DEFAULT_IMPORTANCE[kind] if importance is None
                              else importance, sources=sources,
                              private=is_sensitive(text) if private is None else private)

    async def forget(self, scope: str) -> dict[str, int]:
        return await self.run(self.store.forget, scope)

    async def stats(self) -> dict[str, Any]:
        return await self.run(self.store.stats)

    # -- re-embedding --------------------------------------------------------------------------

    async def reembed(self, *, batch: int = 32, may_run: Callable[[], bool] = lambda: True,
                      progress: Callable[[int, int], None] | None = None) -> int:
        """Give every memory a vector from the current embedder, a batch at a time (crash
        safe: each batch commits; a restart picks up where it stopped). ``may_run`` is asked
        before each batch (the governor defers this work on battery / heat / pressure)."""
        done = 0
        async with self._reembed_lock:
            while may_run():
                gen = self.store.gen
                rows = await self.run(self.store.reembed_batch, batch)
                if not rows:
                    break
                vecs = await self.embed([t for _, t in rows])
                n = await self.run(self.store.set_vectors,
                                   [(i, v) for (i, _), v in zip(rows, vecs, strict=True)], gen)
                if n == 0 and gen != self.store.gen:
                    continue  # the embedder changed under us: start over with the new one
                done += len(rows)
                if progress is not None:
                    progress(done, done + await self.run(self.store.pending_vectors))
        if done:
            log.info("memory: re-embedded %d memories with %s", done, self.embedder_id)
        return done
