"""Startup cost: how long the ``edged`` command takes to start, and how long config loading takes.

(a) Wall time of ``python -m edged --version`` and ``python -m edged check-config -c
    config.example.toml``, each the median of N runs, against ``python -c pass`` measured in the
    same rounds (runs are interleaved), so the ratio is what edged adds to a bare interpreter.
(b) ``edged.config.load("config.example.toml")`` in-process, against ``tomllib`` parsing the same
    file alone (the ratio is the cost of typed decoding and validation).

Run: .venv/bin/python bench/startup.py [--runs 15] [--loads 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runner import ROOT, Bench, time_call, time_commands  # noqa: E402

EXAMPLE = ROOT / "config.example.toml"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="runs of each command")
    ap.add_argument("--loads", type=int, default=2000, help="in-process config loads")
    args = ap.parse_args()

    bench = Bench("startup")
    py = sys.executable
    # The config must not be picked up from the environment by accident.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    bench.param(runs=args.runs, loads=args.loads, config=str(EXAMPLE.relative_to(ROOT)))

    # (a) CLI start time
    cmds = {
        "python -c pass": [py, "-c", "pass"],
        "python -c 'import edged.cli'": [py, "-c", "import edged.cli"],
        "edged --version": [py, "-m", "edged", "--version"],
        "edged check-config": [py, "-m", "edged", "check-config", "-c", str(EXAMPLE)],
    }
    t = time_commands(cmds, args.runs, warmup=2, env=env)
    base = t["python -c pass"]
    bench.record_timing("python -c pass", base)
    for name in list(cmds)[1:]:
        bench.record_timing(name, t[name], baseline=base, baseline_name="python -c pass")

    # (b) config load in-process
    from edged import config

    data = EXAMPLE.read_bytes()
    parse = time_call(lambda: tomllib.loads(data.decode()), args.loads, warmup=50)
    load = time_call(lambda: config.load(EXAMPLE), args.loads, warmup=50)
    bench.record_timing("tomllib.loads(example)", parse, unit="us")
    bench.record_timing("config.load(example)", load, unit="us", baseline=parse,
                        baseline_name="tomllib")
    bench.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
