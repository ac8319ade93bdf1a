"""Dedup means "the same request", not "the same words" (DESIGN.md, request payload).

The envelope ``id`` is a device's request key for ``delivery.retention_s``; v5 correlation data
(no id) for ``delivery.correlation_window_s`` only; without either a request has no key, and
repeating words never drops it: only the broker's own redelivery (DUP flag, same packet id) of
a journaled delivery is a duplicate. A refusal for now (``rate_limited``, ``overloaded``) does
not use up its key. Against a real mosquitto; the SIGKILL tests run edged as a subprocess. The
journal-level tests at the end pin the rules with a hand-driven clock.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edged import journal as journal_mod
from edged.journal import Incoming, Journal, Meta
from edged.messages import Reply, Request, content_key, message_key

from .harness import ROOT, DaemonProcess, Peer, peer, wait_for


def _body(m: Any) -> dict[str, Any]:
    return json.loads(m.payload)


async def _wait(p: Peer, n: int, pred: Callable[[Any], bool], timeout: float = 20.0) -> list[Any]:
    return await asyncio.to_thread(p.wait_count, n, timeout, pred)


async def _until(cond: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    """Wait for a condition on the in-process daemon's state or on the clock."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Actuator:
    """A stage whose side effect goes through ``Context.once``, as a tool call does: the test
    counts how often it really ran."""

    name = "actuator"

    def __init__(self) -> None:
        self.effects: list[str] = []

    async def handle(self, request: Request, ctx: Any) -> Reply:
        async def act() -> str:
            self.effects.append(f"{request.device}:{request.id}")
            return request.text

        await ctx.once("act", act)
        return Reply(id=request.id, agent=self.name, text=request.text)


class Gate:
    """Holds every request until the test opens it (keeps one request pending)."""

    name = "gated"

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.entered = asyncio.Event()

    async def handle(self, request: Request, ctx: Any) -> Reply:
        self.entered.set()
        await self.open.wait()
        return Reply(id=request.id, agent=self.name, text=request.text)


def _ask(text: str, *, rid: str | None = None, agent: str = "actuator") -> str:
    body: dict[str, Any] = {"text": text, "agent": agent}
    if rid is not None:
        body["id"] = rid
    return json.dumps(body)


# -- the same words, the same id, the same correlation data ------------------------------------


async def test_same_words_without_a_key_are_two_requests(broker, make_config, run_daemon):
    """A device toggling a light twice gets two replies, and the tool runs twice."""
    act = Actuator()
    d = await run_daemon(make_config(), stages={"actuator": act})
    with peer(broker.port) as p:
        p.subscribe("edged/out/+")
        for _ in range(2):
            p.publish("edged/in/lamp", _ask("toggle the light"))
        p.publish("edged/in/lamp", "toggle")  # plain text, no key either
        p.publish("edged/in/lamp", "toggle")
        toggles = await _wait(p, 2, lambda m: _body(m)["text"] == "toggle the light")
        plain = await _wait(p, 2, lambda m: _body(m)["text"] == "toggle")
    assert len(act.effects) == 2 and len(set(act.effects)) == 2
    # two requests, so two request ids (from each delivery's fingerprint)
    assert len({_body(m)["id"] for m in toggles}) == 2
    assert len({_body(m)["id"] for m in plain}) == 2
    assert d.app.spine.stats["duplicates"] == 0


