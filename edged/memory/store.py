"""The memory database: turns, memories and their vectors in one SQLite file (WAL).

sqlite-vec is loaded on every connection through sqlean.py (the stdlib ``sqlite3`` of many
Python builds cannot load extensions). Vectors live in a ``vec0`` table partitioned by scope
(the device), with the kind and the time as metadata columns, so a top-k search reads only
one device's vectors and filters by kind / time inside the index scan.

The embedder that wrote the vectors (its identity and dimension) is recorded in ``meta``.
When it changes, the vector table is dropped and recreated for the new dimension, the
embedder generation goes up, and every memory waits for re-embedding (``reembed_batch`` /
``set_vectors``): a search never compares vectors of two different models.

:class:`MemoryStore` opens the database and keeps the memories; the turns are its
:class:`~edged.memory.turns.TurnLog` and the vectors its
:class:`~edged.memory.vectors.VectorIndex`, all on the store's one connection
(:mod:`edged.memory.db`). The store is synchronous and not thread-safe: the daemon drives it
from one thread (see :class:`edged.memory.Memory`); the CLI uses it directly.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sqlean as sqlite3

from ..files import secure_dir, secure_sqlite

# ("x as x": moved to .db, .turns and .vectors, still imported from here by callers)
from .db import WAL_LIMIT as WAL_LIMIT
from .db import MemoryStoreError, Tx, connect
from .turns import Turn, TurnLog
from .turns import approx_tokens as approx_tokens
from .vectors import VectorIndex
from .vectors import pack as pack

KINDS = ("fact", "preference", "decision", "episode", "summary")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS turns(
  id INTEGER PRIMARY KEY,
  scope TEXT NOT NULL,
  session TEXT NOT NULL,
  role TEXT NOT NULL,               -- user | assistant
  text TEXT NOT NULL,
  tokens INTEGER NOT NULL,
  request_id TEXT NOT NULL,
  tools TEXT,                       -- JSON [{tool, arguments}] of an assistant turn
  ts REAL NOT NULL,
  UNIQUE(session, request_id, role)
);
CREATE INDEX IF NOT EXISTS turns_session ON turns(session, id);
CREATE INDEX IF NOT EXISTS turns_scope ON turns(scope, id);
CREATE TABLE IF NOT EXISTS memories(
  id INTEGER PRIMARY KEY,
  scope TEXT NOT NULL,
  kind TEXT NOT NULL,
  text TEXT NOT NULL,
  importance REAL NOT NULL DEFAULT 0.5,
  created REAL NOT NULL,
  updated REAL NOT NULL,
  last_used REAL,
  uses INTEGER NOT NULL DEFAULT 0,
  sources TEXT NOT NULL DEFAULT '[]',   -- JSON list of the request ids it came from
  vec_gen INTEGER NOT NULL DEFAULT 0,   -- embedder generation of its vector
  private INTEGER NOT NULL DEFAULT 0    -- never sent to the cloud
);
CREATE INDEX IF NOT EXISTS memories_scope ON memories(scope, kind, updated);
CREATE INDEX IF NOT EXISTS memories_vec_gen ON memories(vec_gen);
CREATE TABLE IF NOT EXISTS checkpoints(
  session TEXT PRIMARY KEY,
  scope TEXT NOT NULL,
  turn_id INTEGER NOT NULL,         -- the last turn consolidation has dealt with
  ts REAL NOT NULL
) WITHOUT ROWID;
"""

SCHEMA_VERSION = "1"


@dataclass(slots=True)
class MemoryRow:
    id: int
    scope: str
    kind: str
    text: str
    importance: float
    created: float
    updated: float
    last_used: float | None
    uses: int
    sources: list[str]
    private: bool = False
    similarity: float | None = None  # set by a search
    score: float | None = None  # similarity weighted by recency and importance

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "scope": self.scope, "kind": self.kind, "text": self.text,
             "importance": round(self.importance, 3), "created": round(self.created, 3),
             "updated": round(self.updated, 3), "uses": self.uses, "sources": self.sources,
             "private": self.private}
        if self.similarity is not None:
            d["similarity"] = round(self.similarity, 4)
        if self.score is not None:
            d["score"] = round(self.score, 4)
        return d


