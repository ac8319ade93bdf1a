"""Unit tests of :class:`edged.journal.Journal` against a real SQLite file (no mocks).

Time is injected (``clock=lambda: now[0]``) and advanced by hand; nothing sleeps. Where a test
needs several operations in one group commit, it holds the writer thread on a gate
(:func:`one_group`) while the operations are queued, so the grouping is deterministic.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3 as stdlib_sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlean

from edged.journal import (
    PRIO_DLQ,
    PRIO_EVENT,
    PRIO_STATUS,
    Incoming,
    Journal,
    JournalError,
    Meta,
    OutRow,
    StepInDoubt,
    dead_letter_payload,
)
from edged.messages import DeadLetter

T0 = 1_000_000.0


class Clock:
    """A hand-driven clock: ``Journal(path, clock=clock)``."""

    def __init__(self, start: float = T0) -> None:
        self.now = [start]

    def __call__(self) -> float:
        return self.now[0]

    def advance(self, seconds: float) -> None:
        self.now[0] += seconds


OpenJournal = Callable[..., Awaitable[Journal]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "journal" / "edged.db"


@pytest.fixture
async def open_journal(db: Path, clock: Clock) -> AsyncIterator[OpenJournal]:
    """Open a (new) Journal on the test's DB file; every journal is closed at teardown."""
    opened: list[Journal] = []

    async def make(path: Path | None = None, **kw: Any) -> Journal:
        kw.setdefault("clock", clock)
        j = Journal(path or db, **kw)
        opened.append(j)
        await j.open()
        return j

    yield make
    for j in opened:
        await j.close()


@pytest.fixture
async def journal(open_journal: OpenJournal) -> Journal:
    return await open_journal()


def item(
    key: str,
    *,
    content: bool = False,
    priority: int = 5,
    outcome: str | None = None,
    outbox: list[OutRow] | None = None,
    topic: Any = "edged/in/dev1",
    payload: bytes = b"hello",
    meta: Meta | None = None,
    error_code: str = "",
    error_message: str = "",
    redelivered: bool = False,
) -> Incoming:
    return Incoming(
        key=key, key_is_content=content, topic=topic, payload=payload,
        meta=meta or Meta(device="dev1", reply_topic="edged/out/dev1"), priority=priority,
        outcome=outcome, error_code=error_code, error_message=error_message,
        outbox=list(outbox or []), redelivered=redelivered,
    )


def out(topic: str = "edged/out/dev1", priority: int = 5, kind: str = "reply",
        payload: bytes = b"{}", **kw: Any) -> OutRow:
    return OutRow(topic=topic, payload=payload, priority=priority, kind=kind, **kw)


async def accept_one(j: Journal, key: str, **kw: Any) -> int:
    [inbox_id] = await j.accept([item(key, **kw)])
    assert inbox_id is not None
    return inbox_id


async def inbox_row(j: Journal, inbox_id: int) -> tuple[Any, ...]:
    [row] = await j.query(
        "SELECT state, attempts, not_before, error, updated_at FROM inbox WHERE id = ?", inbox_id
    )
    return tuple(row)


async def real_outbox_count(j: Journal) -> int:
    return (await j.counts())["outbox"]


async def one_group(j: Journal, *calls: Awaitable[Any]) -> list[Any]:
    """Run ``calls`` as one group commit: the writer is held on a gate while they are queued.

    Returns each call's result or exception. The blocker's own group commits first (one
    ``commits`` more), then the held calls (one more, unless there are over 1024 of them).
    """
    loop = asyncio.get_running_loop()
    holding: asyncio.Future[None] = loop.create_future()
    gate = threading.Event()

    def hold(conn: Any) -> None:
        loop.call_soon_threadsafe(holding.set_result, None)
        if not gate.wait(10):
            raise TimeoutError("gate never opened")

    blocker = asyncio.ensure_future(j._call(hold))
    await holding  # the writer is now inside the blocker's group, not reading its queue
    tasks = [asyncio.ensure_future(c) for c in calls]
    # Ready callbacks run in FIFO order: every task queues its operation before the gate opens.
    loop.call_soon(gate.set)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await blocker
    return results


# -- accept and dedup ---------------------------------------------------------------------------


async def test_accept_returns_inbox_ids_in_order(journal: Journal) -> None:
    ids = await journal.accept([item("i:a"), item("i:b"), item("i:c")])
    assert all(isinstance(i, int) for i in ids)
    assert len(set(ids)) == 3
    assert ids == sorted(ids)  # type: ignore[type-var]
    assert (await journal.counts())["received"] == 3


