"""Property-based bad input against the real daemon process: it stays up and answers everything.

Each generated payload goes to ``edged/in/fuzz`` with an MQTT v5 response topic and unique
correlation data; every one must get a reply there (an error for bad input) and every error
must have a dead-letter copy carrying the original payload.
"""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import Peer, peer

LIMIT = 1024


def _invalid_utf8() -> st.SearchStrategy[bytes]:
    def bad(b: bytes) -> bool:
        try:
            b.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False
    return st.binary(min_size=1, max_size=200).filter(bad)


_not_str = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(),
                     st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                          st.integers(),
                                                                          max_size=2))

def _is_bad_json(b: bytes) -> bool:
    try:
        v = json.loads(b)
    except ValueError:
        return True
    return not isinstance(v, dict)


BAD = st.one_of(
    _invalid_utf8(),
    st.integers(LIMIT + 1, 4 * LIMIT).map(lambda n: b"a" * n),
    st.builds(lambda t: json.dumps({"text": t}).encode(), _not_str),
    st.builds(lambda d: json.dumps({"text": "x", "data": d}).encode(),
              st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers()))),
    st.builds(lambda p: json.dumps({"text": "x", "priority": p}).encode(),
              st.one_of(st.integers(10, 10**6), st.integers(-(10**6), -1), st.text(max_size=3))),
    st.integers(33, 300).map(lambda n: ('{"text": "x", "data": {"k": ' + "[" * n + "]" * n
                                        + "}}").encode()),
    st.text(max_size=50).map(lambda t: ("{" + t).encode()).filter(_is_bad_json),
    st.just(b"{}"),
    st.sampled_from([b"", b"   ", b"\n\t"]),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=10,
)
ANY = st.one_of(BAD, st.binary(max_size=300),
                st.builds(lambda d: json.dumps({"data": d}).encode(),
                          st.dictionaries(st.text(max_size=5), json_values, max_size=4)))


class Fuzzer:
    def __init__(self, p: Peer) -> None:
        self.p = p
        self.n = itertools.count()

    def send(self, payload: bytes) -> tuple[dict[str, Any], dict[str, Any] | None]:
        cid = f"h{next(self.n)}"
        self.p.publish("edged/in/fuzz", payload, response_topic="edged/out/fuzz/reply",
                       correlation=cid.encode())
        [reply] = self.p.wait_count(
            1, 15, lambda m: m.topic == "edged/out/fuzz/reply" and m.properties.CorrelationData ==
            cid.encode())
        body = json.loads(reply.payload)
        dead = None
        if "error" in body:
            [d] = self.p.wait_count(1, 15, lambda m: m.topic == "edged/dlq" and
                                    json.loads(m.payload).get("id") == cid)
            dead = json.loads(d.payload)
        return body, dead


def _original(dead: dict[str, Any]) -> bytes:
    if dead["payload_encoding"] == "base64":
        return base64.b64decode(dead["payload"])
    return dead["payload"].encode()


def test_bad_input_never_crashes_and_is_always_answered(tmp_path, broker, make_config,
                                                        daemon_process):
    daemon = daemon_process(make_config(delivery=f"max_payload_bytes = {LIMIT}")).start()
    with peer(broker.port) as p:
        p.subscribe("edged/out/fuzz/reply", "edged/dlq")
        fz = Fuzzer(p)

        @settings(max_examples=120, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(BAD)
        def bad_inputs_get_errors(payload: bytes) -> None:
            body, dead = fz.send(payload)
            assert "error" in body, (payload, body)
            assert body["error"]["code"] and body["error"]["message"]
            assert dead is not None and dead["topic"] == "edged/in/fuzz"
            assert _original(dead) == payload

        @settings(max_examples=120, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(ANY)
        def anything_gets_an_answer(payload: bytes) -> None:
            body, dead = fz.send(payload)
            if "error" in body:
                assert dead is not None and _original(dead) == payload
            else:
                assert body["agent"] == "echo"

        bad_inputs_get_errors()
        anything_gets_an_answer()
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.tail()
        body, _ = fz.send(b"still alive?")
    assert body["text"] == "still alive?"
