"""Soak: mixed load for N minutes with broker restarts; lost messages and RSS growth.

A daemon process runs the house assistant as it ships (the example plugins, SmolLM2-135M
through llama.cpp, MiniLM embeddings, long-term memory with consolidation every minute) next
to the built-in echo agent and a sink route. Several device peers send a steady mix:

- house requests (the agent-eval commands: lights, heating, locks, notes, timers, memory),
  which run tools, write the journal's step log and the memory database;
- echo requests (the delivery spine alone), sink telemetry, and a hostile mix (not UTF-8,
  a spoofed device with a foreign reply topic, another device's reply topic, the admin agent
  from a plain device, an envelope priority of 9, a 256 KiB payload, an empty device id),
  which gets error replies and dead letters; nothing may be published on the foreign topics
  (watched) and the daemon must not crash.

Every ``--restart-every`` seconds the broker is restarted (SIGTERM, then SIGKILL every third
time); ``--idle-unload`` makes the model unload when idle and load again on the next use. At
the end the peers wait for the backlog to drain and count:

- lost: requests sent (PUBACKed by the broker) without a reply (target 0);
- duplicates: replies beyond one per request id;
- RSS of the daemon, sampled every 5 s with whether a model was loaded; growth after the
  warm-up (first 20% of the run) as % per hour from a least-squares line (target < 5%/h),
  also for the samples with and without the model loaded on their own (a loaded model adds
  ~120 MB, so a load late in the run is not a leak);
- the daemon's own per-stage latency quantiles at the end (its /metrics summary);
- stalls: 5-second samples in which requests were sent but no reply came for 60 s (a hung
  event loop; an earlier version hung on a full NOTIFY_SOCKET queue), target 0.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 40] [--restart-every 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._runner import ROOT, Bench  # noqa: E402
from tests.harness import Broker, DaemonProcess, Peer, free_port, write_config  # noqa: E402

CASES = ROOT / "tests" / "data" / "agent_eval.jsonl"

HOUSE = """
[models.small]
backend = "llama_cpp"
path = "bundled:smollm2-135m"
context = 1024
threads = 1

[resources]
idle_unload_s = {idle_unload}

[agents.house]
model = "small"
description = "Controls lights, heating, locks, notes and timers, and tells the time."
tools = ["home.*", "notes.*", "locks.*", "timers.*", "clock.*", "system.*", "gateway.*",
         "memory.*"]

[router]
default_agent = "house"

[plugins]
dirs = [{plugins}]

[memory]
embedder = "bundled:minilm-l6-int8"
consolidate_every_s = 60

[metrics]
enabled = true
listen = "127.0.0.1:{metrics_port}"

[[routes]]
topic = "sensors/#"
agent = "sink"
"""



def _hostile(kind: str) -> object:
    def make(i: int) -> tuple[str, bytes]:
        dev = f"dev{i % 7}"
        body: dict[str, object] = {"id": f"x{i}", "text": "unlock the front door"}
        if kind == "utf8":
            return f"edged/in/{dev}", b"\xff\xfe" + f"b{i}".encode()
        if kind == "spoof":
            body.update(device="dad-phone", reply_to="zigbee2mqtt/bridge/request/permit_join")
        elif kind == "victim":
            body.update(reply_to="edged/out/victim", agent="echo")
        elif kind == "admin":
            body.update(agent="models", data={"action": "unload", "model": "small"})
        elif kind == "priority":
            body.update(priority=9, agent="echo")
        elif kind == "big":
            body.update(text="x" * (256 << 10))
        elif kind == "nodevice":
            return "edged/in/", json.dumps(body).encode()
        return f"edged/in/{dev}", json.dumps(body).encode()
    return make


HOSTILE = [_hostile(k) for k in ("utf8", "spoof", "victim", "admin", "priority", "big",
                                 "nodevice")]

def slope_pct_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares growth of ``(seconds, bytes)`` samples as % of their mean per hour."""
    n = len(samples)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    b = sum((t - mx) * (v - my) for t, v in samples) / var  # bytes per second
    return b * 3600 / my * 100


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text: str, name: str, default: float = 0.0) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return default


