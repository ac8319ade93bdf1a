"""Memory: short-term turns, long-term memories (sqlite-vec), working memory, consolidation.

- :mod:`.store`: the SQLite + sqlite-vec database (one thread drives it);
- :mod:`.recall`: :class:`Memory`, what agents use (record turns, recall, remember, forget);
- :mod:`.working`: the token-budgeted context of a model call;
- :mod:`.consolidate`: the scheduled job that turns turns into memories.
"""

from __future__ import annotations

from typing import Any

from .consolidate import Consolidator, Decision
from .recall import Memory
from .store import KINDS, MemoryRow, MemoryStore, MemoryStoreError, Turn
from .working import WorkingMemory


class MemoryAccess:
    """What the built-in memory tools get (``ToolContext.memory``)."""

    def __init__(self, memory: Memory, consolidator: Consolidator) -> None:
        self.memory = memory
        self.consolidator = consolidator

    async def remember(self, scope: str, text: str, kind: str | None, source: str
                       ) -> Decision | None:
        return await self.consolidator.absorb(scope, text, kind, [source])

    async def search(self, scope: str, query: str, k: int | None = None,
                     kinds: Any = None) -> list[MemoryRow]:
        return await self.memory.recall(query, scope, k=k, kinds=kinds)

    async def important(self, scope: str, k: int | None = None) -> list[MemoryRow]:
        """A scope's facts, preferences and decisions, most important first."""
        k = k or self.memory.cfg.recall_k
        rows = await self.memory.run(self.memory.store.list, scope, limit=200)
        rows = [r for r in rows if r.kind in ("fact", "preference", "decision")]
        return sorted(rows, key=lambda r: (-r.importance, -r.updated))[:k]


__all__ = ["KINDS", "Consolidator", "Decision", "Memory", "MemoryAccess", "MemoryRow",
           "MemoryStore", "MemoryStoreError", "Turn", "WorkingMemory"]
