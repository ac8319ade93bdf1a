"""Shared benchmark runner (stdlib only).

A benchmark script creates a :class:`Bench`, records named results (optionally against a
baseline measured in the same run, giving a ratio), then calls :meth:`Bench.finish`, which
prints an aligned table to stdout and writes ``bench/results/<name>.json`` with machine info::

    bench = Bench("startup")
    t = time_call(lambda: do_something(), n=100)
    bench.record("do_something p50", t.p50 * 1e3, "ms")
    bench.finish()
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


@dataclass(frozen=True)
class Timing:
    """Wall-clock statistics of N calls, in seconds."""

    n: int
    p50: float
    p95: float
    mean: float
    min: float
    max: float
    samples: list[float] = field(repr=False)

    @classmethod
    def of(cls, samples: Sequence[float]) -> Timing:
        if not samples:
            raise ValueError("no samples")
        s = sorted(samples)
        return cls(n=len(s), p50=statistics.median(s), p95=percentile(s, 95),
                   mean=statistics.fmean(s), min=s[0], max=s[-1], samples=list(samples))


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of already sorted samples (q in 0..100)."""
    if not sorted_samples:
        raise ValueError("no samples")
    if len(sorted_samples) == 1:
        return float(sorted_samples[0])
    pos = (len(sorted_samples) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_samples) - 1)
    return float(sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * (pos - lo))


def time_call(fn: Callable[[], Any], n: int, *, warmup: int = 1) -> Timing:
    """Call ``fn`` ``warmup`` times unmeasured, then ``n`` times, each timed on its own."""
    if n < 1:
        raise ValueError("n must be >= 1")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return Timing.of(samples)


def time_command(argv: Sequence[str], n: int, *, warmup: int = 1, cwd: Path | str = ROOT,
                 env: dict[str, str] | None = None) -> Timing:
    """Wall time of running a command to completion; a non-zero exit is an error."""
    return time_call(_command_runner(argv, cwd, env), n, warmup=warmup)


def time_commands(commands: dict[str, Sequence[str]], n: int, *, warmup: int = 1,
                  cwd: Path | str = ROOT, env: dict[str, str] | None = None) -> dict[str, Timing]:
    """Like :func:`time_command` for several commands, interleaved round by round so that
    drift on the machine (thermal, other load) affects each of them alike."""
    runs = {name: _command_runner(argv, cwd, env) for name, argv in commands.items()}
    for _ in range(warmup):
        for run in runs.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(n):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - t0)
    return {name: Timing.of(s) for name, s in samples.items()}


def _command_runner(argv: Sequence[str], cwd: Path | str,
                    env: dict[str, str] | None) -> Callable[[], None]:
    def run() -> None:
        r = subprocess.run(list(argv), cwd=str(cwd), env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: "
                               f"{r.stderr.decode(errors='replace').strip()}")
    return run


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
    }
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return info


@dataclass
class Result:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    ratio: float | None = None  # value / baseline
    extra: dict[str, Any] = field(default_factory=dict)


class Bench:
    """Collects results of one benchmark script; :meth:`finish` prints and saves them."""

    def __init__(self, name: str, *, results_dir: Path = RESULTS_DIR) -> None:
        self.name = name
        self.results_dir = results_dir
        self.results: list[Result] = []
        self.params: dict[str, Any] = {}
        self.started = time.perf_counter()

    def param(self, **kw: Any) -> None:
        """Record parameters of the run (iterations, files used...) in the JSON."""
        self.params.update(kw)

    def record(self, name: str, value: float, unit: str, *, baseline: float | None = None,
               baseline_name: str | None = None, **extra: Any) -> Result:
        ratio = value / baseline if baseline else None
        r = Result(name, float(value), unit, baseline, baseline_name, ratio, extra)
        self.results.append(r)
        return r

    def record_timing(self, name: str, t: Timing, *, unit: str = "ms",
                      baseline: Timing | None = None, baseline_name: str | None = None) -> Result:
        """Record the p50 of a :class:`Timing` (p95/mean/min/max go to the JSON)."""
        scale = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]
        return self.record(
            name, t.p50 * scale, unit,
            baseline=baseline.p50 * scale if baseline else None, baseline_name=baseline_name,
            stat="p50", n=t.n, p95=t.p95 * scale, mean=t.mean * scale, min=t.min * scale,
            max=t.max * scale,
        )

    def table(self) -> str:
        head = ("result", "value", "unit", "p95", "baseline", "ratio")
        rows = [head]
        for r in self.results:
            p95 = r.extra.get("p95")
            rows.append((
                r.name, _fmt(r.value), r.unit, _fmt(p95) if p95 is not None else "",
                f"{_fmt(r.baseline)} ({r.baseline_name})" if r.baseline is not None else "",
                f"{r.ratio:.2f}x" if r.ratio is not None else "",
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        right = {1, 3, 5}
        lines = []
        for j, row in enumerate(rows):
            cells = [c.rjust(w) if i in right else c.ljust(w)
                     for i, (c, w) in enumerate(zip(row, widths, strict=True))]
            lines.append("  ".join(cells).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "bench": self.name,
            "machine": machine_info(),
            "params": self.params,
            "duration_s": round(time.perf_counter() - self.started, 3),
            "results": [asdict(r) for r in self.results],
        }

    def finish(self) -> Path:
        print(f"== {self.name} ==")
        print(self.table())
        self.results_dir.mkdir(parents=True, exist_ok=True)
        out = self.results_dir / f"{self.name}.json"
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, out)
        print(f"results: {out}")
        return out


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"