async def test_same_id_is_processed_once_however_late(broker, make_config, run_daemon):
    """An id is remembered for the retention period, per device: far past the DUP and the
    correlation windows a repeat of it runs no tool; the same id from another device is
    another request."""
    act = Actuator()
    cfg = make_config(delivery="dedup_window_s = 0.01\ncorrelation_window_s = 0.01\n"
                               "retention_s = 3600\n")
    d = await run_daemon(cfg, stages={"actuator": act})
    with peer(broker.port) as p:
        p.subscribe("edged/out/+")
        p.publish("edged/in/door", _ask("unlock", rid="req-1"))
        [first] = await _wait(p, 1, lambda m: _body(m)["id"] == "req-1")
        [(accepted_at,)] = await d.app.journal.query("SELECT received_at FROM inbox")
        await _until(lambda: time.time() > accepted_at + 0.1, "both short windows to pass")
        p.publish("edged/in/door", _ask("unlock", rid="req-1"))  # late: dropped
        p.publish("edged/in/door", json.dumps({"id": "req-1", "text": "unlock it",
                                               "agent": "actuator"}))  # other words, same id
        p.publish("edged/in/gate", _ask("unlock", rid="req-1"))  # another device's request
        p.publish("edged/in/door", _ask("marker", rid="req-2"))  # journaled after the repeats
        await _wait(p, 1, lambda m: _body(m)["id"] == "req-2")
        await _wait(p, 1, lambda m: m.topic == "edged/out/gate")
        replies = [m for m in p.messages if m.topic == "edged/out/door"]
    assert sorted(act.effects) == ["door:req-1", "door:req-2", "gate:req-1"]
    assert [_body(m)["id"] for m in replies].count("req-1") == 1  # a duplicate gets no reply
    assert _body(first)["text"] == "unlock"
    assert d.app.spine.stats["duplicates"] == 2
    steps = await d.app.journal.query("SELECT count(*) FROM steps WHERE key = 'act'")
    assert steps == [(3,)]


async def test_constant_correlation_data_is_answered_after_its_window(broker, make_config,
                                                                     run_daemon):
    """Devices that send the same correlation data with every request (no envelope id) are
    answered again once the window has passed, not blocked for the retention period."""
    cfg = make_config(delivery="correlation_window_s = 0.2\n")
    d = await run_daemon(cfg)
    key, _ = message_key(None, b"static", device="panel", topic="edged/in/panel", payload=b"")
    with peer(broker.port) as p:
        p.subscribe("edged/out/+")
        for i, text in enumerate(["one", "two", "three"]):
            p.publish("edged/in/panel", text, correlation=b"static")
            [m] = await _wait(p, 1, lambda m, t=text: _body(m)["text"] == t)
            assert m.properties.CorrelationData == b"static" and _body(m)["id"] == "static"
            [(expires,)] = await d.app.journal.query("SELECT expires FROM seen WHERE key = ?", key)
            assert expires < time.time() + 1, "correlation data kept beyond its window"
            if i < 2:
                await _until(lambda e=expires: time.time() > e, "the correlation window")
    assert d.app.spine.stats["duplicates"] == 0


# -- refused for now: the key stays unused --------------------------------------------------------


async def test_rate_limited_request_is_answered_when_retried_with_its_id(broker, make_config,
                                                                         run_daemon):
    act = Actuator()
    cfg = make_config(delivery="rate_per_s = 0.001\nrate_burst = 1\n")
    d = await run_daemon(cfg, stages={"actuator": act})
    with peer(broker.port) as p:
        p.subscribe("edged/out/+")
        p.publish("edged/in/chatty", _ask("first", rid="a"))
        p.publish("edged/in/chatty", _ask("second", rid="b"))
        [refused] = await _wait(p, 1, lambda m: "error" in _body(m))
        assert _body(refused)["id"] == "b"
        assert _body(refused)["error"]["code"] == "rate_limited"
        d.app.limits.clock = lambda: time.monotonic() + 3600  # an hour later: the bucket is full
        p.publish("edged/in/chatty", _ask("second", rid="b"))
        [answer] = await _wait(p, 1, lambda m: _body(m).get("text") == "second")
    assert _body(answer)["id"] == "b"
    assert sorted(act.effects) == ["chatty:a", "chatty:b"]
    assert d.app.spine.stats["duplicates"] == 0


async def test_overloaded_request_is_answered_when_retried_with_its_id(broker, make_config,
                                                                       run_daemon):
    gate = Gate()
    d = await run_daemon(make_config(delivery="max_pending = 1\n"), stages={"gated": gate})
    with peer(broker.port) as p:
        p.subscribe("edged/out/+")
        p.publish("edged/in/busy", _ask("hold", rid="h", agent="gated"))
        await asyncio.wait_for(gate.entered.wait(), 10)
        p.publish("edged/in/busy", _ask("later", rid="x", agent="gated"))
        [shed] = await _wait(p, 1, lambda m: "error" in _body(m))
        assert (_body(shed)["id"], _body(shed)["error"]["code"]) == ("x", "overloaded")
        gate.open.set()
        await _wait(p, 1, lambda m: _body(m).get("text") == "hold")
        await _until(lambda: d.app.spine.open == 0, "the held request to finish")
        p.publish("edged/in/busy", _ask("later", rid="x", agent="gated"))
        [answer] = await _wait(p, 1, lambda m: _body(m).get("text") == "later")
    assert _body(answer)["id"] == "x"
    assert d.app.spine.stats["duplicates"] == 0