async def test_id_key_is_duplicate_for_the_retention_period(
    open_journal: OpenJournal, clock: Clock
) -> None:
    j = await open_journal(dedup_window_s=10, retention_s=1000)
    first = await accept_one(j, "i:topic\x00req-1")
    assert await j.accept([item("i:topic\x00req-1")]) == [None]
    clock.advance(11)  # past the content window: an id key still counts as seen
    assert await j.accept([item("i:topic\x00req-1")]) == [None]
    clock.advance(1000 - 11 - 1)  # just inside retention
    assert await j.accept([item("i:topic\x00req-1")]) == [None]
    clock.advance(2)  # retention over: the key is forgotten
    [again] = await j.accept([item("i:topic\x00req-1")])
    assert again is not None and again != first
    counts = await j.counts()
    assert counts["received"] == 2


async def test_duplicate_within_one_batch(journal: Journal) -> None:
    ids = await journal.accept([item("i:x"), item("i:x"), item("i:y")])
    assert ids[0] is not None and ids[1] is None and ids[2] is not None
    assert (await journal.counts())["received"] == 2


async def test_content_key_matches_only_a_redelivery_within_the_window(
    open_journal: OpenJournal, clock: Clock
) -> None:
    """No request key: the same delivery fingerprint without DUP is a new request; the
    broker's redelivery (DUP) is a duplicate within the window only."""
    j = await open_journal(dedup_window_s=60, retention_s=10_000)
    first = await accept_one(j, "h:abc", content=True)
    [again] = await j.accept([item("h:abc", content=True)])  # not a redelivery
    assert again is not None and again != first
    clock.advance(59)
    assert await j.accept([item("h:abc", content=True, redelivered=True)]) == [None]
    clock.advance(2)  # 61 s after the last copy: outside the window
    [second] = await j.accept([item("h:abc", content=True, redelivered=True)])
    assert second is not None and second != again
    # The window restarts from the newly accepted copy.
    clock.advance(30)
    assert await j.accept([item("h:abc", content=True, redelivered=True)]) == [None]
    assert (await j.counts())["received"] == 3


async def test_sink_and_error_outcomes_are_final_with_outbox_in_same_transaction(
    journal: Journal,
) -> None:
    sink_id, err_id = await journal.accept([
        item("i:sink", outcome="sink"),
        item("i:bad", outcome="error", error_code="bad_json", error_message="nope",
             outbox=[out(kind="error", payload=b'{"error":1}'),
                     out(topic="edged/dlq", priority=PRIO_DLQ, kind="dlq")]),
    ])
    assert sink_id is not None and err_id is not None
    assert (await inbox_row(journal, sink_id))[0] == "done"
    state, attempts, _nb, error, _up = await inbox_row(journal, err_id)
    assert (state, attempts, error) == ("dead", 0, "bad_json: nope")
    rows = await journal.query("SELECT kind, inbox_id FROM outbox ORDER BY id")
    assert [tuple(r) for r in rows] == [("error", err_id), ("dlq", err_id)]
    assert await journal.claim(10) == []  # final rows are never claimed
    counts = await journal.counts()
    assert counts == {"received": 0, "processing": 0, "done": 1, "dead": 1, "outbox": 2}
    assert journal.outbox_rows == 2


async def test_duplicate_queues_no_outbox_rows(journal: Journal) -> None:
    err = dict(outcome="error", error_code="bad", error_message="x", outbox=[out(kind="error")])
    await journal.accept([item("i:e", **err)])
    assert await journal.accept([item("i:e", **err)]) == [None]
    assert await real_outbox_count(journal) == 1
    assert journal.outbox_rows == 1


async def test_accept_batch_is_atomic(journal: Journal) -> None:
    """An item that cannot be stored fails the whole accept: no inbox, seen or outbox rows."""
    with pytest.raises(sqlean.IntegrityError, match="NOT NULL"):
        await journal.accept([item("i:ok", outbox=[out()]), item("i:broken", topic=None)])
    counts = await journal.counts()
    assert counts == {"received": 0, "processing": 0, "done": 0, "dead": 0, "outbox": 0}
    assert await journal.query("SELECT count(*) FROM seen") == [(0,)]
    # Not remembered as seen: the redelivered message is accepted.
    assert (await journal.accept([item("i:ok")]))[0] is not None


# -- claim, retry, complete, kill, release ------------------------------------------------------


async def test_claim_priority_then_fifo(journal: Journal) -> None:
    ids = await journal.accept([
        item("i:1", priority=1), item("i:2", priority=9), item("i:3", priority=5),
        item("i:4", priority=9), item("i:5", priority=5),
    ])
    first = await journal.claim(3)
    assert [r.id for r in first] == [ids[1], ids[3], ids[2]]
    assert [r.priority for r in first] == [9, 9, 5]
    assert all(r.attempts == 1 for r in first)
    for r in first:
        assert (await inbox_row(journal, r.id))[:2] == ("processing", 1)
    rest = await journal.claim(10)
    assert [r.id for r in rest] == [ids[4], ids[0]]
    assert await journal.claim(10) == []  # processing rows are not claimed twice
    assert (await journal.counts())["processing"] == 5


