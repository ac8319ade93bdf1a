"""Memory vectors: the ``vec_memories`` table (sqlite-vec ``vec0``) and the embedder that
wrote them.

The table is partitioned by scope (the device), with the kind and the time as metadata
columns, so a top-k search reads only one device's vectors and filters by kind / time
inside the index scan. The embedder (its identity and dimension) is recorded in ``meta``;
when it changes the table is recreated for the new dimension, the embedder generation goes
up and every memory waits for re-embedding (a memory's ``vec_gen`` says which generation its
vector is from). One part of :class:`edged.memory.store.MemoryStore`, on its connection.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from typing import Any

from .db import MemoryStoreError, Shared

log = logging.getLogger("edged.memory")


def pack(vector: Sequence[float]) -> bytes:
    return struct.pack(f"{len(vector)}f", *vector)


class VectorIndex:
    """The vectors of the memories and the identity, dimension and generation of their
    embedder."""

    def __init__(self, db: Shared) -> None:
        self.db = db
        self.embedder = ""  # identity of the embedder the vectors are from
        self.dim = 0
        self.gen = 0

    def load(self, meta: dict[str, str]) -> None:
        """The embedder recorded in the database's ``meta`` table."""
        self.embedder = meta.get("embedder", "")
        self.dim = int(meta.get("dim", 0) or 0)
        self.gen = int(meta.get("embedder_gen", 0) or 0)

    def use_embedder(self, identity: str, dim: int) -> int:
        """Record the embedder; on a change start a new vector table. Returns how many
        memories wait for (re-)embedding."""
        if dim <= 0:
            raise MemoryStoreError(f"embedder {identity!r} has no dimension")
        if identity != self.embedder or dim != self.dim or not self.has_table():
            with self.db.tx():
                if self.embedder and (identity != self.embedder or dim != self.dim):
                    log.warning("memory: embedder changed from %s (%d dims) to %s (%d dims): "
                                "re-embedding every memory in the background",
                                self.embedder, self.dim, identity, dim)
                self.gen += 1
                self.db.conn.execute("DROP TABLE IF EXISTS vec_memories")
                self.db.conn.execute(
                    f"CREATE VIRTUAL TABLE vec_memories USING vec0("
                    f"memory_id INTEGER PRIMARY KEY, scope TEXT PARTITION KEY, "
                    f"embedding float[{int(dim)}] distance_metric=cosine, "
                    f"kind TEXT, ts FLOAT)")
                self.db.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                    ("embedder", identity), ("dim", str(dim)), ("embedder_gen", str(self.gen))])
            self.embedder, self.dim = identity, dim
        return self.pending()

    def has_table(self) -> bool:
        return self.db.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'vec_memories'").fetchone() is not None

    def put(self, memory_id: int, scope: str, kind: str, ts: float,
            vector: Sequence[float]) -> None:
        if len(vector) != self.dim:
            raise MemoryStoreError(f"vector of {len(vector)} dims for a {self.dim}-dim store "
                                   f"(embedder {self.embedder})")
        self.db.conn.execute(
            "INSERT INTO vec_memories(memory_id, scope, embedding, kind, ts) VALUES (?,?,?,?,?)",
            (memory_id, scope, pack(vector), kind, float(ts)))

    def replace(self, memory_id: int, scope: str, kind: str, ts: float,
                vector: Sequence[float]) -> None:
        """A memory's new vector, from the current embedder."""
        self.remove(memory_id)
        self.put(memory_id, scope, kind, ts, vector)
        self.db.conn.execute("UPDATE memories SET vec_gen = ? WHERE id = ?",
                             (self.gen, memory_id))

    def remove(self, memory_id: int) -> None:
        self.db.conn.execute("DELETE FROM vec_memories WHERE memory_id = ?", (memory_id,))

    def forget(self, scope: str) -> int:
        """The vectors of one scope's memories (before the memories go): how many."""
        if not self.has_table():
            return 0
        n: int = self.db.conn.execute("DELETE FROM vec_memories WHERE memory_id IN "
                                      "(SELECT id FROM memories WHERE scope = ?)",
                                      (scope,)).rowcount
        return n

    def knn(self, vector: Sequence[float], scope: str, *, k: int,
            kinds: Sequence[str] | None, since: float | None, until: float | None
            ) -> dict[int, float]:
        """The ``k`` nearest memories of one scope: {memory id: cosine distance}."""
        if not self.dim:
            return {}
        sql = ["SELECT memory_id, distance FROM vec_memories WHERE embedding MATCH ? "
               "AND k = ? AND scope = ?"]
        args: list[Any] = [pack(vector), int(k), scope]
        if kinds:
            sql.append(f"AND kind IN ({','.join('?' * len(kinds))})")
            args.extend(kinds)
        if since is not None:
            sql.append("AND ts >= ?")
            args.append(float(since))
        if until is not None:
            sql.append("AND ts <= ?")
            args.append(float(until))
        hits = self.db.conn.execute(" ".join(sql), args).fetchall()
        return {int(m): float(d) for m, d in hits}

    def pending(self) -> int:
        return int(self.db.conn.execute("SELECT COUNT(*) FROM memories WHERE vec_gen < ?",
                                        (self.gen,)).fetchone()[0])

    def reembed_batch(self, limit: int = 64) -> list[tuple[int, str]]:
        """Memories whose vector is missing or from an older embedder: (id, text)."""
        return [(r[0], r[1]) for r in self.db.conn.execute(
            "SELECT id, text FROM memories WHERE vec_gen < ? ORDER BY scope, id LIMIT ?",
            (self.gen, limit))]

    def set_vectors(self, items: Sequence[tuple[int, Sequence[float]]], gen: int) -> int:
        """Store re-embedded vectors; ignored when the embedder changed again meanwhile."""
        if gen != self.gen:
            return 0
        n = 0
        with self.db.tx():
            for mid, vec in items:
                row = self.db.conn.execute(
                    "SELECT scope, kind, updated FROM memories WHERE id = ?", (mid,)).fetchone()
                if row is None:
                    continue  # forgotten meanwhile
                self.replace(mid, row[0], row[1], row[2], vec)
                n += 1
        return n
