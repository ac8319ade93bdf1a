"""The journal's one writer thread, with group commit.

Whatever work is queued runs as one transaction: many messages cost one fsync, and the event
loop never blocks on disk. Each operation runs in its own SAVEPOINT, so one failing operation
does not undo its neighbours; a commit failure (disk full, I/O error) fails every operation of
the group with a :class:`StorageError`. The writer knows no table: it runs ``fn(conn, *args)``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, TypeVarTuple

import sqlean as sqlite3

from ..files import secure_dir
from .errors import JournalError, StorageError, storage_error

log = logging.getLogger("edged.journal")
T = TypeVar("T")
Ts = TypeVarTuple("Ts")

RETRY_MIN_S, RETRY_MAX_S = 0.05, 5.0  # back-off of writes that wait out a storage fault
BATCH_MAX = 1024  # operations per group commit

# (fn, args, future, its loop); fn None is a ping
_Item = tuple[Callable[..., Any] | None, tuple[Any, ...], asyncio.Future[Any],
              asyncio.AbstractEventLoop]


class Rollback(Protocol):
    """Memory the operations change along with the rows (the outbox tally): the writer puts
    it back when an operation or the whole group rolls back, so it never counts undone work."""

    def save(self) -> tuple[int, ...]: ...

    def restore(self, saved: tuple[int, ...]) -> None: ...


class Writer:
    """Runs operations on one thread and one connection; every coroutine here is safe to call
    from the event loop."""

    def __init__(
        self,
        path: Path,
        connect: Callable[[], sqlite3.Connection],
        *,
        state: Rollback,
        on_open: Callable[[sqlite3.Connection], None],
    ) -> None:
        self.path = path
        self._connect = connect
        self._state = state
        self._on_open = on_open  # runs on the thread once connected, before open() returns
        self._q: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closing = False
        self.commits = 0
        # Set by the daemon: then a call that meets a storage fault is retried with back-off
        # until the disk takes it, instead of failing the work it belongs to.
        self.wait_out_faults = False
        self.degraded = ""  # the fault that calls are waiting out now ("" when none)
        self.on_degraded: Callable[[str], None] | None = None  # on each change of state
        self._waiting = 0  # calls waiting out a fault

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            secure_dir(self.path.parent)  # 0700: the journal holds the messages themselves
        except OSError as e:
            raise JournalError(f"{self.path}: cannot create its directory: {e}") from None
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing = False
        self._thread = threading.Thread(
            target=self._run, args=(asyncio.get_running_loop(), ready), name="edged-journal",
            daemon=True,
        )
        self._thread.start()
        try:
            await ready
        except BaseException:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            raise

    async def close(self) -> None:
        if self._thread is None:
            return
        self._closing = True  # calls from now on fail instead of queueing behind the stop
        self._q.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # -- the thread -----------------------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
        except Exception as e:  # noqa: BLE001 - reported to the opener
            loop.call_soon_threadsafe(_set_exc, ready, JournalError(f"{self.path}: {e}"))
            return
        self._on_open(conn)
        loop.call_soon_threadsafe(_set_result, ready, None)
        stop = False
        while not stop:
            item = self._q.get()
            batch: list[_Item] = []
            while item is not None:
                if item[0] is None:  # a ping: this thread is alive; no disk access
                    item[3].call_soon_threadsafe(_set_result, item[2], None)
                else:
                    batch.append(item)
                if len(batch) >= BATCH_MAX:
                    break
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
            if item is None:
                stop = True
            if batch:
                self._run_batch(conn, batch)
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        results: list[tuple[bool, Any]] = []
        group_state = self._state.save()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, args, _fut, _loop in batch:
                assert fn is not None  # pings never reach a batch
                conn.execute("SAVEPOINT op")
                state = self._state.save()
                try:
                    results.append((True, fn(conn, *args)))
                    conn.execute("RELEASE op")
                except Exception as e:  # noqa: BLE001 - handed to the caller
                    err = storage_error(e) or e
                    if not conn.in_transaction:  # e.g. SQLITE_FULL ends the whole group
                        raise err from None
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    self._state.restore(state)
                    results.append((False, err))
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as e:  # noqa: BLE001 - the whole group failed to commit
            (log.debug if self.degraded else log.error)("journal commit failed: %s", e)
            try:
                conn.execute("ROLLBACK")
            except Exception:  # noqa: BLE001
                pass
            self._state.restore(group_state)
            err = e if isinstance(e, StorageError) else \
                StorageError(f"journal commit failed: {e}")
            results = [(False, err)] * len(batch)
        for (ok, value), (_fn, _args, fut, loop) in zip(results, batch, strict=True):
            loop.call_soon_threadsafe(_set_result if ok else _set_exc, fut, value)

    # -- calls from the event loop ------------------------------------------------------------

    async def submit(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        """One attempt on the writer thread."""
        return await self._put(fn, args)

    async def call(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        """Run ``fn`` on the writer thread. With ``wait_out_faults`` (the daemon) a storage
        fault is not the caller's failure: the call is retried with back-off until the disk
        takes it, and ``degraded`` says why meanwhile. One place for every write the daemon
        makes, so a full or locked disk pauses the work instead of failing or losing it."""
        if not self.wait_out_faults:
            return await self.submit(fn, *args)
        delay, waiting = RETRY_MIN_S, False
        try:
            while True:
                try:
                    result = await self.submit(fn, *args)
                    break
                except StorageError as e:
                    if self._closing:
                        raise
                    if not waiting:
                        waiting = True
                        self._waiting += 1
                    self._set_degraded(str(e))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        finally:
            self._waiting -= waiting
        if self.degraded and not self._waiting:  # nothing waits any more: writable again
            self._set_degraded("")
        return result

    async def ping(self) -> None:
        """Answered by the writer thread as it takes its next item, without touching the
        disk: a hung writer (stuck I/O) never answers; one that meets storage faults does
        (those are ``degraded``, which a restart would not cure)."""
        await self._put(None, ())

    async def _put(self, fn: Callable[..., Any] | None, args: tuple[Any, ...]) -> Any:
        if self._thread is None or self._closing:
            raise JournalError("journal is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._q.put((fn, args, fut, loop))
        return await fut

    def _set_degraded(self, fault: str) -> None:
        changed = bool(fault) != bool(self.degraded)
        self.degraded = fault
        if changed and self.on_degraded is not None:
            self.on_degraded(fault)


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exc(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
