"""The memory database: turns, memories and their vectors in one SQLite file (WAL).

sqlite-vec is loaded on every connection through sqlean.py (the stdlib ``sqlite3`` of many
Python builds cannot load extensions). Vectors live in a ``vec0`` table partitioned by scope
(the device), with the kind and the time as metadata columns, so a top-k search reads only
one device's vectors and filters by kind / time inside the index scan.

The embedder that wrote the vectors (its identity and dimension) is recorded in ``meta``.
When it changes, the vector table is dropped and recreated for the new dimension, the
embedder generation goes up, and every memory waits for re-embedding (``reembed_batch`` /
``set_vectors``): a search never compares vectors of two different models.

The class is synchronous and not thread-safe: the daemon drives it from one thread (see
:class:`edged.memory.Memory`); the CLI uses it directly.
"""

from __future__ import annotations

import builtins
import importlib.util
import json
import logging
import os
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlean as sqlite3

from ..files import secure_dir, secure_sqlite

WAL_LIMIT = 16 << 20  # bytes of WAL kept after a checkpoint
log = logging.getLogger("edged.memory")

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


class MemoryStoreError(Exception):
    """A memory-store problem with a message for the operator."""


@dataclass(slots=True)
class Turn:
    id: int
    scope: str
    session: str
    role: str
    text: str
    tokens: int
    request_id: str
    ts: float
    tools: list[dict[str, Any]] = field(default_factory=list)


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


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate (~4 bytes a token for English, at least a token a word):
    budgets stay model-independent and cost nothing to compute."""
    return max(len(text.encode()) // 4, len(text.split())) + 1


def pack(vector: Sequence[float]) -> bytes:
    return struct.pack(f"{len(vector)}f", *vector)


def _vec0_path() -> str:
    """The sqlite-vec extension's file, found without importing the ``sqlite_vec`` package:
    its ``__init__`` imports numpy when numpy is installed (+15 MB in the daemon for type
    hints it never uses)."""
    spec = importlib.util.find_spec("sqlite_vec")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - a base dep
        raise MemoryStoreError("sqlite-vec is not installed: pip install sqlite-vec")
    return os.path.join(list(spec.submodule_search_locations)[0], "vec0")


def connect(path: str | Path) -> Any:
    """A connection with sqlite-vec loaded (sqlean.py: extensions allowed)."""
    vec0 = _vec0_path()
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        conn.enable_load_extension(True)
        conn.load_extension(vec0)
        conn.enable_load_extension(False)
        conn.execute("PRAGMA journal_mode=WAL")  # the first read: "file is not a database"
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=ON")
        # a burst (20 MiB payloads, a long outage) must not leave a WAL that never shrinks:
        # after each checkpoint SQLite truncates the file back to this size
        conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
    except BaseException:
        conn.close()
        raise
    return conn


_MEM_COLS = ("id, scope, kind, text, importance, created, updated, last_used, uses, sources, "
             "private")


def _turn(r: Sequence[Any]) -> Turn:
    """A turn from ``SELECT id, scope, session, role, text, tokens, request_id, ts, tools``."""
    return Turn(id=r[0], scope=r[1], session=r[2], role=r[3], text=r[4], tokens=r[5],
                request_id=r[6], ts=r[7], tools=json.loads(r[8]) if r[8] else [])


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
        self.embedder = ""  # identity of the embedder the vectors are from
        self.dim = 0
        self.gen = 0

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
        self.embedder = meta.get("embedder", "")
        self.dim = int(meta.get("dim", 0) or 0)
        self.gen = int(meta.get("embedder_gen", 0) or 0)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self.conn.close()
            self.conn = None

    def tx(self) -> _Tx:
        return _Tx(self.conn)

    def use_embedder(self, identity: str, dim: int) -> int:
        """Record the embedder; on a change start a new vector table. Returns how many
        memories wait for (re-)embedding."""
        if dim <= 0:
            raise MemoryStoreError(f"embedder {identity!r} has no dimension")
        if identity != self.embedder or dim != self.dim or not self._has_vec_table():
            with self.tx():
                if self.embedder and (identity != self.embedder or dim != self.dim):
                    log.warning("memory: embedder changed from %s (%d dims) to %s (%d dims): "
                                "re-embedding every memory in the background",
                                self.embedder, self.dim, identity, dim)
                self.gen += 1
                self.conn.execute("DROP TABLE IF EXISTS vec_memories")
                self.conn.execute(
                    f"CREATE VIRTUAL TABLE vec_memories USING vec0("
                    f"memory_id INTEGER PRIMARY KEY, scope TEXT PARTITION KEY, "
                    f"embedding float[{int(dim)}] distance_metric=cosine, "
                    f"kind TEXT, ts FLOAT)")
                self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                    ("embedder", identity), ("dim", str(dim)), ("embedder_gen", str(self.gen))])
            self.embedder, self.dim = identity, dim
        return self.pending_vectors()

    def _has_vec_table(self) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'vec_memories'").fetchone() is not None

    # -- short-term: turns -------------------------------------------------------------------

    def add_turns(self, scope: str, session: str, request_id: str, user: str, assistant: str,
                  tools: list[dict[str, Any]] | None = None) -> None:
        """Record one exchange; recording the same request twice (a retry) changes nothing."""
        now = self.clock()
        rows = [(scope, session, "user", user, approx_tokens(user), request_id, None, now),
                (scope, session, "assistant", assistant, approx_tokens(assistant), request_id,
                 json.dumps(tools) if tools else None, now)]
        with self.tx():
            self.conn.executemany(
                "INSERT OR IGNORE INTO turns(scope, session, role, text, tokens, request_id, "
                "tools, ts) VALUES (?,?,?,?,?,?,?,?)", rows)

    def recent_turns(self, session: str, *, max_turns: int, max_tokens: int,
                     since: float | None = None) -> list[Turn]:
        """The newest turns of a session, oldest first, within both bounds."""
        cur = self.conn.execute(
            "SELECT id, scope, session, role, text, tokens, request_id, ts, tools FROM turns "
            "WHERE session = ? AND ts >= ? ORDER BY id DESC LIMIT ?",
            (session, since if since is not None else float("-inf"), max_turns))
        out: list[Turn] = []
        used = 0
        for r in cur:
            if used + r[5] > max_tokens and out:
                break
            used += r[5]
            out.append(_turn(r))
        out.reverse()
        return out

    def turns_after(self, session: str, turn_id: int, limit: int) -> list[Turn]:
        cur = self.conn.execute(
            "SELECT id, scope, session, role, text, tokens, request_id, ts, tools FROM turns "
            "WHERE session = ? AND id > ? ORDER BY id LIMIT ?", (session, turn_id, limit))
        return [_turn(r) for r in cur]

    def sessions_with_new_turns(self) -> list[tuple[str, str, int]]:
        """(session, scope, checkpoint) for every session with turns past its checkpoint."""
        return [(r[0], r[1], r[2]) for r in self.conn.execute(
            "SELECT t.session, MIN(t.scope), COALESCE(c.turn_id, 0) FROM turns t "
            "LEFT JOIN checkpoints c ON c.session = t.session "
            "WHERE t.id > COALESCE(c.turn_id, 0) GROUP BY t.session ORDER BY t.session")]

    def checkpoint(self, session: str) -> int:
        r = self.conn.execute("SELECT turn_id FROM checkpoints WHERE session = ?",
                              (session,)).fetchone()
        return r[0] if r else 0

    def set_checkpoint(self, session: str, scope: str, turn_id: int) -> None:
        self.conn.execute(
            "INSERT INTO checkpoints VALUES (?,?,?,?) ON CONFLICT(session) DO UPDATE "
            "SET turn_id = MAX(turn_id, excluded.turn_id), ts = excluded.ts",
            (session, scope, turn_id, self.clock()))

    def old_turns(self, session: str, *, before_id: int, keep_last: int, older_than: float
                  ) -> list[Turn]:
        """Consolidated turns that are old enough to be folded into an episode, except the
        newest ``keep_last`` of the session (the short-term window)."""
        cur = self.conn.execute(
            "SELECT id, scope, session, role, text, tokens, request_id, ts, tools FROM turns "
            "WHERE session = ? AND id <= ? AND ts < ? AND id NOT IN "
            "(SELECT id FROM turns WHERE session = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
            (session, before_id, older_than, session, keep_last))
        return [_turn(r) for r in cur]

    def delete_turns(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        n = 0
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            n += self.conn.execute(
                f"DELETE FROM turns WHERE id IN ({','.join('?' * len(chunk))})", chunk).rowcount
        return n

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
                self._put_vector(mid, scope, kind, now, vector)
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
                self.conn.execute("DELETE FROM vec_memories WHERE memory_id = ?", (memory_id,))
                self._put_vector(memory_id, row.scope, kind or row.kind, now, vector)
                self.conn.execute("UPDATE memories SET vec_gen = ? WHERE id = ?",
                                  (self.gen, memory_id))
        return True

    def delete(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        n = 0
        with self.tx():
            for mid in ids:
                self.conn.execute("DELETE FROM vec_memories WHERE memory_id = ?", (mid,))
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
        if not self.dim:
            return []
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
        hits = self.conn.execute(" ".join(sql), args).fetchall()
        if not hits:
            return []
        dist = {int(m): float(d) for m, d in hits}
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

    def prune_turns(self, older_than: float) -> int:
        with self.tx():
            return int(self.conn.execute("DELETE FROM turns WHERE ts < ?",
                                         (older_than,)).rowcount)

    def forget(self, scope: str) -> dict[str, int]:
        """Everything of one scope: memories, their vectors, turns and checkpoints."""
        with self.tx():
            n_vec = self.conn.execute("DELETE FROM vec_memories WHERE memory_id IN "
                                      "(SELECT id FROM memories WHERE scope = ?)",
                                      (scope,)).rowcount if self._has_vec_table() else 0
            n_mem = self.conn.execute("DELETE FROM memories WHERE scope = ?", (scope,)).rowcount
            n_turn = self.conn.execute("DELETE FROM turns WHERE scope = ?", (scope,)).rowcount
            self.conn.execute("DELETE FROM checkpoints WHERE scope = ?", (scope,))
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

    # -- vectors -------------------------------------------------------------------------------

    def _put_vector(self, memory_id: int, scope: str, kind: str, ts: float,
                    vector: Sequence[float]) -> None:
        if len(vector) != self.dim:
            raise MemoryStoreError(f"vector of {len(vector)} dims for a {self.dim}-dim store "
                               f"(embedder {self.embedder})")
        self.conn.execute(
            "INSERT INTO vec_memories(memory_id, scope, embedding, kind, ts) VALUES (?,?,?,?,?)",
            (memory_id, scope, pack(vector), kind, float(ts)))

    def pending_vectors(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM memories WHERE vec_gen < ?",
                                     (self.gen,)).fetchone()[0])

    def reembed_batch(self, limit: int = 64) -> builtins.list[tuple[int, str]]:
        """Memories whose vector is missing or from an older embedder: (id, text)."""
        return [(r[0], r[1]) for r in self.conn.execute(
            "SELECT id, text FROM memories WHERE vec_gen < ? ORDER BY scope, id LIMIT ?",
            (self.gen, limit))]

    def set_vectors(self, items: Sequence[tuple[int, Sequence[float]]], gen: int) -> int:
        """Store re-embedded vectors; ignored when the embedder changed again meanwhile."""
        if gen != self.gen:
            return 0
        n = 0
        with self.tx():
            for mid, vec in items:
                row = self.conn.execute("SELECT scope, kind, updated FROM memories WHERE id = ?",
                                        (mid,)).fetchone()
                if row is None:
                    continue  # forgotten meanwhile
                self.conn.execute("DELETE FROM vec_memories WHERE memory_id = ?", (mid,))
                self._put_vector(mid, row[0], row[1], row[2], vec)
                self.conn.execute("UPDATE memories SET vec_gen = ? WHERE id = ?", (gen, mid))
                n += 1
        return n

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


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, nestable (inner levels are savepoints)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.name = ""

    def __enter__(self) -> _Tx:
        if self.conn.in_transaction:
            self.name = f"sp{id(self)}"
            self.conn.execute(f"SAVEPOINT {self.name}")
        else:
            self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self.name:
            if exc_type is not None:
                self.conn.execute(f"ROLLBACK TO {self.name}")
            self.conn.execute(f"RELEASE {self.name}")
        elif exc_type is not None:
            self.conn.execute("ROLLBACK")
        else:
            self.conn.execute("COMMIT")


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
