"""Where a request's time goes: latency percentiles per pipeline stage, house assistant.

The daemon runs the house assistant as it ships (example plugins, SmolLM2-135M through
llama.cpp with one thread, MiniLM embeddings, memory). A device peer sends the agent-eval
commands one at a time (``--rounds`` passes) and times each reply; at the end the daemon's
own stage quantiles are read from its ``/metrics`` (``edged_stage_recent_seconds``, exact
over the last 2048 observations of each stage):

    ingest   bus receive -> journaled and acked
    queue    journaled -> claimed by a worker
    route    the agent classifier (requests without an agent or route)
    agent    the agent, of which: memory (turns, recall), tool (each call), model (each
             generation, waiting and loading included)
    commit   reply + done in one transaction
    publish  PUBLISH -> PUBACK of each outgoing message

The baseline is the agent stage itself: client-side request -> reply p50 against the agent's
p50 is what the durable delivery spine adds around the work. ``bench/chart.py`` draws it.

    .venv/bin/python bench/stages.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._runner import ROOT, Bench, Timing  # noqa: E402
from bench.soak import HOUSE, stage_quantiles  # noqa: E402
from tests.harness import Broker, DaemonProcess, Peer, free_port, write_config  # noqa: E402

CASES = ROOT / "tests" / "data" / "agent_eval.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="passes over the eval commands")
    args = ap.parse_args()
    cases = [json.loads(ln) for ln in CASES.read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    bench = Bench("stages")
    bench.param(rounds=args.rounds, cases=len(cases), model="bundled:smollm2-135m", threads=1)
    work = Path(tempfile.mkdtemp(prefix="edged-stages-"))
    (work / "state").mkdir()
    broker = Broker().start()
    mport = free_port()
    cfg = write_config(work / "edged.toml", broker, db=work / "state" / "edged.db",
                       delivery="rate_per_s = 0",
                       extra=HOUSE.format(idle_unload=0, metrics_port=mport,
                                          plugins=json.dumps(str(ROOT / "plugins"))))
    daemon = DaemonProcess(cfg, work).start(timeout=120)
    p = Peer(broker.port, client_id="stages").connect()
    p.subscribe("edged/out/+")
    samples: list[float] = []
    try:
        n = 0
        # warm-up: a few commands load the model and the caches (they stay in the daemon's
        # windows: 5 of several hundred observations)
        for r, batch in [(0, cases[:5])] + [(r, cases) for r in range(1, args.rounds + 1)]:
            for case in batch:
                rid = f"q{n}"
                n += 1
                t0 = time.perf_counter()
                p.publish(f"edged/in/{case['device']}",
                          json.dumps({"id": rid, "text": case["text"],
                                      "session": f"stages-{r}-{case['device']}"}), wait=False)
                p.wait_count(n, 120)
                if r > 0:
                    samples.append(time.perf_counter() - t0)
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as resp:
            stages = stage_quantiles(resp.read().decode())
        status = subprocess.run([sys.executable, "-m", "edged", "status", "-c", str(cfg)],
                                capture_output=True, text=True, timeout=30).stdout
    finally:
        p.close()
        daemon.terminate()
        broker.cleanup()
    e2e = Timing.of(samples)
    agent = stages.get("agent", {})
    bench.record_timing("request -> reply (client)", e2e,
                        baseline=Timing.of([agent.get("p50", 0) / 1e3] * 2) if agent else None,
                        baseline_name="agent stage p50")
    for stage, q in stages.items():
        bench.record(f"stage {stage} p50", q["p50"], "ms", p95=q["p95"], p99=q["p99"])
    e2e_ms = {f"p{k}": v * 1e3 for k, v in
              (("50", e2e.p50), ("95", e2e.p95), ("99", _p99(e2e.samples)))}
    bench.param(stages_ms=stages, end_to_end_ms=e2e_ms, status=status)
    bench.finish()
    print("\n$ edged status\n" + status)


def _p99(xs: list[float]) -> float:
    from bench._runner import percentile

    return percentile(sorted(xs), 99)


if __name__ == "__main__":
    main()
