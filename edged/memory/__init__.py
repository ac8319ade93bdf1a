"""Memory: short-term turns, long-term memories (sqlite-vec), working memory, consolidation.

- :mod:`.store`: the SQLite + sqlite-vec database (one thread drives it), with its turns in
  :mod:`.turns`, its vectors in :mod:`.vectors` and its connection in :mod:`.db`;
- :mod:`.recall`: :class:`Memory`, what agents use (record turns, recall, remember, forget);
- :mod:`.working`: the token-budgeted context of a model call;
- :mod:`.consolidate`: the scheduled job that turns turns into memories.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .consolidate import Consolidator, Decision, Generate
from .recall import EmbedFn, Memory
from .store import KINDS, MemoryRow, MemoryStore, MemoryStoreError, Turn
from .working import WorkingMemory

if TYPE_CHECKING:
    from ..config import Config
    from ..models.pool import ModelPool
    from ..models.process import WorkerEmbedder


async def open_embedder(cfg: Config, pool: ModelPool | None
                        ) -> tuple[EmbedFn, str, WorkerEmbedder | None]:
    """(async embed function, the identity the memory database records, the loaded local
    embedder or None) for ``memory.embedder``: a bundled / folder ONNX embedder in its own
    worker process, or ``model:<alias>``, embeddings from a configured model through the
    pool (which only that needs)."""
    spec = cfg.memory.embedder
    if spec.startswith("model:"):
        if pool is None:
            raise ValueError(f"memory.embedder {spec!r} needs the model pool")
        alias = spec.split(":", 1)[1]
        m = cfg.models[alias]
        ident = f"{spec} ({m.backend} {m.path or m.base_url} {m.model or ''})".strip()
        return (lambda texts: pool.embed(alias, texts)), ident, None
    from concurrent.futures import ThreadPoolExecutor

    from ..models.process import WorkerEmbedder

    embedder = WorkerEmbedder(spec)  # in its own process: see edged.models.process
    thread = ThreadPoolExecutor(1, thread_name_prefix="embedder")  # not the loop's default pool
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(thread, embedder.load)

    async def embed(texts: list[str]) -> list[list[float]]:
        return await loop.run_in_executor(thread, embedder.embed, texts)
    return embed, spec, embedder


def schema_generate(pool: ModelPool, alias: str, *, priority: int = 1,
                    model_for: Callable[[str], str] = lambda a: a) -> Generate:
    """Consolidation's model call: a short answer under a JSON schema, at low priority
    (after every request)."""
    async def generate(prompt: str, schema: dict[str, Any]) -> str:
        from ..models import GenerationRequest

        gen = await pool.generate(model_for(alias), GenerationRequest(
            prompt=prompt, json_schema=schema, max_tokens=16, temperature=0.0),
            priority=priority)
        return str(gen.text)
    return generate


class MemoryAccess:
    """What the built-in memory tools get (``ToolContext.memory``)."""

    def __init__(self, memory: Memory, consolidator: Consolidator) -> None:
        self.memory = memory
        self.consolidator = consolidator

    async def remember(self, scope: str, text: str, kind: str | None, source: str
                       ) -> Decision | None:
        return await self.consolidator.absorb(scope, text, kind, [source])

    async def search(self, scope: str, query: str, k: int | None = None,
                     kinds: Sequence[str] | None = None) -> list[MemoryRow]:
        return await self.memory.recall(query, scope, k=k, kinds=kinds)

    async def important(self, scope: str, k: int | None = None) -> list[MemoryRow]:
        """A scope's facts, preferences and decisions, most important first."""
        k = k or self.memory.cfg.recall_k
        rows = await self.memory.run(self.memory.store.list, scope, limit=200)
        rows = [r for r in rows if r.kind in ("fact", "preference", "decision")]
        return sorted(rows, key=lambda r: (-r.importance, -r.updated))[:k]


__all__ = ["KINDS", "Consolidator", "Decision", "Memory", "MemoryAccess", "MemoryRow",
           "MemoryStore", "MemoryStoreError", "Turn", "WorkingMemory", "open_embedder",
           "schema_generate"]