async def test_claim_returns_stored_message(journal: Journal) -> None:
    meta = Meta(device="d7", reply_topic="edged/out/d7", correlation=b"\x00\xffcorr",
                agent="echo", confidence=0.25, qos=0)
    inbox_id = await accept_one(journal, "c:t\x0001", topic="edged/in/d7",
                                payload=b"\xff\x00raw", meta=meta, priority=7)
    [row] = await journal.claim(1)
    assert (row.id, row.key, row.topic, row.payload, row.priority, row.attempts) == (
        inbox_id, "c:t\x0001", "edged/in/d7", b"\xff\x00raw", 7, 1)
    assert row.meta == meta


async def test_retry_later_defers_until_not_before(journal: Journal, clock: Clock) -> None:
    assert await journal.next_ready_at() is None
    inbox_id = await accept_one(journal, "i:r")
    assert await journal.next_ready_at() == 0  # ready right away
    [row] = await journal.claim(1)
    assert await journal.next_ready_at() is None  # nothing waiting in 'received'
    await journal.retry_later(row.id, "TimeoutError()", 30)
    state, attempts, not_before, error, _ = await inbox_row(journal, inbox_id)
    assert (state, attempts, not_before, error) == ("received", 1, T0 + 30, "TimeoutError()")
    assert await journal.next_ready_at() == T0 + 30
    assert await journal.claim(10) == []
    clock.advance(29)
    assert await journal.claim(10) == []
    clock.advance(1)
    [again] = await journal.claim(10)
    assert (again.id, again.attempts) == (inbox_id, 2)


async def test_deferred_row_does_not_block_ready_rows(journal: Journal, clock: Clock) -> None:
    hi = await accept_one(journal, "i:hi", priority=9)
    [row] = await journal.claim(1)
    await journal.retry_later(row.id, "err", 100)
    lo = await accept_one(journal, "i:lo", priority=1)
    assert [r.id for r in await journal.claim(10)] == [lo]
    assert await journal.next_ready_at() == T0 + 100
    clock.advance(100)
    assert [r.id for r in await journal.claim(10)] == [hi]


async def test_complete_marks_done_and_queues_rows(journal: Journal, clock: Clock) -> None:
    inbox_id = await accept_one(journal, "i:c")
    [row] = await journal.claim(1)
    await journal.retry_later(row.id, "first try failed", 0)
    [row] = await journal.claim(1)
    clock.advance(5)
    await journal.complete(row.id, [out(payload=b'{"text":"hi"}'), out(kind="event",
                                                                         priority=PRIO_EVENT)])
    state, attempts, _nb, error, updated_at = await inbox_row(journal, inbox_id)
    assert (state, attempts, error, updated_at) == ("done", 2, None, T0 + 5)
    rows = await journal.query("SELECT kind, inbox_id, created_at FROM outbox ORDER BY id")
    assert [tuple(r) for r in rows] == [("reply", inbox_id, T0 + 5), ("event", inbox_id, T0 + 5)]
    assert journal.outbox_rows == 2
    assert await journal.claim(1) == []


async def test_kill_quarantines_with_rows(journal: Journal) -> None:
    inbox_id = await accept_one(journal, "i:k")
    [row] = await journal.claim(1)
    await journal.kill(row.id, "failed: boom", [out(kind="error"),
                                               out(topic="edged/dlq", priority=PRIO_DLQ,
                                                   kind="dlq")])
    state, _attempts, _nb, error, _up = await inbox_row(journal, inbox_id)
    assert (state, error) == ("dead", "failed: boom")
    assert [r.kind for r in await journal.outbox_fetch(10)] == ["error", "dlq"]
    assert (await journal.counts())["dead"] == 1


async def test_release_gives_back_the_attempt(journal: Journal) -> None:
    a = await accept_one(journal, "i:a")
    b = await accept_one(journal, "i:b")
    rows = await journal.claim(10)
    assert [r.attempts for r in rows] == [1, 1]
    await journal.complete(b, [])
    await journal.release([a, b])  # b is done: releasing it changes nothing
    assert (await inbox_row(journal, a))[:2] == ("received", 0)
    assert (await inbox_row(journal, b))[:2] == ("done", 1)
    [again] = await journal.claim(10)
    assert (again.id, again.attempts) == (a, 1)


async def test_counts(journal: Journal) -> None:
    assert await journal.counts() == {
        "received": 0, "processing": 0, "done": 0, "dead": 0, "outbox": 0}
    ids = await journal.accept([item(f"i:{n}") for n in range(5)])
    await journal.accept([item("i:s", outcome="sink")])
    claimed = await journal.claim(3)
    await journal.complete(claimed[0].id, [out()])
    await journal.kill(claimed[1].id, "x", [out(), out()])
    await journal.enqueue([out(kind="event", priority=PRIO_EVENT)])
    assert len(ids) == 5
    assert await journal.counts() == {
        "received": 2, "processing": 1, "done": 2, "dead": 1, "outbox": 4}


