"""Soak: mixed load for N minutes with broker restarts; lost messages and RSS growth.

A daemon process (echo agent, a sink route, the house tools off so that the load is the
delivery spine itself) takes a steady mix from several device peers: JSON requests that need
a reply, sink telemetry, and some bad input (which gets an error reply). Every
``--restart-every`` seconds the broker is restarted (SIGTERM, then SIGKILL every third time).
At the end the peers wait for the backlog to drain and count:

- lost: requests sent (PUBACKed by the broker) without a reply (target 0);
- duplicates: replies beyond one per request id;
- RSS of the daemon, sampled every 5 s; growth after the warm-up (first 20% of the run) as
  % per hour from a least-squares line (target < 5%/h).

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 50] [--restart-every 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._runner import Bench  # noqa: E402
from tests.harness import Broker, DaemonProcess, Peer, write_config  # noqa: E402


def slope_pct_per_hour(samples: list[tuple[float, float]]) -> float:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second in all")
    ap.add_argument("--restart-every", type=float, default=60.0)
    args = ap.parse_args()
    import psutil

    bench = Bench("soak")
    bench.param(minutes=args.minutes, rate=args.rate, restart_every_s=args.restart_every)
    work = Path(tempfile.mkdtemp(prefix="edged-soak-"))
    broker = Broker().start()
    cfg = write_config(work / "edged.toml", broker, db=work / "edged.db",
                       extra='[[routes]]\ntopic = "sensors/#"\nagent = "sink"\n')
    daemon = DaemonProcess(cfg, work).start(timeout=60)
    proc = psutil.Process(daemon.pid)
    replies = Peer(broker.port, client_id="soak-replies", persistent=True).connect()
    replies.subscribe("edged/out/+")
    sender = Peer(broker.port, client_id="soak-sender").connect()
    sent: list[str] = []
    rss: list[tuple[float, float]] = []
    restarts = 0
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    next_restart = t0 + args.restart_every
    next_sample = t0
    i = 0
    stop = threading.Event()
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                rss.append((now - t0, proc.memory_info().rss))
                next_sample = now + 5
            if now >= next_restart:
                restarts += 1
                broker.restart(hard=restarts % 3 == 0)
                sender.connected.wait(30)
                next_restart = time.monotonic() + args.restart_every
            kind = i % 10
            try:
                if kind < 6:
                    rid = f"s{i}"
                    sender.publish(f"edged/in/dev{i % 7}", json.dumps({"id": rid, "text": "hi"}),
                                   wait=True)
                    sent.append(rid)
                elif kind < 9:
                    sender.publish(f"sensors/dev{i % 7}/temp", json.dumps({"t": i}), wait=True)
                else:
                    rid = f"b{i}"
                    sender.publish(f"edged/in/dev{i % 7}", b"\xff\xfe" + rid.encode(),
                                   wait=True)
            except (RuntimeError, ValueError, OSError):
                continue  # not PUBACKed while the broker restarted: not counted as sent
            i += 1
            time.sleep(max(0.0, 1 / args.rate - (time.monotonic() - now)))
        # drain: every counted request must get its reply
        want = set(sent)
        deadline = time.monotonic() + 120
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
        warm = [s for s in rss if s[0] >= 0.2 * args.minutes * 60]
        bench.record("requests sent (PUBACKed)", len(want), "msgs")
        bench.record("lost (no reply)", lost, "msgs")
        bench.record("duplicate replies", dups, "msgs")
        bench.record("broker restarts", restarts, "")
        bench.record("RSS at end", rss[-1][1] / 2**20 if rss else 0, "MB")
        bench.record("RSS growth after warm-up", slope_pct_per_hour(warm), "%/h")
    finally:
        stop.set()
        sender.close()
        replies.close()
        daemon.terminate()
        broker.stop()
    bench.finish()


if __name__ == "__main__":
    main()
