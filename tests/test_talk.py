"""Agents that talk: a request that needs words goes to the agent's model with its working
memory, when the model talks (an OpenAI-compatible server: here a real ``llama_cpp.server``
serving the bundled SmolLM2-135M, for the mechanics, not the model's wisdom); the bundled
model alone says so instead of guessing. ``tools = []`` means no tools at all, the memory
tools included; the agent still remembers what it is told."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from edged.messages import Request

from .harness import peer
from .test_openai_backend import KEY, llama_server  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parent.parent

LOCAL_ONLY = f"""
[models.small]
backend = "llama_cpp"
path = "bundled:smollm2-135m"
context = 1024
threads = 1

[agents.chat]
model = "small"
description = "Answers questions."
tools = []

[router]
default_agent = "chat"

[plugins]
dirs = ["{ROOT / 'plugins'}"]
"""


def _served(url: str, key_file: str) -> str:
    return f"""
[models.lan]
backend = "openai"
base_url = "{url}"
model = "smollm2"
api_key_file = "{key_file}"
timeout_s = 120

[agents.chat]
model = "lan"
description = "Answers questions about anything."
tools = []
answer_tokens = 24

[router]
default_agent = "chat"

[plugins]
dirs = ["{ROOT / 'plugins'}"]
"""


async def _ask(p: Any, device: str, text: str) -> dict[str, Any]:
    rid = f"{device}-{abs(hash(text)) % 10**8}"
    p.publish(f"edged/in/{device}", json.dumps({"id": rid, "text": text}))
    [m] = await asyncio.to_thread(
        p.wait_count, 1, 120, lambda m: json.loads(m.payload).get("id") == rid)
    return json.loads(m.payload)


async def test_an_agent_without_tools_and_a_rules_model_says_so(broker, make_config,
                                                                 run_daemon) -> None:
    d = await run_daemon(make_config(extra=LOCAL_ONLY), timeout=60)
    assert d.app.stages["chat"].tools == {}  # type: ignore[attr-defined]
    with peer(broker.port) as p:
        p.subscribe("edged/out/+")
        r = await _ask(p, "phone", "What is the capital of France?")
        assert r["tool_calls"] == []
        assert r["text"] == "I can't answer that here: this gateway's model only runs commands."
        r = await _ask(p, "phone", "tell me a joke about cats")
        assert r["tool_calls"] == [] and "Did you mean" not in r["text"]
        # no memory tools, but what it is told is remembered (the agent's own memory)
        r = await _ask(p, "phone", "remember that my cat is called Tom")
        assert r["tool_calls"] == [] and r["text"] == \
            "OK, I'll remember that your cat is called Tom."
        r = await _ask(p, "phone", "hello")
        assert r["text"] == "Hello! How can I help?"


async def test_an_agent_talks_through_an_openai_compatible_server(
        broker, make_config, run_daemon, llama_server) -> None:  # noqa: F811
    cfg = make_config(extra=_served(llama_server.url, llama_server.key_file))
    d = await run_daemon(cfg, timeout=60)
    with peer(broker.port) as p:
        p.subscribe("edged/out/+")
        await _ask(p, "phone", "remember that my cat is called Tom")
        r = await _ask(p, "phone", "What is the capital of France?")
        # the model's own words (whatever a 135M model says), from the served model
        assert r["tool_calls"] == [] and r["text"].strip()
        assert r["model"] == "lan" and "only runs commands" not in r["text"]
        assert r["text"] != "I can't answer that here: this gateway's model only runs commands."
    # what the model was given: the system prompt, the recalled memory, the turns so far
    agent = d.app.stages["chat"]
    wm = await agent.working_memory(Request(  # type: ignore[attr-defined]
        id="x", topic="edged/in/phone", device="phone", text="what is my cat called?"))
    msgs = wm.messages()
    assert msgs[0]["role"] == "system" and "My cat is called Tom" in msgs[0]["content"]
    assert any(m["content"] == "What is the capital of France?" for m in msgs[1:])
    assert msgs[-1] == {"role": "user", "content": "what is my cat called?"}


async def test_a_talking_answer_streams_its_words_as_they_come(
        broker, make_config, run_daemon, llama_server) -> None:  # noqa: F811
    """The served model streams (server-sent events); its words go to ``<reply
    topic>/partial`` as they come (QoS 0, numbered), and the final reply, the durable one,
    says the same words."""
    cfg = make_config(extra=_served(llama_server.url, llama_server.key_file))
    await run_daemon(cfg, timeout=60)
    with peer(broker.port) as p:
        p.subscribe("edged/out/+")
        p.subscribe("edged/out/+/partial")
        rid = "stream-1"
        p.publish("edged/in/tablet", json.dumps({"id": rid, "text": "Tell me about cats.",
                                                 "stream": True}))
        [m] = await asyncio.to_thread(
            p.wait_count, 1, 120,
            lambda m: m.topic == "edged/out/tablet" and json.loads(m.payload).get("id") == rid)
        reply = json.loads(m.payload)
        pieces = [json.loads(x.payload) for x in p.messages
                  if x.topic == "edged/out/tablet/partial"]
        assert reply["model"] == "lan" and reply["text"].strip()
        assert pieces and all(x["id"] == rid for x in pieces)
        assert [x["seq"] for x in pieces] == list(range(1, len(pieces) + 1))
        assert "".join(x["delta"] for x in pieces).strip() == reply["text"].strip()
        # not asked for: nothing streamed
        p.publish("edged/in/tablet", json.dumps({"id": "stream-2", "text": "And dogs?"}))
        await asyncio.to_thread(
            p.wait_count, 1, 120, lambda m: m.topic == "edged/out/tablet" and
            json.loads(m.payload).get("id") == "stream-2")
        assert not [x for x in p.messages if x.topic == "edged/out/tablet/partial"
                    and json.loads(x.payload)["id"] == "stream-2"]