# -- crash recovery -----------------------------------------------------------------------------


async def test_recover_requeues_interrupted_and_returns_poisoned(
    open_journal: OpenJournal,
) -> None:
    j = await open_journal()
    ids = await j.accept([item("i:a", priority=9), item("i:b"), item("i:c")])
    a, b, c = ids
    assert a is not None and b is not None and c is not None
    # a: three attempts, the last one interrupted.
    for _ in range(2):
        [row] = await j.claim(1)
        assert row.id == a
        await j.retry_later(a, "boom", 0)
    [row] = await j.claim(1)
    assert (row.id, row.attempts) == (a, 3)
    # b: one interrupted attempt. c: never claimed.
    [row] = await j.claim(1)
    assert row.id == b
    await j.close()  # the process dies here: a and b stay 'processing' on disk

    j2 = await open_journal()
    assert (await j2.counts())["processing"] == 2
    requeued, poisoned = await j2.recover(max_attempts=3)
    assert requeued == 1
    assert [(p.id, p.key, p.attempts, p.payload) for p in poisoned] == [(a, "i:a", 3, b"hello")]
    assert poisoned[0].meta == Meta(device="dev1", reply_topic="edged/out/dev1")
    # The poisoned row is left for the caller to quarantine; b is ready again.
    assert (await inbox_row(j2, a))[:2] == ("processing", 3)
    assert (await inbox_row(j2, b))[:2] == ("received", 1)
    await j2.kill(a, "crashed: interrupted 3 times", [out(kind="error")])
    claimed = await j2.claim(10)
    assert [(r.id, r.attempts) for r in claimed] == [(b, 2), (c, 1)]
    assert await j2.counts() == {
        "received": 0, "processing": 2, "done": 0, "dead": 1, "outbox": 1}


async def test_recover_with_nothing_to_do(journal: Journal) -> None:
    assert await journal.recover(3) == (0, [])


# -- durability and the outbox ------------------------------------------------------------------


async def test_accepted_rows_survive_reopen(open_journal: OpenJournal) -> None:
    j = await open_journal()
    meta = Meta(device="d", reply_topic="r", correlation=b"\x01\x02", agent="echo")
    ids = await j.accept([item("i:1", payload=b"one", meta=meta), item("i:2", priority=8)])
    await j.close()

    j2 = await open_journal()
    assert (await j2.counts())["received"] == 2
    rows = await j2.claim(10)
    assert [r.id for r in rows] == [ids[1], ids[0]]
    assert (rows[1].payload, rows[1].meta) == (b"one", meta)
    # The dedup memory is durable too.
    assert await j2.accept([item("i:1")]) == [None]


async def test_outbox_survives_reopen_in_priority_then_id_order(
    open_journal: OpenJournal,
) -> None:
    j = await open_journal()
    await j.enqueue([
        out(topic="e1", priority=PRIO_EVENT, kind="event"),
        out(topic="r1", priority=5, props=b"\x81\xa1c\xa1x", qos=0),
        out(topic="s1", priority=PRIO_STATUS, kind="status", retain=True),
        out(topic="e2", priority=PRIO_EVENT, kind="event"),
        out(topic="r2", priority=5),
        out(topic="d1", priority=PRIO_DLQ, kind="dlq"),
    ])
    await j.close()

    j2 = await open_journal()
    assert j2.outbox_rows == 6  # counted at open
    rows = await j2.outbox_fetch(100)
    assert [r.topic for r in rows] == ["s1", "r1", "r2", "d1", "e1", "e2"]
    ids = [r.id for r in rows]
    assert ids[1] < ids[2] and ids[4] < ids[5]
    s1, r1 = rows[0], rows[1]
    assert (s1.retain, s1.qos, s1.kind, s1.priority, s1.props) == (True, 1, "status", 9, None)
    assert (r1.retain, r1.qos, r1.kind, r1.props, r1.payload) == (
        False, 0, "reply", b"\x81\xa1c\xa1x", b"{}")
    # Fetching does not consume.
    assert [r.id for r in await j2.outbox_fetch(100)] == ids


async def test_outbox_fetch_limit_and_exclude(journal: Journal) -> None:
    await journal.enqueue([out(topic=f"t{n}", priority=p) for n, p in
                           enumerate([5, 9, 5, 1, 9])])
    all_rows = await journal.outbox_fetch(10)
    order = [r.topic for r in all_rows]
    assert order == ["t1", "t4", "t0", "t2", "t3"]
    assert [r.topic for r in await journal.outbox_fetch(2)] == ["t1", "t4"]
    in_flight = [all_rows[0].id, all_rows[1].id]
    assert [r.topic for r in await journal.outbox_fetch(2, in_flight)] == ["t0", "t2"]
    # Excluding rows further down still returns a full page of the others.
    assert [r.topic for r in await journal.outbox_fetch(3, [all_rows[3].id])] == [
        "t1", "t4", "t0"]
    assert [r.topic for r in await journal.outbox_fetch(10, [r.id for r in all_rows])] == []