_MEM_COLS = ("id, scope, kind, text, importance, created, updated, last_used, uses, sources, "
             "private")


class StoredDecision(Protocol):
    """What :meth:`MemoryStore.apply` reads of a decision (consolidation's ``Decision``)."""

    @property
    def op(self) -> str: ...  # ADD | UPDATE | DELETE | NOOP
    @property
    def kind(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def vector(self) -> Sequence[float] | None: ...
    @property
    def target(self) -> int | None: ...  # the memory an UPDATE / DELETE / NOOP is about
    @property
    def sources(self) -> Sequence[str]: ...
    @property
    def importance(self) -> float: ...
    @property
    def private(self) -> bool: ...


def _row(r: Sequence[Any]) -> MemoryRow:
    return MemoryRow(id=r[0], scope=r[1], kind=r[2], text=r[3], importance=r[4], created=r[5],
                     updated=r[6], last_used=r[7], uses=r[8], sources=json.loads(r[9] or "[]"),
                     private=bool(r[10]))


class MemoryStore:
    """Turns, memories and vectors. ``open()`` before use; ``close()`` at the end."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self.conn: Any = None
        self.turns = TurnLog(self)  # short-term: the turns of each session
        self.vectors = VectorIndex(self)  # the memories' vectors and their embedder

    # the embedder the vectors are from: the vector index's
    @property
    def embedder(self) -> str:
        return self.vectors.embedder

    @property
    def dim(self) -> int:
        return self.vectors.dim

    @property
    def gen(self) -> int:
        return self.vectors.gen

    @gen.setter
    def gen(self, value: int) -> None:
        self.vectors.gen = value

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        try:
            # memories and conversations: 0700 / 0600 (with the WAL and SHM), old files too
            secure_dir(self.path.parent)
            secure_sqlite(self.path)
        except OSError as e:
            raise MemoryStoreError(f"cannot open the memory database {self.path}: {e}") from e
        try:
            self.conn = connect(self.path)
            self.conn.executescript(SCHEMA)  # idempotent; executescript commits itself
            cols = {r[1] for r in self.conn.execute("PRAGMA table_info(memories)")}
            if "private" not in cols:  # a database from before private memories
                self.conn.execute("ALTER TABLE memories ADD COLUMN private INTEGER NOT NULL "
                                  "DEFAULT 0")
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)",
                              (SCHEMA_VERSION,))
            meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as e:  # corrupt, not a database, unreadable: one clear error
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            raise MemoryStoreError(f"cannot open the memory database {self.path}: {e}") from e
        self.vectors.load(meta)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self.conn.close()
            self.conn = None

    def tx(self) -> Tx:
        return Tx(self.conn)

    def use_embedder(self, identity: str, dim: int) -> int:
        """Record the embedder; on a change start a new vector table. Returns how many
        memories wait for (re-)embedding."""
        return self.vectors.use_embedder(identity, dim)

    # -- short-term: turns (see TurnLog) -------------------------------------------------------

    def add_turns(self, scope: str, session: str, request_id: str, user: str, assistant: str,
                  tools: list[dict[str, Any]] | None = None) -> None:
        self.turns.add(scope, session, request_id, user, assistant, tools)

    def recent_turns(self, session: str, *, max_turns: int, max_tokens: int,
                     since: float | None = None) -> list[Turn]:
        return self.turns.recent(session, max_turns=max_turns, max_tokens=max_tokens,
                                 since=since)

    def turns_after(self, session: str, turn_id: int, limit: int) -> list[Turn]:
        return self.turns.after(session, turn_id, limit)

    def sessions_with_new_turns(self) -> list[tuple[str, str, int]]:
        return self.turns.sessions_with_new()

    def checkpoint(self, session: str) -> int:
        return self.turns.checkpoint(session)

    def set_checkpoint(self, session: str, scope: str, turn_id: int) -> None:
        self.turns.set_checkpoint(session, scope, turn_id)

    def old_turns(self, session: str, *, before_id: int, keep_last: int, older_than: float
                  ) -> list[Turn]:
        return self.turns.old(session, before_id=before_id, keep_last=keep_last,
                              older_than=older_than)

    def delete_turns(self, ids: Iterable[int]) -> int:
        return self.turns.delete(ids)

    def prune_turns(self, older_than: float) -> int:
        return self.turns.prune(older_than)

    # -- long-term: memories -----------------------------------------------------------------

    def add(self, scope: str, kind: str, text: str, vector: Sequence[float] | None, *,
            importance: float = 0.5, sources: Sequence[str] = (), ts: float | None = None,
            private: bool = False) -> int:
        """A new memory (and its vector, when given) in one transaction."""
        if kind not in KINDS:
            raise MemoryStoreError(f"unknown memory kind {kind!r} (expected one of {KINDS})")
        now = self.clock() if ts is None else ts
        with self.tx():
            cur = self.conn.execute(
                "INSERT INTO memories(scope, kind, text, importance, created, updated, sources,"
                " vec_gen, private) VALUES (?,?,?,?,?,?,?,?,?)",
                (scope, kind, text, _clamp(importance), now, now, json.dumps(list(sources)),
                 self.gen if vector is not None else 0, int(private)))
            mid = int(cur.lastrowid)
            if vector is not None:
                self.vectors.put(mid, scope, kind, now, vector)
        return mid

    def update(self, memory_id: int, *, text: str | None = None,
               vector: Sequence[float] | None = None, kind: str | None = None,
               importance: float | None = None, sources: Sequence[str] = (),
               private: bool | None = None) -> bool:
        """Change a memory: new text needs its new vector; sources are added to."""
        with self.tx():
            row = self.get(memory_id)
            if row is None:
                return False
            now = self.clock()
            merged = list(dict.fromkeys([*row.sources, *sources]))
            self.conn.execute(
                "UPDATE memories SET text = ?, kind = ?, importance = ?, updated = ?, "
                "sources = ?, private = ? WHERE id = ?",
                (text if text is not None else row.text, kind or row.kind,
                 _clamp(importance if importance is not None else row.importance), now,
                 json.dumps(merged), int(row.private if private is None else private),
                 memory_id))
            if vector is not None:
                self.vectors.replace(memory_id, row.scope, kind or row.kind, now, vector)
        return True

    def delete(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        n = 0
        with self.tx():
            for mid in ids:
                self.vectors.remove(mid)
                n += self.conn.execute("DELETE FROM memories WHERE id = ?", (mid,)).rowcount
        return n

    def get(self, memory_id: int) -> MemoryRow | None:
        r = self.conn.execute(f"SELECT {_MEM_COLS} FROM memories WHERE id = ?",
                              (memory_id,)).fetchone()
        return _row(r) if r else None

    def list(self, scope: str | None = None, *, kind: str | None = None, limit: int = 100,
             offset: int = 0) -> list[MemoryRow]:
        where, args = _filters(scope, kind)
        cur = self.conn.execute(
            f"SELECT {_MEM_COLS} FROM memories {where} ORDER BY updated DESC, id DESC "
            f"LIMIT ? OFFSET ?", (*args, limit, offset))
        return [_row(r) for r in cur]

    def scopes(self) -> builtins.list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT scope FROM memories UNION SELECT scope FROM turns ORDER BY 1")]

    def search(self, vector: Sequence[float], scope: str, *, k: int = 5,
               kinds: Sequence[str] | None = None, since: float | None = None,
               until: float | None = None) -> builtins.list[MemoryRow]:
        """Nearest memories of one scope (cosine similarity in ``similarity``)."""
        dist = self.vectors.knn(vector, scope, k=k, kinds=kinds, since=since, until=until)
        if not dist:
            return []
        rows = self.conn.execute(
            f"SELECT {_MEM_COLS} FROM memories WHERE id IN ({','.join('?' * len(dist))})",
            list(dist)).fetchall()
        out = []
        for r in rows:
            m = _row(r)
            m.similarity = 1.0 - dist[m.id]
            out.append(m)
        out.sort(key=lambda m: -(m.similarity or 0.0))
        return out

    def touch(self, ids: Iterable[int]) -> None:
        """Recall used these memories (recency of use feeds pruning)."""
        now = self.clock()
        with self.tx():
            self.conn.executemany(
                "UPDATE memories SET last_used = ?, uses = uses + 1 WHERE id = ?",
                [(now, i) for i in ids])

    def prune(self, *, older_than: float, below_importance: float) -> int:
        """Forget what is both old (not updated or used since ``older_than``) and not
        important; returns how many memories went."""
        ids = [r[0] for r in self.conn.execute(
            "SELECT id FROM memories WHERE MAX(updated, COALESCE(last_used, 0)) < ? "
            "AND importance < ?", (older_than, below_importance))]
        return self.delete(ids) if ids else 0

    def forget(self, scope: str) -> dict[str, int]:
        """Everything of one scope: memories, their vectors, turns and checkpoints."""
        with self.tx():
            n_vec = self.vectors.forget(scope)
            n_mem = self.conn.execute("DELETE FROM memories WHERE scope = ?", (scope,)).rowcount
            n_turn = self.turns.forget(scope)
        return {"memories": n_mem, "vectors": max(n_vec, 0), "turns": n_turn}

    def apply(self, *, session: str | None, scope: str, turn_id: int,
              decisions: Sequence[StoredDecision], fold: Sequence[int]) -> bool:
        """Consolidation's outcome for one session, atomically: the decisions, the turns
        folded into episodes, and the new checkpoint. False (nothing written) when the
        session's turns are gone: the scope was forgotten while consolidation ran."""
        with self.tx():
            if session is not None and self.conn.execute(
                    "SELECT 1 FROM turns WHERE id = ? AND session = ?",
                    (turn_id, session)).fetchone() is None:
                return False
            for d in decisions:
                if d.op == "ADD":
                    self.add(scope, d.kind, d.text, d.vector, importance=d.importance,
                             sources=d.sources, private=d.private)
                elif d.target is None:
                    continue  # an UPDATE / DELETE / NOOP of no memory changes nothing
                elif d.op == "UPDATE":
                    self.update(d.target, text=d.text, vector=d.vector, kind=d.kind,
                                importance=d.importance, sources=d.sources,
                                private=d.private)
                elif d.op == "DELETE":
                    self.delete([d.target])
                elif d.op == "NOOP":
                    self.update(d.target, importance=d.importance, sources=d.sources)
            self.delete_turns(fold)
            if session is not None:
                self.set_checkpoint(session, scope, turn_id)
        return True

    # -- vectors (see VectorIndex) -------------------------------------------------------------

    def pending_vectors(self) -> int:
        return self.vectors.pending()

    def reembed_batch(self, limit: int = 64) -> builtins.list[tuple[int, str]]:
        """Memories whose vector is missing or from an older embedder: (id, text)."""
        return self.vectors.reembed_batch(limit)

    def set_vectors(self, items: Sequence[tuple[int, Sequence[float]]], gen: int) -> int:
        """Store re-embedded vectors; ignored when the embedder changed again meanwhile."""
        return self.vectors.set_vectors(items, gen)

    # -- numbers -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        c = self.conn
        kinds = dict(c.execute("SELECT kind, COUNT(*) FROM memories GROUP BY kind").fetchall())
        return {
            "memories": sum(kinds.values()), "by_kind": kinds,
            "turns": c.execute("SELECT COUNT(*) FROM turns").fetchone()[0],
            "scopes": c.execute("SELECT COUNT(DISTINCT scope) FROM memories").fetchone()[0],
            "embedder": self.embedder, "dim": self.dim, "pending_vectors":
                self.pending_vectors() if self.gen else 0,
            "db_bytes": sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*")
                            if p.is_file()),
        }


def _filters(scope: str | None, kind: str | None) -> tuple[str, list[Any]]:
    conds, args = [], []
    if scope is not None:
        conds.append("scope = ?")
        args.append(scope)
    if kind is not None:
        conds.append("kind = ?")
        args.append(kind)
    return ("WHERE " + " AND ".join(conds)) if conds else "", args


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, float(x)))