def stage_quantiles(text: str) -> dict[str, dict[str, float]]:
    """``edged_stage_recent_seconds{quantile="0.5",stage="agent"} 0.01`` -> ms by stage."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line.startswith("edged_stage_recent_seconds{quantile="):
            continue
        labels, value = line.rsplit(" ", 1)
        q = labels.split('quantile="', 1)[1].split('"', 1)[0]
        stage = labels.split('stage="', 1)[1].split('"', 1)[0]
        out.setdefault(stage, {})[f"p{round(float(q) * 100)}"] = float(value) * 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=40.0, help="messages per second in all")
    ap.add_argument("--restart-every", type=float, default=60.0)
    ap.add_argument("--idle-unload", type=int, default=120,
                    help="model idle unload, seconds (0: never)")
    args = ap.parse_args()
    import psutil

    cases = [json.loads(ln) for ln in CASES.read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    bench = Bench("soak")
    bench.param(minutes=args.minutes, rate=args.rate, restart_every_s=args.restart_every,
                idle_unload_s=args.idle_unload, house_cases=len(cases),
                mix="per 20: 4 house, 10 echo, 5 sink telemetry, 1 bad payload")
    work = Path(tempfile.mkdtemp(prefix="edged-soak-"))
    (work / "state").mkdir()
    broker = Broker().start()
    mport = free_port()
    cfg = write_config(work / "edged.toml", broker, db=work / "state" / "edged.db",
                       extra=HOUSE.format(idle_unload=args.idle_unload, metrics_port=mport,
                                          plugins=json.dumps(str(ROOT / "plugins"))))
    daemon = DaemonProcess(cfg, work).start(timeout=120)
    proc = psutil.Process(daemon.pid)
    replies = Peer(broker.port, client_id="soak-replies", persistent=True).connect()
    replies.subscribe("edged/out/+")
    # where a hostile device tries to make edged publish: nothing may ever arrive there
    watch = Peer(broker.port, client_id="soak-watch", persistent=True).connect()
    watch.subscribe("zigbee2mqtt/#", "edged/out/victim/#", "edged/out/victim")
    sender = Peer(broker.port, client_id="soak-sender").connect()
    sent: list[str] = []
    rss: list[tuple[float, float, bool]] = []  # (s since start, bytes, a model loaded)
    replied, last_progress, stalls = 0, time.monotonic(), 0
    restarts = 0
    kinds = {"house": 0, "echo": 0, "sink": 0, "bad": 0}
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    next_restart = t0 + args.restart_every
    next_sample = t0
    i = 0
    text = ""
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                loaded = False
                try:
                    loaded = metric(scrape(mport), 'edged_model_loaded{model="small"}') > 0
                except OSError:
                    pass
                rss.append((now - t0, proc.memory_info().rss, loaded))
                next_sample = now + 5
                n_replies = len(replies.messages)
                if n_replies > replied:
                    replied, last_progress = n_replies, now
                elif now - last_progress > 60:
                    stalls += 1
                    print(f"STALL: no reply for {now - last_progress:.0f} s at "
                          f"{(now - t0) / 60:.1f} min; daemon log:\n{daemon.tail(5)}",
                          flush=True)
            if now >= next_restart:
                restarts += 1
                broker.restart(hard=restarts % 3 == 0)
                sender.connected.wait(30)
                next_restart = time.monotonic() + args.restart_every
            slot = i % 20
            try:
                if slot in (0, 5, 10, 15):
                    case = cases[(i // 5) % len(cases)]
                    rid = f"h{i}"
                    body = {"id": rid, "text": case["text"], "session": f"soak-{case['device']}"}
                    sender.publish(f"edged/in/{case['device']}", json.dumps(body), wait=True)
                    sent.append(rid)
                    kind = "house"
                elif slot < 15:
                    rid = f"s{i}"
                    sender.publish(f"edged/in/dev{i % 7}",
                                   json.dumps({"id": rid, "text": "hi", "agent": "echo"}),
                                   wait=True)
                    sent.append(rid)
                    kind = "echo"
                elif slot < 19:
                    sender.publish(f"sensors/dev{i % 7}/temp", json.dumps({"t": i}), wait=True)
                    kind = "sink"
                else:
                    topic, payload = HOSTILE[(i // 20) % len(HOSTILE)](i)
                    sender.publish(topic, payload, wait=True)
                    kind = "bad"
            except (RuntimeError, ValueError, OSError):
                continue  # not PUBACKed while the broker restarted: not counted as sent
            kinds[kind] += 1
            i += 1
            time.sleep(max(0.0, 1 / args.rate - (time.monotonic() - now)))
        # drain: every counted request must get its reply
        want = set(sent)
        deadline = time.monotonic() + 180
        got: dict[str, int] = {}
        while time.monotonic() < deadline:
            got = {}
            for m in replies.wait_count(0, 1):
                try:
                    rid = json.loads(m.payload).get("id")
                except ValueError:
                    continue
                if rid in want:
                    got[rid] = got.get(rid, 0) + 1
            if len(got) == len(want):
                break
            time.sleep(1)
        lost = len(want) - len(got)
        dups = sum(c - 1 for c in got.values())
        try:
            text = scrape(mport)
        except OSError:
            text = ""
        warm_from = 0.2 * args.minutes * 60
        warm = [(t, v) for t, v, _ in rss if t >= warm_from]
        with_model = [(t, v) for t, v, m in rss if t >= warm_from and m]
        without = [(t, v) for t, v, m in rss if t >= warm_from and not m]
        bench.record("requests sent (PUBACKed)", len(want), "msgs", **kinds)
        bench.record("lost (no reply)", lost, "msgs")
        bench.record("duplicate replies", dups, "msgs")
        bench.record("hostile publishes that leaked (foreign reply topics)",
                     len(watch.messages), "msgs")
        bench.record("daemon crashed", 0 if daemon.proc and daemon.proc.poll() is None else 1,
                     "")
        bench.record("broker restarts", restarts, "")
        bench.record("stalls (60 s without a reply)", stalls, "samples")
        bench.record("model loads", metric(text, "edged_model_loads_total"), "")
        bench.record("tool calls", metric(text, 'edged_tool_calls_total{outcome="calls"}'), "")
        bench.record("memories at end", metric(text, "edged_memories"), "")
        bench.record("RSS at end", rss[-1][1] / 2**20 if rss else 0, "MB")
        bench.record("RSS max", max(v for _, v, _ in rss) / 2**20 if rss else 0, "MB")
        bench.record("RSS growth after warm-up", slope_pct_per_hour(warm), "%/h",
                     samples=len(warm))
        for name, part in (("model loaded", with_model), ("no model loaded", without)):
            span = part[-1][0] - part[0][0] if len(part) > 1 else 0
            if len(part) >= 10 and span >= 0.25 * (args.minutes * 60 - warm_from):
                bench.record(f"RSS growth after warm-up, {name}", slope_pct_per_hour(part),
                             "%/h", samples=len(part))
        stages = stage_quantiles(text)
        bench.param(rss_series=[(round(t, 1), round(v / 2**20, 2), m) for t, v, m in rss],
                    stages_ms=stages)
    finally:
        sender.close()
        replies.close()
        daemon.terminate()
        broker.stop()
    bench.finish()
    if stages:
        print("daemon stage latency at the end (ms, last 2048 each): " + ", ".join(
            f"{s} p50 {q['p50']:.2f} p95 {q['p95']:.2f}" for s, q in stages.items()))


if __name__ == "__main__":
    main()
