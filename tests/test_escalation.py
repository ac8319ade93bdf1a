"""Cloud escalation against a real OpenAI-compatible server on loopback: llama-cpp-python's
server app serving the bundled SmolLM2-135M stands in for the cloud, with a request log of
exactly what it received (tests/cloud_server.py). Connectivity is cut by stopping it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from edged import config
from edged.service import Daemon

from .cloud_server import CloudServer
from .harness import ROOT, peer


@pytest.fixture
def cloud(tmp_path: Path):
    s = CloudServer(tmp_path / "cloud")
    yield s
    s.kill()


def agent_config(cloud: CloudServer, **cloud_kw: Any) -> str:
    settings = {"enabled": True, "base_url": cloud.base_url, "model": "cloud-model",
                "escalate_below": 0.0, "redact_fields": ["location", "owner.name"],
                "retry_min_s": 0.2, "retry_max_s": 1.0, "timeout_s": 30.0, **cloud_kw}
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    return f"""
[models.small]
backend = "llama_cpp"
path = "bundled:smollm2-135m"
context = 1024
threads = 1

[agents.house]
model = "small"
description = "Controls lights, heating and locks."
tools = ["home.*", "locks.*"]
max_steps = 2

[router]
default_agent = "house"

[plugins]
dirs = ["{ROOT / 'plugins'}"]

[[acl]]
match = "kids-tablet"
deny = ["locks.*"]

