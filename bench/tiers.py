"""Model tiers: which tier answers a mixed load, and how fast, per tier.

A daemon runs the house agent with ``models = ["small", "lan"]``: the bundled SmolLM2-135M
on llama.cpp for the rules pipeline, and a "LAN" tier served by llama-cpp-python's
OpenAI-compatible server (the same 135M model: the stand-in for an Ollama / vLLM / llama.cpp
server with a 1-3B model; the figures are the mechanics, not a big model's speed). The load
is the public agent-eval commands plus questions and chat; the script counts the replies
per tier and prints request -> reply latency per tier. The baseline in the same run: the
very bodies edged sent the LAN server (working memory, tool specs), posted straight to it
again: the tier's model cost without edged around it.

    .venv/bin/python bench/tiers.py [--commands 40]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._runner import ROOT, Bench, Timing  # noqa: E402
from bench.agent_eval import Asker, load_cases  # noqa: E402
from tests.cloud_server import CloudServer  # noqa: E402
from tests.harness import Broker, DaemonProcess, write_config  # noqa: E402

QUESTIONS = [
    "why is the sky blue", "what is the capital of France", "tell me a joke",
    "how do plants make food", "what's a good name for a cat", "explain what a heat pump does",
    "what should I cook tonight", "how far away is the moon", "who wrote Hamlet",
    "what's the difference between a virus and bacteria", "give me a word that rhymes with light",
    "how many legs does a spider have", "what is MQTT", "can you recommend a board game",
    "what does a thermostat do", "why do cats purr", "what is the tallest mountain",
    "how do I boil an egg", "what day comes after Friday", "summarise what you can do",
]

CONFIG = """
[models.small]
backend = "llama_cpp"
path = "bundled:smollm2-135m"
context = 1024
threads = 1

[models.lan]
backend = "openai"
base_url = "{url}"
model = "smollm2"
timeout_s = 120

[agents.house]
models = ["small", "lan"]
description = "Controls lights, heating, locks and notes, and answers questions."
tools = ["home.*", "notes.*", "locks.*", "clock.*", "system.*"]
answer_tokens = 32
max_steps = 1

[router]
default_agent = "house"

[plugins]
dirs = ["{plugins}"]
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--commands", type=int, default=40, help="public eval commands to send")
    args = ap.parse_args()
    cases = [c for c in load_cases(ROOT / "tests" / "data" / "agent_eval.jsonl", None)
             if c.tool is not None][: args.commands]
    bench = Bench("tiers")
    work = Path(tempfile.mkdtemp(prefix="edged-tiers-"))
    lan = CloudServer(work / "lan", chat_format="chatml").start()
    broker = Broker().start()
    daemon = None
    asker = None
    try:
        cfg = write_config(work / "edged.toml", broker, db=work / "edged.db",
                           client_id="edged-tiers", delivery="rate_per_s = 0",
                           extra=CONFIG.format(url=lan.base_url, plugins=ROOT / "plugins"))
        daemon = DaemonProcess(cfg, work).start(timeout=120)
        asker = Asker(broker.port)
        asker.ask("bench-warmup", "turn on the kitchen lights", 120)
        by_tier: dict[str, list[float]] = {}
        load = [(c.device, c.text) for c in cases] + [("phone", q) for q in QUESTIONS]
        for device, text in load:
            reply, dt = asker.ask(device, text, 180)
            tier = str(reply.get("tier")) if "error" not in reply else "error"
            by_tier.setdefault(tier, []).append(dt)
        # the baseline: what edged sent the LAN tier, posted straight to it again
        direct = []
        with httpx.Client(timeout=180) as http:
            for logged in lan.requests("/chat/completions"):
                t0 = time.perf_counter()
                http.post(f"{lan.base_url}/chat/completions",
                          json=logged["body"]).raise_for_status()
                direct.append(time.perf_counter() - t0)
    finally:
        if asker:
            asker.close()
        if daemon:
            daemon.kill()
        broker.cleanup()
        lan.kill()
        shutil.rmtree(work, ignore_errors=True)
    n = sum(len(v) for v in by_tier.values())
    bench.param(commands=len(cases), questions=len(QUESTIONS), tiers=["small", "lan"])
    for tier in sorted(by_tier):
        xs = by_tier[tier]
        name = {"0": "tier 0 (small: rules)", "1": "tier 1 (lan: words, tools)"}.get(tier, tier)
        bench.record(f"{name}: share of requests", 100.0 * len(xs) / n, "%", count=len(xs))
        bench.record_timing(f"{name}: request -> reply", Timing.of(xs))
    lan_t = by_tier.get("1")
    bench.record_timing("baseline: the same bodies straight to the LAN server",
                        Timing.of(direct))
    if lan_t:
        ratio = Timing.of(lan_t).p50 / Timing.of(direct).p50
        bench.record("tier 1 p50 / direct p50", ratio, "x")
    print(json.dumps({k: len(v) for k, v in by_tier.items()}))
    bench.finish()


if __name__ == "__main__":
    main()
