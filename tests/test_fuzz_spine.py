"""Hypothesis fuzz of topics + envelopes through the running daemon (a real `edged run`
process, a real mosquitto): hostile device ids, reply topics, agents, priorities, sessions,
spoofed device fields, broken and oversized payloads, all at once. Every case must be
answered on the device's own reply space or dead-lettered (or, when it asks for the sink
agent, journaled with no reply, by contract), nothing may be published outside edged's
topics, and the daemon must stay up. `-m slow` runs 100k cases (about 15 minutes on 2
cores); the default run 1500."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import Peer

LIMIT = 2048
# a topic level a device may publish on: no '/', '+', '#' or NUL (MQTT forbids wildcards in
# a publish topic; '/' would make it another topic, which edged does not subscribe to)
# and printable: the broker itself disconnects a client that sends control characters or
# non-characters in a topic (protocol errors are the broker's to police, not edged's)
LEVEL = st.text(st.characters(blacklist_characters="/+#\x00",
                              blacklist_categories=("Cc", "Cs", "Co", "Cn")), max_size=20)
DEVICE = st.one_of(st.sampled_from(["dev", "kids-tablet", "lamp", "a" * 128, "a" * 129, ""]),
                   LEVEL)
TOPICS = st.one_of(st.just("edged/out/victim"), st.just("zigbee2mqtt/bridge/request/x"),
                   st.just("edged/in/other"), st.just("edged/status"),
                   st.builds(lambda d, s: f"edged/out/{d}/{s}", DEVICE, LEVEL), LEVEL)
FIELD = st.one_of(st.none(), st.integers(-10, 20), st.text(max_size=8), st.booleans(),
                  st.lists(st.integers(), max_size=2))
ENVELOPE = st.fixed_dictionaries({}, optional={
    "text": st.one_of(st.text(max_size=30), FIELD),
    "data": st.one_of(st.dictionaries(st.text(max_size=4), st.integers(), max_size=3), FIELD),
    "agent": st.one_of(st.sampled_from(["echo", "models", "sink", "nobody"]), FIELD),
    "priority": st.one_of(st.integers(-3, 12), FIELD),
    "session": st.one_of(st.text(max_size=10), FIELD),
    "device": st.one_of(DEVICE, FIELD),
    "reply_to": st.one_of(TOPICS, FIELD),
})
PAYLOAD = st.one_of(
    ENVELOPE.map(lambda e: json.dumps(e).encode()),
    st.binary(max_size=64),
    st.text(max_size=40).map(str.encode),
    st.integers(LIMIT + 1, 4 * LIMIT).map(lambda n: b'{"text": "' + b"x" * n + b'"}'),
)
CASE = st.tuples(DEVICE, PAYLOAD, st.one_of(st.none(), TOPICS))


class Collector:
    """Counts every answer (reply or dead letter) by correlation id; keeps anything that
    shows up outside edged's own topics."""

    def __init__(self, port: int) -> None:
        self.p = Peer(port, client_id="fuzz-collector").connect()
        self.answered: set[str] = set()
        self.stray: list[str] = []
        self.cond = threading.Condition()
        self.p.c.on_message = self._on_message
        self.p.subscribe("#")

    def _on_message(self, _c: Any, _u: Any, m: Any) -> None:
        if m.topic.startswith("edged/in/"):
            return  # our own requests
        if m.topic == "edged/status" or m.topic.startswith("edged/events/"):
            return
        cid = None
        if m.topic == "edged/dlq":
            cid = json.loads(m.payload).get("id")
        elif m.topic.startswith("edged/out/"):
            corr = getattr(m.properties, "CorrelationData", None)
            cid = corr.decode() if corr else None
        else:
            self.stray.append(m.topic)
        with self.cond:
            if cid:
                self.answered.add(cid)
            self.cond.notify_all()

    def wait(self, ids: set[str], timeout: float) -> set[str]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not ids <= self.answered:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return ids - self.answered


def _sunk(db: Path, device: str, payload: bytes) -> bool:
    """Journaled as a sink message (the journal only, no reply)?"""
    try:
        body = json.loads(payload)
    except ValueError:
        return False
    if not isinstance(body, dict) or body.get("agent") != "sink":
        return False
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT state FROM inbox WHERE topic = ? AND payload = ?",
                            (f"edged/in/{device}", payload)).fetchall()
    finally:
        conn.close()
    return bool(rows) and all(r[0] == "done" for r in rows)


def _fuzz(n: int, tmp_path: Path, broker: Any, make_config: Any,
          daemon_process: Any) -> None:
    cases: list[tuple[str, bytes, str | None]] = []

    @settings(max_examples=n, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(CASE)
    def collect(case: tuple[str, bytes, str | None]) -> None:
        cases.append(case)

    collect()
    db = tmp_path / "edged.db"
    d = daemon_process(make_config(db=db, delivery=f"max_payload_bytes = {LIMIT}\n"
                                                   "rate_per_s = 0\nmax_pending = 100000")
                       ).start(timeout=60)
    col = Collector(broker.port)
    sender = Peer(broker.port, client_id="fuzz-sender").connect()
    try:
        expected: set[str] = set()
        for i, (device, payload, response) in enumerate(cases):
            cid = f"f{i}"
            expected.add(cid)
            sender.c.publish(f"edged/in/{device}", payload, qos=1,
                             properties=_props(cid, response))
            if i % 500 == 499:  # keep the broker's queue for our session bounded
                col.wait({f"f{j}" for j in range(i - 499, i - 200)}, 120)
        missing = col.wait(expected, 300)
        # an envelope that asks for the sink agent is journaled with no reply, by contract
        missing = {c for c in missing if not _sunk(db, *cases[int(c[1:])][:2])}
        assert not missing, (len(missing), [cases[int(c[1:])] for c in sorted(missing)[:5]])
        assert col.stray == [], col.stray[:10]
        assert d.proc is not None and d.proc.poll() is None, d.tail()
    finally:
        sender.close()
        col.p.close()


def _props(cid: str, response: str | None) -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)
    props.CorrelationData = cid.encode()
    if response:
        props.ResponseTopic = response
    return props


def test_fuzzed_topics_and_envelopes_are_all_answered(tmp_path, broker, make_config,
                                                      daemon_process):
    _fuzz(int(os.environ.get("EDGED_FUZZ_CASES", "1500")), tmp_path, broker, make_config,
          daemon_process)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_fuzzed_topics_and_envelopes_100k(tmp_path, broker, make_config, daemon_process):
    _fuzz(100_000, tmp_path, broker, make_config, daemon_process)