# -- the broker's redelivery after a SIGKILL ------------------------------------------------------

# edged with the probe agent (tests/probe_daemon.py), whose ack of a marked first delivery is
# withheld after the commit, as if the daemon had died between the commit and the ack.
WRAPPER = '''
import json
import os

from edged.bus.client import MQTTBus
from edged.cli import main
from tests.probe_daemon import ProbeAgent

_ack = MQTTBus.ack


def ack(self, msg):
    held = b"HOLD" in msg.payload and not msg.dup
    with open(os.environ["EDGED_ACK_LOG"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"held": held, "mid": msg.mid, "dup": msg.dup,
                            "payload": msg.payload.decode(errors="replace")}) + "\\n")
    if held:
        self.release(msg)
    else:
        _ack(self, msg)


MQTTBus.ack = ack
if __name__ == "__main__":
    raise SystemExit(main(stages={"probe": ProbeAgent(os.environ["EDGED_PROBE_FILE"], None)}))
'''


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x]


def test_redelivery_after_sigkill_before_ack_is_processed_once(tmp_path, broker, make_config):
    """Journaled, processed and answered, never acked, then SIGKILL: the broker redelivers with
    DUP and the same packet id. Neither the keyless request nor the one keyed by correlation
    data (its window long over) runs its tool again; the same words sent afterwards are a new
    request."""
    effects, acks = tmp_path / "effects.log", tmp_path / "acks.log"
    effects.touch()
    acks.touch()
    (tmp_path / "dedup_wrapper.py").write_text(WRAPPER)
    cfg = make_config(delivery="correlation_window_s = 0.001\n")
    daemon = DaemonProcess(cfg, tmp_path, module="dedup_wrapper", env={
        "PYTHONPATH": f"{ROOT}:{tmp_path}", "EDGED_PROBE_FILE": str(effects),
        "EDGED_ACK_LOG": str(acks)})
    sub = Peer(broker.port, client_id="dedup-sub", persistent=True).connect()
    sub.subscribe("edged/out/+")
    pub = Peer(broker.port).connect()
    toggle = _ask("toggle HOLD", agent="probe")

    def replies(text: str) -> list[dict[str, Any]]:
        with sub.cond:
            return [b for b in map(_body, sub.messages) if b.get("text") == text]

    daemon.start()
    try:
        pub.publish("edged/in/lamp", toggle)
        pub.publish("edged/in/desk", _ask("dim HOLD", agent="probe"), correlation=b"c-1")
        wait_for(lambda: replies("toggle HOLD") and replies("dim HOLD"), 30, "both answered")
        held = [a for a in _lines(acks) if a["held"]]
        assert len(held) == 2  # journaled (the ack comes after the commit), never acked
        daemon.kill()
        daemon.start()
        wait_for(lambda: len([a for a in _lines(acks) if a["dup"]]) == 2, 30,
                 "the broker's redeliveries")
        pub.publish("edged/in/lamp", toggle)  # the same words again: a new request
        first_id = replies("toggle HOLD")[0]["id"]
        wait_for(lambda: [r for r in replies("toggle HOLD") if r["id"] != first_id], 30,
                 "the new toggle answered")
    except TimeoutError as e:
        raise AssertionError(f"{e}\n--- daemon log ---\n{daemon.tail()}") from None
    finally:
        daemon.kill()
        sub.close()
        pub.close()
    redelivered = [a for a in _lines(acks) if a["dup"]]
    assert {(a["mid"], a["payload"]) for a in redelivered} == \
        {(a["mid"], a["payload"]) for a in held}  # DUP, with the original packet ids
    counts = collections.Counter(effects.read_text().split())
    assert len(counts) == 3 and set(counts.values()) == {1}, counts  # each tool ran once
    assert "c-1" in counts
    assert len(replies("toggle HOLD")) == 2 and len(replies("dim HOLD")) == 1
    db = sqlite3.connect(f"file:{tmp_path / 'edged.db'}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM inbox").fetchone() == (3,)
    finally:
        db.close()