async def test_outbox_done_removes(open_journal: OpenJournal) -> None:
    j = await open_journal()
    await j.enqueue([out(topic="a"), out(topic="b"), out(topic="c")])
    a, b, c = await j.outbox_fetch(10)
    await j.outbox_done([a.id, c.id, 999_999])  # an unknown id is ignored
    assert [r.topic for r in await j.outbox_fetch(10)] == ["b"]
    assert j.outbox_rows == 1 == await real_outbox_count(j)
    await j.outbox_done([a.id])  # already gone: idempotent
    assert j.outbox_rows == 1
    await j.close()
    j2 = await open_journal()
    assert [r.id for r in await j2.outbox_fetch(10)] == [b.id]


async def test_outbox_ttl_drops_expired_rows(open_journal: OpenJournal, clock: Clock) -> None:
    j = await open_journal(outbox_ttl_s=60)
    await j.enqueue([out(topic="old", priority=9)])
    clock.advance(30)
    await j.enqueue([out(topic="young", priority=1)])
    clock.advance(30)  # "old" is exactly 60 s old: not yet past its TTL
    assert [r.topic for r in await j.outbox_fetch(10)] == ["old", "young"]
    clock.advance(1)
    assert [r.topic for r in await j.outbox_fetch(10)] == ["young"]
    assert j.outbox_rows == 1 == await real_outbox_count(j)
    clock.advance(30)
    assert await j.outbox_fetch(10) == []
    assert j.outbox_rows == 0 == await real_outbox_count(j)


async def test_clock_jump_shift_keeps_pending_deadlines(open_journal: OpenJournal,
                                                       clock: Clock) -> None:
    """A Pi without RTC: NTP steps the clock a day forward. Shifted by the jump, queued
    replies keep their TTL, a retry keeps its back-off and a timer its delay."""
    j = await open_journal(outbox_ttl_s=60)
    await j.enqueue([out(topic="queued")])
    rid = await accept_one(j, "k1")
    [row] = await j.claim(1)
    await j.retry_later(row.id, "boom", 30)
    await j.schedule("t1", clock() + 600, "edged/out/t", b"due")
    clock.advance(86400)
    assert await j.shift_times(86400) == {"outbox": 1, "retries": 1, "seen": 1,
                                          "scheduled": 1, "escalations": 0}
    assert [r.topic for r in await j.outbox_fetch(10)] == ["queued"]  # not expired
    assert await j.claim(1) == []  # still backing off
    clock.advance(31)
    [again] = await j.claim(1)
    assert again.id == rid
    assert (await j.release_due())[0] == 0  # the timer is 10 minutes away, not overdue
    clock.advance(600)
    assert (await j.release_due())[0] == 1


async def test_outbox_bound_sheds_lowest_priority_oldest(open_journal: OpenJournal) -> None:
    j = await open_journal(outbox_max_rows=3)

    async def topics() -> list[str]:
        return [r.topic for r in await j.outbox_fetch(100)]

    await j.enqueue([out(topic="r1", priority=5), out(topic="e1", priority=PRIO_EVENT,
                                                        kind="event")])
    await j.enqueue([out(topic="e2", priority=PRIO_EVENT, kind="event")])
    assert (j.dropped_outbox, await topics()) == (0, ["r1", "e1", "e2"])
    inbox_id = await accept_one(j, "i:x")
    await j.claim(1)
    await j.complete(inbox_id, [out(topic="r2", priority=5), out(topic="r3", priority=5)])
    # Events go before replies, oldest first.
    assert (j.dropped_outbox, await topics()) == (2, ["r1", "r2", "r3"])
    assert j.outbox_rows == 3 == await real_outbox_count(j)
    await j.enqueue([out(topic="e3", priority=PRIO_EVENT, kind="event")])
    assert (j.dropped_outbox, await topics()) == (3, ["r1", "r2", "r3"])
    await j.enqueue([out(topic="s1", priority=PRIO_STATUS, kind="status")])
    assert (j.dropped_outbox, await topics()) == (4, ["s1", "r2", "r3"])
    assert j.outbox_rows == 3 == await real_outbox_count(j)


async def test_outbox_bound_counts_rows_present_at_open(open_journal: OpenJournal) -> None:
    j = await open_journal(outbox_max_rows=10)
    await j.enqueue([out(topic=f"e{n}", priority=PRIO_EVENT, kind="event") for n in range(4)])
    await j.close()
    j2 = await open_journal(outbox_max_rows=4)
    await j2.enqueue([out(topic="r", priority=5)])
    assert j2.dropped_outbox == 1
    assert [r.topic for r in await j2.outbox_fetch(10)] == ["r", "e1", "e2", "e3"]


