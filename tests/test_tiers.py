"""Model tiers and native function calling, through the running daemon.

The cheap tier is the bundled SmolLM2-135M on llama.cpp (the rules pipeline); the "LAN"
tier is a real OpenAI-compatible server: llama-cpp-python's server app serving the same
model with the ``chatml-function-calling`` format (tests/cloud_server.py, with a request
log). This tests the mechanics (which tier answers, tools offered and run through the
runner and the ACL, climbing past a failed tier, the governor stepping down), not the
model's wisdom: SmolLM2 with that format calls a tool whatever it is asked.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from edged import config
from edged.governor import Readings
from edged.service import Daemon

from .cloud_server import CloudServer
from .harness import peer

ROOT = Path(__file__).resolve().parent.parent


def tiered(lan: CloudServer) -> str:
    return f"""
[models.small]
backend = "llama_cpp"
path = "bundled:smollm2-135m"
context = 1024
threads = 1

[models.lan]
backend = "openai"
base_url = "{lan.base_url}"
model = "smollm2"
timeout_s = 60

[agents.house]
models = ["small", "lan"]
description = "Controls lights, heating and locks, and answers questions."
tools = ["home.*", "locks.*"]
max_steps = 2
answer_tokens = 32

[router]
default_agent = "house"

[plugins]
dirs = ["{ROOT / 'plugins'}"]

[[acl]]
match = "kids-tablet"
deny = ["locks.*"]
"""


async def _ask(p: Any, device: str, rid: str, text: str) -> dict[str, Any]:
    p.publish(f"edged/in/{device}", json.dumps({"id": rid, "text": text}))
    [m] = await asyncio.to_thread(
        p.wait_count, 1, 120, lambda m: json.loads(m.payload).get("id") == rid)
    return json.loads(m.payload)


async def test_the_cheapest_tier_that_can_serve_answers_and_tiers_climb(
        tmp_path, broker, make_config, run_daemon) -> None:
    lan = CloudServer(tmp_path / "lan", chat_format="chatml-function-calling").start()
    try:
        d = await run_daemon(make_config(extra=tiered(lan)), timeout=60)
        with peer(broker.port) as p:
            p.subscribe("edged/out/+")
            # a command the rules serve: tier 0, the LAN model is not asked
            r = await _ask(p, "phone", "t1", "turn on the kitchen light")
            assert r["tier"] == 0 and r["model"] == "small"
            assert r["tool_calls"][0]["tool"] == "home.set_light"
            assert lan.requests("/chat/completions") == []
            # a question: the LAN tier answers (and, being SmolLM2 in a function-calling
            # format, may call a tool: through the runner, in the audit, as tier 1's steps)
            r = await _ask(p, "kids-tablet", "t2", "why is the sky blue?")
            assert r["tier"] == 1 and r["model"] == "lan" and r["text"]
            sent = lan.requests("/chat/completions")
            assert 1 <= len(sent) <= 2  # max_steps = 2: a tool call, then words
            body = sent[0]["body"]
            assert body["messages"][0]["role"] == "system"
            assert body["messages"][-1] == {"role": "user", "content": "why is the sky blue?"}
            offered = {t["function"]["name"] for t in body["tools"]}
            assert "home__set_light" in offered
            assert not any(n.startswith("locks__") for n in offered)  # the ACL, in code
            audit = await d.app.journal.query(
                "SELECT tool, outcome FROM tool_calls WHERE request_id = ?", "t2")
            assert sorted(a[0] for a in audit) == sorted(c["tool"] for c in r["tool_calls"])
            if len(sent) == 2:  # the tool's result went back to the model
                assert sent[1]["body"]["messages"][-1]["role"] == "tool"
            # the LAN tier down: a question climbs past it and is answered locally, in words
            lan.kill()
            r = await _ask(p, "phone", "t3", "what is the capital of France?")
            assert r["tier"] == 0 and "can't help with that" in r["text"]
            assert d.app.stages["house"].tiers.stats.get("failed:lan") == 1  # type: ignore
    finally:
        lan.kill()


async def test_the_governor_steps_tiers_down_under_pressure(tmp_path, broker,
                                                            make_config) -> None:
    class Sensors:  # a fake: this VM has no battery and no memory pressure to order
        available = 8000.0

        def read(self) -> Readings:
            return Readings(mem_available_mb=self.available, mem_total_mb=16000, rss_mb=100,
                            cpu_load=0.1)

    lan = CloudServer(tmp_path / "lan", chat_format="chatml").start()
    sensors = Sensors()
    d = Daemon(config.load(make_config(extra=tiered(lan))), sensors=sensors)
    task = asyncio.create_task(d.run())
    try:
        await asyncio.wait_for(d.ready.wait(), 60)
        assert d.bus is not None
        await asyncio.wait_for(d.bus.subscribed.wait(), 60)
        with peer(broker.port) as p:
            p.subscribe("edged/out/+")
            sensors.available = 10.0  # below resources.min_free_memory_mb
            await d.app.governor.check()
            assert d.app.governor.defer
            r = await _ask(p, "phone", "g1", "tell me about the moon")
            assert r["tier"] == 0 and "can't help with that" in r["text"]
            assert lan.requests("/chat/completions") == []  # the LAN tier was not tried
            sensors.available = 8000.0
            await d.app.governor.check()
            r = await _ask(p, "phone", "g2", "tell me about the sun")
            assert r["tier"] == 1 and r["model"] == "lan"
            assert len(lan.requests("/chat/completions")) == 1
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 30)
        lan.kill()