[cloud]
{lines}
"""


POEM = "write a short poem about jazz"


async def _ask(p: Any, device: str, rid: str, text: str, data: dict[str, Any] | None = None,
               timeout: float = 90) -> dict[str, Any]:
    env: dict[str, Any] = {"id": rid, "text": text}
    if data:
        env["data"] = data
    p.publish(f"edged/in/{device}", json.dumps(env))
    [m] = await asyncio.to_thread(
        p.wait_count, 1, timeout, lambda m: m.topic.startswith("edged/out/")
        and json.loads(m.payload).get("id") == rid)
    return json.loads(m.payload)


def _replies(p: Any, rid: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in p.wait_count(0, 1, lambda m: m.topic.startswith(
        "edged/out/") and json.loads(m.payload).get("id") == rid)]


def _sent_text(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content") or "") for m in body.get("messages", []))


async def test_online_escalation_is_redacted_and_offers_only_allowed_tools(
        cloud, broker, make_config, run_daemon):
    cloud.start()
    d = await run_daemon(make_config(extra=agent_config(cloud, event_content="redacted")),
                         timeout=60)
    await d.app.memory.remember("phone", "I like jazz in the evening", "preference")
    await d.app.memory.remember("phone", "The alarm code is 4471", "fact")
    assert d.app.memory.store.list("phone", kind="fact")[0].private  # found sensitive by itself
    with peer(broker.port) as p:
        p.subscribe("edged/out/+", "edged/events/+")
        r = await _ask(p, "phone", "j1",
                       f"{POEM} and the alarm code for anna@example.com, my number is "
                       f"+44 20 7946 0958", data={"location": "42 Main Street",
                                                  "owner": {"name": "Anna"}, "mood": "ok"})
        assert r["escalated"] is True and r["model"] == "cloud-model" and r["text"]
        [body] = [q["body"] for q in cloud.requests("/chat/completions")]
        sent = _sent_text(body)
        # redacted before it left: patterns, envelope fields, private memories
        for secret in ("anna@example.com", "7946", "42 Main Street", "Anna", "4471"):
            assert secret not in sent, secret
        assert "[email]" in sent and "[phone]" in sent and "[redacted]" in sent
        assert "I like jazz in the evening" in sent  # a recalled, non-private memory
        # what was sent is on record, in the same redacted form
        [ev] = await asyncio.to_thread(p.wait_count, 1, 10,
                                       lambda m: m.topic == "edged/events/cloud_request")
        event = json.loads(ev.payload)["data"]
        assert event["messages"] == body["messages"] and event["reason"] == "no_tool"
        assert event["redacted"]["email"] == 1 and event["redacted"]["phone"] == 1
        # the cloud is offered the tools the ACL allows this device, in OpenAI's format
        assert {t["function"]["name"] for t in body["tools"]} >= {
            "home__set_light", "locks__set_lock"}
        r = await _ask(p, "kids-tablet", "j2", POEM)
        assert r["escalated"] is True
        body = cloud.requests("/chat/completions")[-1]["body"]
        names = {t["function"]["name"] for t in body["tools"]}
        assert "home__set_light" in names and not any(n.startswith("locks__") for n in names)
    # the cloud's usage is counted against today's budget
    day = d.app.escalator._day()
    assert (await d.app.journal.cloud_usage(day))[0] == 2


async def test_secret_turns_never_reach_the_cloud_and_events_carry_metadata_only(
        cloud, broker, make_config, run_daemon):
    cloud.start()
    d = await run_daemon(make_config(extra=agent_config(cloud)), timeout=60)
    secret = "correct horse battery staple"  # no pattern catches it: the turn is private
    await d.app.memory.record("phone", "phone", "s0", f"my wifi password is {secret}",
                          f"Noted: {secret}.")
    await d.app.memory.record("phone", "phone", "s1", "I like jazz", "Noted.")
    with peer(broker.port) as p:
        p.subscribe("edged/out/+", "edged/events/+")
        r = await _ask(p, "phone", "p1", f"{POEM}, mail anna@example.com")
        assert r["escalated"] is True
        [body] = [q["body"] for q in cloud.requests("/chat/completions")]
        sent = _sent_text(body)
        assert "horse" not in sent and "wifi password" not in sent
        assert sent.count("[private turn withheld]") == 2  # the request and its echoing reply
        assert "I like jazz" in sent  # an ordinary turn still goes
        [ev] = await asyncio.to_thread(p.wait_count, 1, 10,
                                       lambda m: m.topic == "edged/events/cloud_request")
    event = json.loads(ev.payload)["data"]
    assert "messages" not in event and POEM not in ev.payload.decode()
    assert event["request_id"] == "p1" and event["model"] == "cloud-model"
    assert event["message_count"] == len(body["messages"]) and event["tokens"] > 0
    assert event["redacted"] == {"private_turn": 2, "email": 1}


async def test_offline_escalations_follow_up_once_after_the_cloud_and_a_restart_return(
        cloud, broker, make_config, daemon_process):
    cfg = make_config(extra=agent_config(cloud))
    daemon = daemon_process(cfg).start(timeout=90)
    with peer(broker.port) as p:
        p.subscribe("edged/out/+", "edged/events/+", "edged/status")
        ids = ["q1", "q2", "q3"]
        for i, rid in enumerate(ids):  # the cloud has never been up
            r = await _ask(p, "phone", rid, f"{POEM} number {i}")
            assert r["escalated"] is False and "send a better answer when it is back" in \
                r["text"]
        await asyncio.to_thread(p.wait_count, 3, 10,
                                lambda m: m.topic == "edged/events/cloud_queued")
        assert daemon.terminate() == 0  # the queue is in the journal
        daemon = daemon_process(cfg).start(timeout=90)
        cloud.start()  # connectivity returns: the probe finds it, the queue drains
        follow = await asyncio.to_thread(p.wait_count, 3, 120, lambda m: m.topic.startswith(
            "edged/out/") and json.loads(m.payload).get("followup") is True)
        got = {json.loads(m.payload)["id"]: json.loads(m.payload) for m in follow}
        assert set(got) == set(ids)
        assert all(f["escalated"] and f["model"] == "cloud-model" for f in got.values())

        def drained(m: Any) -> bool:
            if m.topic != "edged/status":
                return False
            st = json.loads(m.payload)
            return st["detail"]["cloud"]["waiting"] == 0 and st["outbox"] == 0 and \
                st["pid"] == daemon.pid

        try:
            await asyncio.to_thread(p.wait_count, 1, 30, drained)
        except TimeoutError:
            last = [json.loads(m.payload) for m in p.wait_count(0, 1, lambda m: m.topic ==
                                                                  "edged/status")][-1]
            raise AssertionError(f"not drained: {last}\n{daemon.tail(40)}") from None
        for rid in ids:  # one local answer and one follow-up each, none twice
            assert [x["followup"] for x in _replies(p, rid)] == [False, True]
        # and the cloud was asked once per escalation
        asked = [q["body"]["messages"][-1]["content"]
                 for q in cloud.requests("/chat/completions")]
        assert sorted(asked) == [f"{POEM} number {i}" for i in range(3)]
    daemon.terminate()


async def test_budget_exhaustion_gives_a_clear_local_answer(cloud, broker, make_config,
                                                            run_daemon):
    cloud.start()
    await run_daemon(make_config(extra=agent_config(cloud, daily_requests=1)), timeout=60)
    with peer(broker.port) as p:
        p.subscribe("edged/out/+", "edged/events/+")
        assert (await _ask(p, "phone", "b1", POEM))["escalated"] is True
        r = await _ask(p, "phone", "b2", "write a short poem about rain")
        assert r["escalated"] is False
        assert "cloud budget for today is used up: 1 of 1 cloud requests today" in r["text"]
        await asyncio.to_thread(p.wait_count, 1, 10,
                                lambda m: m.topic == "edged/events/cloud_budget")
    assert len(cloud.requests("/chat/completions")) == 1


async def test_a_queued_escalation_expires_and_is_never_sent(cloud, broker, make_config):
    cfg = config.load(make_config(extra=agent_config(cloud, queue_ttl_s=1)))
    d = Daemon(cfg)
    task = asyncio.create_task(d.run())
    try:
        await asyncio.wait_for(d.ready.wait(), 60)
        await asyncio.wait_for(d.bus.subscribed.wait(), 30)
        with peer(broker.port) as p:
            p.subscribe("edged/out/+", "edged/events/+")
            r = await _ask(p, "phone", "x1", POEM)
            assert "send a better answer" in r["text"]
            await asyncio.to_thread(p.wait_count, 1, 30,
                                    lambda m: m.topic == "edged/events/cloud_expired")
            assert await d.app.journal.escalation_count() == 0
            cloud.start()
            assert await d.app.escalator._probe()  # online again: nothing is left to send
            assert cloud.requests("/chat/completions") == []
            assert _replies(p, "x1") == [r]
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 30)


async def test_offline_local_mode_answers_locally_and_queues_nothing(cloud, broker,
                                                                    make_config, run_daemon):
    d = await run_daemon(make_config(extra=agent_config(cloud, offline="local")), timeout=60)
    with peer(broker.port) as p:
        p.subscribe("edged/out/+", "edged/events/+")
        r = await _ask(p, "phone", "l1", POEM)
        assert r["escalated"] is False and "cloud is unreachable; answered locally" in r["text"]
        await asyncio.to_thread(p.wait_count, 1, 10,
                                lambda m: m.topic == "edged/events/cloud_offline")
    assert await d.app.journal.escalation_count() == 0
    assert d.app.escalator.describe()["state"] == "offline"


async def test_cloud_tool_calls_run_through_the_same_runner_and_acl(tmp_path, broker,
                                                                   make_config, run_daemon):
    """llama.cpp's chatml-function-calling format makes the stand-in cloud answer with tool
    calls (SmolLM2 calls one whatever is asked: a good stand-in for a cloud that acts)."""
    cloud = CloudServer(tmp_path / "fc", chat_format="chatml-function-calling").start()
    try:
        extra = agent_config(cloud).replace('max_steps = 2', 'max_steps = 1\nescalate = "always"')
        d = await run_daemon(make_config(extra=extra), timeout=60)
        with peer(broker.port) as p:
            p.subscribe("edged/out/+", "edged/events/+")
            for device, rid in (("phone", "t1"), ("kids-tablet", "t2")):
                r = await _ask(p, device, rid, "turn on the kitchen light please")
                assert r["escalated"] is True and r["tool_calls"], r
                body = cloud.requests("/chat/completions")[-1]["body"]
                offered = {t["function"]["name"] for t in body["tools"]}
                for call in r["tool_calls"]:
                    assert call["tool"].replace(".", "__") in offered
                    assert call["result"] is not None
                audit = await d.app.journal.query(
                    "SELECT tool, outcome, agent FROM tool_calls WHERE request_id = ?", rid)
                # every cloud call is in the audit trail like a local one
                assert sorted(a[0] for a in audit) == sorted(c["tool"] for c in
                                                             r["tool_calls"])
                assert all(a[2] == "house" for a in audit)
                if device == "kids-tablet":  # locks are never offered, never run
                    assert not any(n.startswith("locks__") for n in offered)
                    assert not any(a[0].startswith("locks.") for a in audit)
    finally:
        cloud.kill()


async def test_the_api_key_is_sent_and_never_logged(tmp_path, broker, make_config, run_daemon,
                                                   caplog):
    key = "sk-test-0123456789abcdefghij"
    cloud = CloudServer(tmp_path / "k", api_key=key).start()
    try:
        key_file = tmp_path / "cloud.key"
        key_file.write_text(key + "\n")
        caplog.set_level("DEBUG")
        await run_daemon(make_config(extra=agent_config(cloud, api_key_file=str(key_file))),
                         timeout=60)
        with peer(broker.port) as p:
            p.subscribe("edged/out/+", "edged/events/+")
            r = await _ask(p, "phone", "k1", f"{POEM}, my key is {key}")
            assert r["escalated"] is True
            events = p.wait_count(0, 1)
        [sent] = cloud.requests("/chat/completions")
        assert sent["auth"] is True  # the server checked it (a wrong key is a 401)
        assert key not in json.dumps(sent["body"])  # and the user's copy was redacted
        assert key not in caplog.text
        assert not any(key.encode() in m.payload for m in events)
    finally:
        cloud.kill()