async def test_outbox_rows_counter_tracks_every_path(
    open_journal: OpenJournal, clock: Clock
) -> None:
    j = await open_journal(outbox_ttl_s=100, outbox_max_rows=5)

    async def check() -> None:
        assert j.outbox_rows == await real_outbox_count(j)

    await j.enqueue([out(), out()])
    await check()
    await j.accept([item("i:e", outcome="error", error_code="c", outbox=[out(), out()])])
    await check()
    inbox_id = await accept_one(j, "i:ok")
    await j.claim(1)
    await j.complete(inbox_id, [out(), out(), out()])  # over the bound: shed
    await check()
    rows = await j.outbox_fetch(2)
    await j.outbox_done([r.id for r in rows])
    await check()
    clock.advance(101)
    await j.enqueue([out()])
    await j.outbox_fetch(10)  # expires the old ones
    await check()
    await j.cleanup()
    await check()
    assert j.outbox_rows == 1


# -- steps ------------------------------------------------------------------------------------


async def test_step_new_then_done(open_journal: OpenJournal) -> None:
    j = await open_journal()
    inbox_id = await accept_one(j, "i:s")
    assert await j.step_begin(inbox_id, "send-sms") == ("new", None)
    await j.step_end(inbox_id, "send-sms", b'{"ok":true}')
    assert await j.step_begin(inbox_id, "send-sms") == ("done", b'{"ok":true}')
    # Keys are per message.
    other = await accept_one(j, "i:t")
    assert await j.step_begin(other, "send-sms") == ("new", None)
    await j.step_end(other, "send-sms", b"1")
    await j.close()
    j2 = await open_journal()
    assert await j2.step_begin(inbox_id, "send-sms") == ("done", b'{"ok":true}')


async def test_step_started_before_crash_is_in_doubt(open_journal: OpenJournal) -> None:
    j = await open_journal()
    inbox_id = await accept_one(j, "i:s")
    assert await j.step_begin(inbox_id, "done-step") == ("new", None)
    await j.step_end(inbox_id, "done-step", b"r")
    assert await j.step_begin(inbox_id, "open-door") == ("new", None)
    await j.close()  # died inside the side effect

    j2 = await open_journal()
    with pytest.raises(StepInDoubt, match="open-door"):
        await j2.step_begin(inbox_id, "open-door")
    with pytest.raises(StepInDoubt):  # and stays in doubt: never re-run
        await j2.step_begin(inbox_id, "open-door")
    assert await j2.step_begin(inbox_id, "done-step") == ("done", b"r")
    # The failed step_begin did not disturb anything else.
    assert (await j2.counts())["received"] == 1


# -- clean-up ---------------------------------------------------------------------------------


async def test_cleanup_removes_old_final_rows_steps_and_seen_keys(
    open_journal: OpenJournal, clock: Clock
) -> None:
    j = await open_journal(dedup_window_s=10, retention_s=100)
    done, dead, waiting, busy = await j.accept([
        item("i:done"), item("i:dead"), item("i:waiting"), item("i:busy")])
    assert done is not None and dead is not None and waiting is not None and busy is not None
    assert {r.id for r in await j.claim(10)} == {done, dead, waiting, busy}
    await j.step_begin(done, "k")
    await j.step_end(done, "k", b"1")
    await j.step_begin(busy, "k")
    await j.complete(done, [])
    await j.kill(dead, "x", [])
    await j.release([waiting])
    sunk = await accept_one(j, "i:sunk", outcome="sink")
    await accept_one(j, "h:content", content=True)  # seen until T0+10

    clock.advance(11)
    assert await j.cleanup() == {"inbox": 0, "seen": 1}  # only the content key expired
    assert (await j.accept([item("h:content", content=True)]))[0] is not None  # until T0+21
    assert await j.accept([item("i:done")]) == [None]
    late = await accept_one(j, "i:late")  # seen until T0+111

    clock.advance(90)  # T0+101: the first rows are past retention
    assert await j.cleanup() == {"inbox": 3, "seen": 6}
    remaining = {r[0] for r in await j.query("SELECT id FROM inbox")}
    assert not remaining & {done, dead, sunk}
    assert {waiting, busy, late} <= remaining  # open rows are kept whatever their age
    steps = await j.query("SELECT inbox_id, key FROM steps")
    assert [tuple(s) for s in steps] == [(busy, "k")]
    assert await j.query("SELECT key FROM seen") == [("i:late",)]
    counts = await j.counts()
    assert (counts["received"], counts["processing"], counts["done"], counts["dead"]) == (
        4, 1, 0, 0)
    # A forgotten key is a new message again; a remembered one is still a duplicate.
    assert (await j.accept([item("i:done")]))[0] is not None
    assert await j.accept([item("i:late")]) == [None]


