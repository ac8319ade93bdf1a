"""Cloud escalation overhead: a request that escalates, through the whole daemon over MQTT,
vs the same chat request posted straight to the server, in one run.

The "cloud" is llama-cpp-python's server app serving the bundled SmolLM2-135M on loopback
(tests/cloud_server.py). edged's time includes the local pipeline deciding it has no answer
(embeddings), building the working memory, redaction, the budget bookkeeping in the journal,
the HTTP call, and the reply through the journal and MQTT. The direct call replays the exact
body the server received from edged (taken from its request log), so both generate the same
answer. Also: the time to answer locally with a note while the cloud is down.

    .venv/bin/python bench/escalation.py [--n 20] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._runner import ROOT, Bench, Timing  # noqa: E402
from tests.cloud_server import CloudServer  # noqa: E402
from tests.harness import Broker, DaemonProcess, Peer, write_config  # noqa: E402

REPLY = "edged/out/bench/escalation"  # in the device's own reply space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    import httpx

    bench = Bench("escalation")
    bench.param(n=args.n, max_tokens=args.max_tokens, cloud="llama_cpp.server app, SmolLM2-135M")
    work = Path(tempfile.mkdtemp(prefix="edged-bench-esc-"))
    cloud = CloudServer(work / "cloud")
    broker = Broker().start()
    daemon = None
    try:
        extra = f"""
[models.small]
backend = "llama_cpp"
path = "bundled:smollm2-135m"
threads = 1

[agents.house]
model = "small"
description = "Controls lights and heating."
tools = ["home.*"]
memory = false

[router]
default_agent = "house"

[plugins]
dirs = ["{ROOT / 'plugins'}"]

[cloud]
enabled = true
base_url = "{cloud.base_url}"
model = "cloud-model"
escalate_below = 0.0
max_tokens = {args.max_tokens}
tools = false
daily_requests = 100000
retry_min_s = 0.2
retry_max_s = 1.0
"""
        cfg = write_config(work / "edged.toml", broker, db=work / "edged.db", extra=extra)
        daemon = DaemonProcess(cfg, work).start(timeout=120)
        peer = Peer(broker.port).connect()
        peer.subscribe(REPLY)

        def ask(i: int, tag: str) -> tuple[dict, float]:
            rid = f"{tag}-{i}"
            t0 = time.perf_counter()
            peer.publish("edged/in/bench", json.dumps({"id": rid, "text": f"write a poem "
                                                       f"about the sea, take {i}"}),
                         response_topic=REPLY)
            [m] = peer.wait_count(1, 120, lambda m: json.loads(m.payload).get("id") == rid)
            return json.loads(m.payload), time.perf_counter() - t0

        # the cloud down: the local answer with a note
        down = [ask(i, "down")[1] for i in range(3)]
        bench.record_timing("local answer + note, cloud down", Timing.of(down))
        cloud.start()
        # back online once the probe sees it: the queued ones come as follow-ups
        peer.wait_count(3, 120, lambda m: json.loads(m.payload).get("followup") is True)
        ask(0, "warm")
        edged_t, direct_t = [], []
        client = httpx.Client(timeout=120)
        for i in range(args.n):
            reply, dt = ask(i, "up")
            assert reply["escalated"], reply
            edged_t.append(dt)
            body = cloud.requests("/chat/completions")[-1]["body"]
            t0 = time.perf_counter()
            r = client.post(f"{cloud.base_url}/chat/completions", json=body)
            r.raise_for_status()
            direct_t.append(time.perf_counter() - t0)
        direct = Timing.of(direct_t)
        bench.record_timing("direct POST /chat/completions (same body)", direct)
        bench.record_timing("edged: request -> escalated reply over MQTT", Timing.of(edged_t),
                            baseline=direct, baseline_name="direct")
        bench.record("edged overhead p50", (Timing.of(edged_t).p50 - direct.p50) * 1e3, "ms")
        peer.close()
    finally:
        if daemon is not None:
            daemon.terminate()
        cloud.kill()
        broker.stop()
    bench.finish()


if __name__ == "__main__":
    main()
