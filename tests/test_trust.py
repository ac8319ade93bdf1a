"""The trust model against a hostile device, over a real mosquitto: identity comes from the
topic only, the ACL follows a device onto every topic it can reach, replies stay in the
device's reply space, sessions never cross devices, the payload's agent and priority count
only as far as the ACL allows, and limits apply before bad input is stored."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from edged.messages import Reply, Request

from .harness import peer
from .test_workers import _house_extra


class Capture:
    """A stage that records what the spine hands it (device, session, priority)."""

    name = "capture"

    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def handle(self, request: Request, ctx: Any) -> Reply:
        self.requests.append(request)
        return Reply(id=request.id, agent=self.name, text=request.text)


def _is_reply(m: Any) -> bool:
    """A reply (or error reply) from edged, not a request, status or event."""
    if m.topic in ("edged/dlq", "edged/status") or m.topic.startswith("edged/events/"):
        return False
    try:
        body = json.loads(m.payload)
    except ValueError:
        return False
    return isinstance(body, dict) and ("latency_ms" in body or "error" in body)


def _body(m: Any) -> dict[str, Any]:
    return json.loads(m.payload)


async def _wait(p: Any, n: int, pred: Any = None, timeout: float = 60.0) -> list[Any]:
    return await asyncio.to_thread(p.wait_count, n, timeout, pred or (lambda _m: True))


async def test_identity_is_the_topic_and_the_acl_follows_the_device(tmp_path, broker,
                                                                    make_config, run_daemon):
    """A device denied locks.* (rule written as its input topic) tries to unlock through a
    route and by naming another device in the payload: refused in code both times; the
    device it named may unlock."""
    extra = _house_extra(tmp_path) + (
        '[[routes]]\ntopic = "home/+/say"\nagent = "house"\n'
        '[[acl]]\nmatch = "edged/in/kids-tablet"\ndeny = ["locks.*"]\n')
    d = await run_daemon(make_config(extra=extra), timeout=120)
    with peer(broker.port) as p:
        p.subscribe("edged/out/+")
        spoof = {"text": "unlock the front door", "device": "dad-phone"}
        p.publish("home/kids-tablet/say", json.dumps({"id": "k1", **spoof}))
        p.publish("edged/in/kids-tablet", json.dumps({"id": "k2", **spoof}))
        p.publish("edged/in/dad-phone", json.dumps({"id": "k3", "text": spoof["text"]}))
        msgs = await _wait(p, 3)
    by_id = {_body(m)["id"]: (m.topic, _body(m)) for m in msgs}
    for rid in ("k1", "k2"):
        topic, body = by_id[rid]
        assert topic == "edged/out/kids-tablet"  # answered as itself, not as dad-phone
        [call] = body["tool_calls"]
        assert call["tool"] == "locks.set_lock"
        assert call["result"]["error"].startswith("not allowed"), body
    topic, body = by_id["k3"]
    assert topic == "edged/out/dad-phone"
    [call] = body["tool_calls"]
    assert "error" not in (call["result"] or {}), body
    audit = await d.app.journal.query("SELECT device, outcome FROM tool_calls "
                                  "WHERE tool = 'locks.set_lock' ORDER BY request_id")
    assert [(r[0], r[1] == "ok") for r in audit] == [
        ("kids-tablet", False), ("kids-tablet", False), ("dad-phone", True)]


async def test_replies_stay_in_the_devices_reply_space(broker, make_config, run_daemon):
    await run_daemon(make_config(extra=(
        '[[routes]]\ntopic = "desk/+/ask"\nagent = "echo"\nreply_topics = ["desk/+/screen"]\n'
        '[[acl]]\nmatch = "lamp"\nreply_to = ["lamp-room/#"]\n')))
    with peer(broker.port) as p:
        p.subscribe("#")
        cases = {
            "bridge": ("edged/in/dev", {"reply_to": "zigbee2mqtt/bridge/request/permit_join"}),
            "other": ("edged/in/dev", {"reply_to": "edged/out/victim"}),
            "own-sub": ("edged/in/dev", {"reply_to": "edged/out/dev/speaker"}),
            "acl": ("edged/in/lamp", {"reply_to": "lamp-room/panel"}),
            "acl-other": ("edged/in/dev", {"reply_to": "lamp-room/panel"}),
            "route": ("desk/d1/ask", {"reply_to": "desk/d1/screen"}),
        }
        for rid, (topic, extra) in cases.items():
            p.publish(topic, json.dumps({"id": rid, "text": rid, "agent": "echo", **extra}))
        p.publish("edged/in/dev", b"v5", response_topic="zigbee2mqtt/bridge/request/x",
                  correlation=b"v5")
        replies = await _wait(p, 7, lambda m: _is_reply(m))
    where = {_body(m).get("id"): (m.topic, _body(m)) for m in replies}
    for rid in ("bridge", "other", "acl-other", "v5"):
        topic, body = where[rid]
        assert topic == "edged/out/dev", (rid, topic)  # the error goes to its own topic
        assert body["error"]["code"] == "bad_reply_to"
        assert "outside this device's reply space" in body["error"]["message"]
    assert where["own-sub"][0] == "edged/out/dev/speaker"
    assert where["acl"][0] == "lamp-room/panel"
    assert where["route"][0] == "desk/d1/screen"
    seen = [m.topic for m in p.messages]
    assert not [t for t in seen if t.startswith("zigbee2mqtt/")]
    assert "edged/out/victim" not in seen


async def test_sessions_agents_and_priority_are_bounded_by_the_acl(broker, make_config,
                                                                   run_daemon):
    cap = Capture()
    await run_daemon(make_config(extra=(
        '[[acl]]\nmatch = "boss"\nmax_priority = 9\n'
        '[[acl]]\nmatch = "kiosk"\nagents = ["capture"]\n')), stages={"capture": cap})
    with peer(broker.port) as p:
        p.subscribe("edged/out/+", "edged/dlq")
        for dev, body in [
            ("a", {"id": "s-a", "session": "s1"}),
            ("b", {"id": "s-b", "session": "s1"}),
            ("a", {"id": "p-a", "priority": 9}),
            ("boss", {"id": "p-boss", "priority": 9}),
            ("a", {"id": "p-low", "priority": 2}),
            ("a", {"id": "admin", "agent": "models", "data": {"action": "list"}}),
            ("kiosk", {"id": "kiosk-echo", "agent": "echo"}),
            ("kiosk", {"id": "kiosk-cap"}),
        ]:
            body.setdefault("agent", "capture")
            p.publish(f"edged/in/{dev}", json.dumps({"text": "x", **body}))
        msgs = await _wait(p, 10)
    seen = {r.id: r for r in cap.requests}
    assert (seen["s-a"].session, seen["s-b"].session) == ("a:s1", "b:s1")
    assert (seen["p-a"].priority, seen["p-boss"].priority, seen["p-low"].priority) == (5, 9, 2)
    assert "kiosk-cap" in seen
    errors = {_body(m)["id"]: _body(m)["error"] for m in msgs
              if m.topic.startswith("edged/out/") and "error" in _body(m)}
    assert errors["admin"]["code"] == "forbidden" and "admin agent" in errors["admin"]["message"]
    assert errors["kiosk-echo"]["code"] == "forbidden"
    dead = [_body(m)["id"] for m in msgs if m.topic == "edged/dlq"]
    assert sorted(dead) == ["admin", "kiosk-echo"]


async def test_oversized_and_flooding_bad_input_is_bounded_before_it_is_stored(
        broker, make_config, run_daemon):
    d = await run_daemon(make_config(delivery="max_payload_bytes = 65536\nrate_per_s = 0.001\n"
                                              "rate_burst = 3"))
    big = b"\xff" + b"A" * (2 << 20)  # 2 MiB, not even UTF-8
    with peer(broker.port) as p:
        p.subscribe("edged/out/+", "edged/dlq")
        p.publish("edged/in/big", big)
        for i in range(10):  # malformed input counts against the rate limit too
            p.publish("edged/in/flood", b'{"text": "broken ' + str(i).encode())
        msgs = await _wait(p, 1 + 1 + 10 + 3)
    dead = [_body(m) for m in msgs if m.topic == "edged/dlq"]
    [big_dead] = [x for x in dead if x["topic"] == "edged/in/big"]
    assert big_dead["code"] == "too_large"
    assert big_dead["payload_bytes"] == len(big)
    assert big_dead["payload_sha256"] == hashlib.sha256(big).hexdigest()
    assert len(big_dead["payload"]) <= 4096 * 4 // 3 + 4  # a prefix (base64 here)
    codes = [_body(m)["error"]["code"] for m in msgs if m.topic == "edged/out/flood"]
    assert codes.count("bad_json") == 3 and codes.count("rate_limited") == 7
    assert len([x for x in dead if x["topic"] == "edged/in/flood"]) == 3
    rows = await d.app.journal.query("SELECT length(payload) FROM inbox WHERE topic = ?",
                                 "edged/in/big")
    assert rows and rows[0][0] <= 1024  # journaled as a bounded prefix, not 2 MiB


async def test_the_journal_wal_is_bounded_after_a_burst_of_large_rows(tmp_path):
    """40 MiB of 1 MiB rows through the journal: the WAL file goes back to at most
    journal_size_limit after SQLite's checkpoints (it used to keep its peak size forever)."""
    from edged.journal import WAL_LIMIT, Journal, OutRow

    j = Journal(tmp_path / "edged.db")
    await j.open()
    try:
        await j.enqueue([OutRow(topic=f"edged/out/d{i}", payload=b"x" * (1 << 20),
                                priority=5, kind="reply") for i in range(40)])  # one commit
        wal = tmp_path / "edged.db-wal"
        assert wal.stat().st_size > 40 << 20  # the burst really grew the WAL
        rows = await j.outbox_fetch(100, [])
        await j.outbox_done([r.id for r in rows])
        for _ in range(3):  # a few small commits: the autocheckpoint resets the WAL
            await j.enqueue([OutRow(topic="edged/out/x", payload=b"y", priority=5,
                                    kind="reply")])
        assert wal.stat().st_size <= WAL_LIMIT + (1 << 20), wal.stat().st_size
    finally:
        await j.close()
