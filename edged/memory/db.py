"""The memory database's connection: sqlite-vec loaded, WAL, nestable transactions.

Shared by the parts of :class:`edged.memory.store.MemoryStore` (its memories, the
:class:`~edged.memory.turns.TurnLog` and the :class:`~edged.memory.vectors.VectorIndex`),
which all work on the store's one connection.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import sqlean as sqlite3

WAL_LIMIT = 16 << 20  # bytes of WAL kept after a checkpoint


class MemoryStoreError(Exception):
    """A memory-store problem with a message for the operator."""


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


class Tx:
    """BEGIN IMMEDIATE ... COMMIT, nestable (inner levels are savepoints)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.name = ""

    def __enter__(self) -> Tx:
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


class Shared(Protocol):
    """What the store's parts use of the store: its connection (None until opened), its
    clock and its transactions."""

    conn: Any
    clock: Callable[[], float]

    def tx(self) -> Tx: ...