def test_sigkill_during_a_reply_burst_repeats_at_most_one_reply(tmp_path, broker, make_config):
    """SIGKILL at random points of a burst, half the requests keyless: every request is
    answered, and a kill repeats at most one reply (the default ``outbox_max_inflight``: rows
    published and not yet recorded as sent), with the same id and body. With 32 in flight
    (the old default) 4 kills repeated 47-93 replies."""
    n, kills = 1500, 4
    rng = random.Random(14)
    daemon = DaemonProcess(make_config(delivery="max_attempts = 50\n"), tmp_path)
    sub = Peer(broker.port, client_id="burst-sub", persistent=True).connect()
    sub.subscribe("edged/out/+")
    pub = Peer(broker.port, client_id="burst-pub").connect()
    daemon.start()
    texts = [f"request {i}" for i in range(n)]

    def publish_all() -> None:
        for i, text in enumerate(texts):
            body = {"id": f"r{i:05d}", "text": text} if i % 2 else {"text": text}
            pub.publish(f"edged/in/dev{i % 7}", json.dumps(body), wait=(i % 50 == 49))

    def answered() -> set[str]:
        with sub.cond:
            return {_body(m).get("text") for m in sub.messages}

    publisher = threading.Thread(target=publish_all, daemon=True)
    publisher.start()
    try:
        for t in sorted(rng.sample(range(n // 10, n - n // 10), kills)):
            wait_for(lambda t=t: len(answered()) >= t, 120, f"{t} replies")
            daemon.kill()
            daemon.start()
        publisher.join(60)
        assert not publisher.is_alive()
        wait_for(lambda: set(texts) <= answered(), 120, "every request answered")
    except TimeoutError as e:
        raise AssertionError(f"{e}\n--- daemon log ---\n{daemon.tail()}") from None
    finally:
        daemon.kill()
        sub.close()
        pub.close()
    by_id: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for m in sub.messages:
        by_id[_body(m)["id"]].append(_body(m))
    assert sum(1 for b in by_id.values() if "error" in b[0]) == 0
    assert len(by_id) == n  # every request its own id, keyless ones included
    repeated = sum(len(b) - 1 for b in by_id.values())
    assert all(x == b[0] for b in by_id.values() for x in b[1:])
    print(f"\nreply burst: {n} requests, {kills} SIGKILLs, {repeated} repeated replies")
    assert repeated <= kills, repeated


# -- the rules, on the journal with a hand-driven clock -------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def journal(tmp_path: Path, clock: Clock) -> AsyncIterator[Journal]:
    j = Journal(tmp_path / "j.db", clock=clock, dedup_window_s=100, correlation_window_s=10,
                retention_s=1000)
    await j.open()
    yield j
    await j.close()


def _item(device: str = "d", *, rid: str | None = None, corr: bytes | None = None,
          payload: bytes = b"toggle", mid: int = 1, dup: bool = False, qos: int = 1,
          code: str = "") -> Incoming:
    """An Incoming as the daemon builds it (key, fingerprint, DUP, a refusal's error code)."""
    topic = f"edged/in/{device}"
    key, content = message_key(rid, corr, device=device, topic=topic, payload=payload, mid=mid)
    return Incoming(key=key, key_is_content=content, topic=topic, payload=payload,
                    meta=Meta(device=device, qos=qos), redelivered=dup,
                    fingerprint="" if content else content_key(topic, payload, mid),
                    outcome="error" if code else None, error_code=code,
                    consumes_key=code not in ("rate_limited", "overloaded"))


async def _accepted(j: Journal, *items: Incoming) -> list[bool]:
    return [i is not None for i in await j.accept(list(items))]


async def test_fingerprint_matches_a_dup_with_the_same_packet_id_only(journal: Journal):
    assert await _accepted(journal, _item(mid=7)) == [True]
    assert await _accepted(journal, _item(mid=7)) == [True]  # not DUP: the same words again
    assert await _accepted(journal, _item(mid=8, dup=True)) == [True]  # another packet
    assert await _accepted(journal, _item(mid=7, dup=True)) == [False]  # the redelivery
    assert await _accepted(journal, _item(mid=7, dup=True, payload=b"other")) == [True]


async def test_qos0_keeps_no_fingerprint(journal: Journal):
    assert await _accepted(journal, _item(mid=0, qos=0), _item(mid=0, qos=0)) == [True, True]
    assert await journal.query("SELECT count(*) FROM seen") == [(0,)]


async def test_dup_matches_only_within_the_last_rows(journal: Journal, monkeypatch):
    """A packet id comes back after 65535 deliveries: an older fingerprint is not matched,
    and clean-up drops it."""
    monkeypatch.setattr(journal_mod, "DUP_WINDOW", 3)
    assert await _accepted(journal, _item(mid=1)) == [True]
    assert await _accepted(journal, _item(mid=2), _item(mid=3)) == [True, True]
    assert await _accepted(journal, _item(mid=1, dup=True)) == [False]  # 2 rows later
    assert await _accepted(journal, _item(mid=4)) == [True]
    assert await _accepted(journal, _item(mid=1, dup=True)) == [True]  # 3 rows later
    assert await journal.cleanup() == {"inbox": 0, "seen": 1}  # mid 2's row is out too
    keys = {r[0] for r in await journal.query("SELECT key FROM seen")}
    assert content_key("edged/in/d", b"toggle", 2) not in keys


async def test_dup_is_recognised_for_the_dedup_window(journal: Journal, clock: Clock):
    await _accepted(journal, _item(mid=5))
    clock.now += 99
    assert await _accepted(journal, _item(mid=5, dup=True)) == [False]
    clock.now += 2  # 101 s after the original: a redelivery this late is a new request
    assert await _accepted(journal, _item(mid=5, dup=True)) == [True]


async def test_correlation_key_is_kept_for_its_window(journal: Journal, clock: Clock):
    """Within the window the same correlation data is the same request (a device's retry),
    after it a new one; the broker's redelivery is recognised by its fingerprint even after
    the window."""
    assert await _accepted(journal, _item(corr=b"c", mid=1)) == [True]
    clock.now += 9
    assert await _accepted(journal, _item(corr=b"c", mid=2, payload=b"x")) == [False]
    clock.now += 2
    assert await _accepted(journal, _item(corr=b"c", mid=1, dup=True)) == [False]
    assert await _accepted(journal, _item(corr=b"c", mid=3)) == [True]
    assert await _accepted(journal, _item("other", corr=b"c", mid=4)) == [True]  # per device


async def test_id_is_kept_for_the_retention_period(journal: Journal, clock: Clock):
    assert await _accepted(journal, _item(rid="r1")) == [True]
    clock.now += 999
    assert await _accepted(journal, _item(rid="r1", mid=9, payload=b"again")) == [False]
    assert await _accepted(journal, _item("other", rid="r1")) == [True]  # per device
    clock.now += 2
    assert await _accepted(journal, _item(rid="r1")) == [True]
    # an id covers its redeliveries: no fingerprint row beside it
    assert not [k for (k,) in await journal.query("SELECT key FROM seen") if k[:2] == "h:"]


@pytest.mark.parametrize("code", ["rate_limited", "overloaded"])
async def test_a_refusal_for_now_leaves_the_key_unused(journal: Journal, code: str):
    """The device's retry with the same id is accepted; the broker's redelivery of the
    refused packet is not (it was answered, with the error)."""
    assert await _accepted(journal, _item(rid="r", mid=1, code=code)) == [True]
    assert await _accepted(journal, _item(rid="r", mid=1, dup=True, code=code)) == [False]
    assert await _accepted(journal, _item(rid="r", mid=2)) == [True]
    assert await _accepted(journal, _item(rid="r", mid=3)) == [False]  # now it is used
    assert await _accepted(journal, _item(rid="q", mid=4, code="bad_json")) == [True]
    assert await _accepted(journal, _item(rid="q", mid=5)) == [False]  # a final refusal