async def test_cleanup_keeps_recently_finished_rows(
    open_journal: OpenJournal, clock: Clock
) -> None:
    j = await open_journal(retention_s=100)
    inbox_id = await accept_one(j, "i:slow")
    await j.claim(1)
    clock.advance(60)
    await j.complete(inbox_id, [])  # finished at T0+60
    clock.advance(60)  # received 120 s ago, finished 60 s ago
    assert (await j.cleanup())["inbox"] == 0
    clock.advance(41)
    assert (await j.cleanup())["inbox"] == 1


# -- group commit and failure isolation ---------------------------------------------------------


async def test_group_commit_of_concurrent_accepts(journal: Journal) -> None:
    before = journal.commits
    results = await asyncio.gather(*(journal.accept([item(f"i:{n}")]) for n in range(500)))
    ids = [r[0] for r in results]
    assert None not in ids
    assert len(set(ids)) == 500
    assert journal.commits - before < 250, journal.commits - before
    assert (await journal.counts())["received"] == 500


async def test_held_writer_commits_queued_work_as_one_group(journal: Journal) -> None:
    before = journal.commits
    results = await one_group(journal, *(journal.accept([item(f"i:{n}")]) for n in range(500)))
    assert journal.commits - before == 2  # the blocker's group and the 500 together
    assert len({r[0] for r in results}) == 500


async def test_group_size_is_capped(journal: Journal) -> None:
    before = journal.commits
    results = await one_group(journal, *(journal.accept([item(f"i:{n}")]) for n in range(1030)))
    assert len({r[0] for r in results}) == 1030
    # 1 for the blocker, then 1024 + 6: the cap is 1024 operations per transaction.
    assert journal.commits - before == 3


async def test_failing_operation_fails_only_itself(open_journal: OpenJournal) -> None:
    j = await open_journal()
    ran: list[str] = []

    class Boom(Exception):
        pass

    def write_then_raise(conn: Any) -> None:
        ran.append("boom")
        conn.execute("INSERT INTO meta(key, value) VALUES('half-done', 'x')")
        conn.execute(
            "INSERT INTO inbox(key, topic, payload, meta, state, received_at, updated_at) "
            "VALUES('i:ghost', 't', x'00', x'80', 'received', 0, 0)")
        raise Boom("only me")

    before = j.commits
    a, boom, c = await one_group(
        j,
        j.accept([item("i:a", outbox=[out(topic="ra")])]),
        j._call(write_then_raise),
        j.accept([item("i:c")]),
    )
    assert j.commits - before == 2  # the blocker's group, then the group with the failure
    assert ran == ["boom"]
    assert isinstance(boom, Boom) and str(boom) == "only me"
    assert isinstance(a, list) and a[0] is not None
    assert isinstance(c, list) and c[0] is not None
    assert await j.query("SELECT key FROM meta WHERE key = 'half-done'") == []
    await j.close()

    j2 = await open_journal()
    keys = [r[0] for r in await j2.query("SELECT key FROM inbox ORDER BY id")]
    assert keys == ["i:a", "i:c"]
    assert [r.topic for r in await j2.outbox_fetch(10)] == ["ra"]


async def test_journal_still_usable_after_failing_operation(journal: Journal) -> None:
    def bad_sql(conn: Any) -> None:
        conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(sqlean.OperationalError, match="no_such_table"):
        await journal._call(bad_sql)
    assert (await journal.accept([item("i:after")]))[0] is not None


class _WritesFail:
    """Make every file write of this process fail (like a full disk) while active.

    RLIMIT_FSIZE is enforced for root too, unlike file permissions. A 1-byte limit makes any
    write past offset 0 fail with EFBIG (SIGXFSZ is ignored meanwhile).
    """

    def __enter__(self) -> None:
        import resource
        import signal

        self._resource, self._signal = resource, signal
        self._limit = resource.getrlimit(resource.RLIMIT_FSIZE)
        self._handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1, self._limit[1]))

    def __exit__(self, *exc: object) -> None:
        self._resource.setrlimit(self._resource.RLIMIT_FSIZE, self._limit)
        self._signal.signal(self._signal.SIGXFSZ, self._handler)


needs_rlimit = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="uses RLIMIT_FSIZE to make writes fail")


@needs_rlimit
async def test_commit_failure_fails_every_operation_of_the_group(
    open_journal: OpenJournal,
) -> None:
    j = await open_journal()
    await accept_one(j, "i:before")
    ran: list[bool] = []

    def probe(conn: Any) -> str:
        ran.append(True)
        return "ran"

    with _WritesFail():
        results = await one_group(
            j,
            j.accept([item("i:a", outbox=[out()])]),
            j._call(probe),
            j.accept([item("i:b")]),
        )
    # Every operation ran, and every one fails as the commit fails.
    assert ran == [True]
    assert all(isinstance(r, JournalError) for r in results), results
    assert all("commit failed" in str(r) for r in results)
    # Nothing of the group is kept, not even the dedup key: the redelivery is accepted.
    counts = await j.counts()
    assert (counts["received"], counts["outbox"]) == (1, 0)
    assert (await j.accept([item("i:a")]))[0] is not None
    await j.close()
    j2 = await open_journal()
    keys = [r[0] for r in await j2.query("SELECT key FROM inbox ORDER BY id")]
    assert keys == ["i:before", "i:a"]


# -- counter consistency on rolled-back work (these expose a bug, see the report) --------------


async def test_outbox_rows_counter_unchanged_by_rolled_back_operation(journal: Journal) -> None:
    with pytest.raises(sqlean.IntegrityError, match="NOT NULL"):
        await journal.accept([item("i:ok", outbox=[out(), out()]), item("i:bad", topic=None)])
    assert await real_outbox_count(journal) == 0
    assert journal.outbox_rows == 0


@needs_rlimit
async def test_outbox_rows_counter_unchanged_by_failed_commit(journal: Journal) -> None:
    with _WritesFail():
        with pytest.raises(JournalError):
            await journal.accept([item("i:a", outbox=[out()])])
    assert await real_outbox_count(journal) == 0
    assert journal.outbox_rows == 0


# -- lifecycle ----------------------------------------------------------------------------------


async def test_db_is_wal_with_full_sync(open_journal: OpenJournal, db: Path) -> None:
    j = await open_journal()
    assert await j.query("PRAGMA journal_mode") == [("wal",)]
    assert await j.query("PRAGMA synchronous") == [(2,)]  # FULL
    assert await j.query("SELECT value FROM meta WHERE key = 'schema_version'") == [("1",)]
    await j.close()
    # WAL is a property of the file: another connection sees it too.
    conn = stdlib_sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


async def test_open_creates_parent_directories(open_journal: OpenJournal, tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c.db"
    j = await open_journal(path)
    await accept_one(j, "i:x")
    assert path.exists()


async def test_calls_after_close_raise(journal: Journal) -> None:
    await journal.close()
    with pytest.raises(JournalError, match="closed"):
        await journal.accept([item("i:x")])
    await journal.close()  # closing twice is harmless


async def test_work_queued_before_close_completes(open_journal: OpenJournal) -> None:
    j = await open_journal()
    pending = [asyncio.ensure_future(j.accept([item(f"i:{n}")])) for n in range(50)]
    await asyncio.gather(j.close(), *pending)
    assert all(p.result()[0] is not None for p in pending)
    j2 = await open_journal()
    assert (await j2.counts())["received"] == 50


async def test_call_racing_close_fails_instead_of_hanging(open_journal: OpenJournal) -> None:
    """A call made while close() is under way must fail, not wait forever."""
    j = await open_journal()
    closing = asyncio.ensure_future(j.close())
    late = asyncio.ensure_future(j.accept([item("i:late")]))  # runs after close() queued its stop
    await closing
    try:
        result = await asyncio.wait_for(late, 2)
    except JournalError:
        return
    except TimeoutError:
        pytest.fail("an operation queued while the journal was closing never completed")
    # Acceptable too: it was served before the writer stopped.
    assert result[0] is not None


async def test_failed_open_raises_journal_error_and_calls_fail_fast(tmp_path: Path) -> None:
    path = tmp_path / "is-a-directory.db"
    path.mkdir()
    j = Journal(path)
    with pytest.raises(JournalError):
        await j.open()
    try:
        with pytest.raises(JournalError):
            try:
                await asyncio.wait_for(j.accept([item("i:x")]), 2)
            except TimeoutError:
                pytest.fail("a call after a failed open() never completed")
    finally:
        await j.close()


# -- dead letters -------------------------------------------------------------------------------


def test_dead_letter_payload_keeps_utf8_text() -> None:
    raw = dead_letter_payload("edged/in/dev1", "héllo {".encode(), "not JSON", "bad_json",
                              "req-1", 2)
    body = msgspec.json.decode(raw)
    assert body["topic"] == "edged/in/dev1"
    assert body["reason"] == "not JSON"
    assert body["code"] == "bad_json"
    assert body["id"] == "req-1"
    assert body["attempts"] == 2
    assert body["payload"] == "héllo {"
    assert body["payload_encoding"] == "utf-8"
    assert isinstance(body["ts"], float)
    msgspec.json.decode(raw, type=DeadLetter)  # matches the contract


def test_dead_letter_payload_base64_for_binary() -> None:
    payload = b"\xff\xfe\x00\x80binary"
    raw = dead_letter_payload("edged/in/dev2", payload, "not UTF-8", "bad_encoding", None, 0)
    dl = msgspec.json.decode(raw, type=DeadLetter)
    assert dl.payload_encoding == "base64"
    assert base64.b64decode(dl.payload) == payload
    assert (dl.topic, dl.reason, dl.code, dl.id) == (
        "edged/in/dev2", "not UTF-8", "bad_encoding", None)
    assert "id" in msgspec.json.decode(raw)  # present, as null
