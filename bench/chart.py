"""Draw benchmark results as SVG charts for the README (stdlib only, no plotting library).

    .venv/bin/python bench/chart.py            # reads bench/results/{stages,soak}.json

- ``docs/charts/stages.svg``: p50 / p95 / p99 per pipeline stage and end to end, log scale
  (stages range from microseconds to a model generation), from ``bench/stages.py``;
- ``docs/charts/soak-rss.svg``: the daemon's RSS over the soak, with the warm-up, broker
  restarts and the least-squares line of the growth after warm-up, from ``bench/soak.py``.

Every bar and point carries its value as a tooltip (``<title>``), and each chart names the
command and the run it was drawn from.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._runner import RESULTS_DIR, ROOT  # noqa: E402

OUT = ROOT / "docs" / "charts"
COLORS = {"p50": "#2b6cb0", "p95": "#dd8a2f", "p99": "#c53030"}
FONT = 'font-family="system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif"'
STAGE_HELP = {
    "ingest": "receive -> journaled + acked",
    "queue": "journaled -> claimed",
    "route": "agent classifier",
    "agent": "the agent, of which:",
    "memory": "  memory (turns, recall)",
    "tool": "  a tool call",
    "model": "  a generation (wait + load incl.)",
    "commit": "reply + done, one transaction",
    "publish": "PUBLISH -> PUBACK",
    "end to end": "device: request -> reply",
}


class Svg:
    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.parts: list[str] = [
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>']

    def text(self, x: float, y: float, s: str, *, size: int = 12, anchor: str = "start",
             color: str = "#1a202c", weight: str = "normal") -> None:
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" {FONT} '
                          f'text-anchor="{anchor}" fill="{color}" font-weight="{weight}">'
                          f'{escape(s)}</text>')

    def line(self, x1: float, y1: float, x2: float, y2: float, *, color: str = "#cbd5e0",
             width: float = 1, dash: str = "") -> None:
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                          f'stroke="{color}" stroke-width="{width}"{d}/>')

    def rect(self, x: float, y: float, w: float, h: float, color: str, tip: str = "",
             opacity: float = 1.0) -> None:
        t = f"<title>{escape(tip)}</title>" if tip else ""
        self.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.5):.1f}" '
                          f'height="{h:.1f}" fill="{color}" fill-opacity="{opacity}">{t}</rect>')

    def polyline(self, pts: list[tuple[float, float]], color: str, width: float = 1.5) -> None:
        p = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        self.parts.append(f'<polyline points="{p}" fill="none" stroke="{color}" '
                          f'stroke-width="{width}"/>')

    def dot(self, x: float, y: float, color: str, tip: str) -> None:
        self.parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{color}">'
                          f'<title>{escape(tip)}</title></circle>')

    def render(self) -> str:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
                f'viewBox="0 0 {self.w} {self.h}">\n' + "\n".join(self.parts) + "\n</svg>\n")


def _fmt_ms(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:.3g} s"
    if v >= 100:
        return f"{v:.0f} ms"
    if v >= 1:
        return f"{v:.1f} ms"
    return f"{v * 1000:.0f} us" if v < 0.1 else f"{v:.2f} ms"


def stages_chart(res: dict[str, Any]) -> str:
    stages: dict[str, dict[str, float]] = dict(res["params"]["stages_ms"])
    e2e = res["params"].get("end_to_end_ms")
    if e2e:
        stages["end to end"] = e2e
    names = list(stages)
    left, right, top, row = 330, 80, 58, 34
    width = 900
    height = top + row * len(names) + 56
    svg = Svg(width, height)
    m = res.get("machine", {})
    svg.text(16, 24, "Where a request's time goes: p50 / p95 / p99 per stage (log scale)",
             size=15, weight="bold")
    svg.text(16, 43, f"bench/stages.py, house assistant (SmolLM2-135M, 1 thread), "
             f"{res['params'].get('rounds')} x {res['params'].get('cases')} commands; "
             f"{m.get('cpu_count')} cores {m.get('machine')}, "
             f"{m.get('timestamp', '')[:10]}", size=11, color="#4a5568")
    vals = [v for q in stages.values() for k, v in q.items() if k.startswith("p") and v > 0]
    lo = 10 ** math.floor(math.log10(max(min(vals), 1e-3)))
    hi = 10 ** math.ceil(math.log10(max(vals)))
    plot_w = width - left - right

    def x(v: float) -> float:
        v = max(v, lo)
        return left + (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) \
            * plot_w

    bottom = top + row * len(names)
    decade = lo
    while decade <= hi * 1.0001:
        svg.line(x(decade), top - 4, x(decade), bottom, color="#e2e8f0")
        svg.text(x(decade), bottom + 16, _fmt_ms(decade), size=11, anchor="middle",
                 color="#4a5568")
        decade *= 10
    for i, name in enumerate(names):
        y = top + i * row
        q = stages[name]
        label_color = "#1a202c" if not STAGE_HELP.get(name, "").startswith("  ") else "#4a5568"
        svg.text(16, y + 15, name, size=12, weight="bold", color=label_color)
        svg.text(92, y + 15, STAGE_HELP.get(name, "").strip(), size=11, color="#4a5568")
        for j, key in enumerate(("p50", "p95", "p99")):
            v = q.get(key)
            if v is None:
                continue
            svg.rect(left, y + 3 + j * 9, x(v) - left, 8, COLORS[key],
                     tip=f"{name} {key} {_fmt_ms(v)}")
        svg.text(x(q.get("p99", q["p50"])) + 6, y + 18, _fmt_ms(q["p50"]), size=11,
                 color="#2d3748")
        if name == "end to end":
            svg.line(16, y - 2, width - right, y - 2, color="#a0aec0")
    for j, key in enumerate(("p50", "p95", "p99")):
        svg.rect(left + j * 80, height - 22, 12, 10, COLORS[key])
        svg.text(left + j * 80 + 17, height - 13, key, size=11)
    svg.text(width - right, height - 13, "label: p50", size=11, anchor="end",
             color="#4a5568")
    return svg.render()


def soak_chart(res: dict[str, Any]) -> str:
    series = [(t / 60, mb, bool(m)) for t, mb, m in res["params"]["rss_series"]]
    minutes = float(res["params"]["minutes"])
    restart_every = float(res["params"].get("restart_every_s", 60)) / 60
    results = {r["name"]: r for r in res["results"]}
    width, height = 900, 380
    left, right, top, bottom = 70, 30, 78, 60
    svg = Svg(width, height)
    m = res.get("machine", {})
    growth = results.get("RSS growth after warm-up", {}).get("value")
    lost = results.get("lost (no reply)", {}).get("value")
    sent = results.get("requests sent (PUBACKed)", {}).get("value")
    svg.text(16, 24, f"Daemon RSS over a {minutes:g}-minute soak: "
             f"{sent:.0f} requests, {lost:.0f} lost, growth after warm-up "
             f"{growth:+.1f} %/h", size=15, weight="bold")
    svg.text(16, 43, f"bench/soak.py --minutes {minutes:g}: house assistant (model, tools, "
             f"memory) + echo + telemetry + bad input at {res['params'].get('rate'):g} msg/s,",
             size=11, color="#4a5568")
    svg.text(16, 58, f"broker restarted every {restart_every:g} min; {m.get('cpu_count')} "
             f"cores {m.get('machine')}, {m.get('timestamp', '')[:10]}; RSS sampled every 5 s",
             size=11, color="#4a5568")
    ys = [mb for _, mb, _ in series]
    y_lo = 0.0
    y_hi = max(ys) * 1.15
    step = 10 ** math.floor(math.log10(y_hi / 4))
    step *= 5 if y_hi / step > 20 else 2 if y_hi / step > 8 else 1
    pw, ph = width - left - right, height - top - bottom

    def px(t: float) -> float:
        return left + t / minutes * pw

    def py(v: float) -> float:
        return top + ph - (v - y_lo) / (y_hi - y_lo) * ph

    warm = 0.2 * minutes
    svg.rect(px(0), top, px(warm) - px(0), ph, "#edf2f7")
    svg.text(px(warm / 2), top + 26, "warm-up", size=11, anchor="middle", color="#718096")
    v = 0.0
    while v <= y_hi:
        svg.line(left, py(v), width - right, py(v), color="#e2e8f0")
        svg.text(left - 6, py(v) + 4, f"{v:g}", size=11, anchor="end", color="#4a5568")
        v += step
    svg.text(18, top + ph / 2, "MB", size=11, color="#4a5568")
    t_step = 5 if minutes > 20 else 1
    t = 0.0
    while t <= minutes + 1e-9:
        svg.text(px(t), top + ph + 16, f"{t:g}", size=11, anchor="middle", color="#4a5568")
        t += t_step
    svg.text(left + pw / 2, top + ph + 34, "minutes", size=11, anchor="middle",
             color="#4a5568")
    r = restart_every
    while r < minutes:
        svg.line(px(r), top + ph - 8, px(r), top + ph, color="#a0aec0")
        r += restart_every
    svg.polyline([(px(t), py(mb)) for t, mb, _ in series], "#2b6cb0")
    for t, mb, loaded in series[:: max(1, len(series) // 120)]:
        svg.dot(px(t), py(mb), "#2b6cb0", f"{t:.1f} min: {mb:.1f} MB"
                + (" (model loaded)" if loaded else ""))
    fit = [(t, mb) for t, mb, _ in series if t >= warm]
    if len(fit) >= 2:
        n = len(fit)
        mx = sum(t for t, _ in fit) / n
        my = sum(v for _, v in fit) / n
        var = sum((t - mx) ** 2 for t, _ in fit)
        b = sum((t - mx) * (v - my) for t, v in fit) / var if var else 0.0
        a = my - b * mx
        t_end = fit[-1][0]
        svg.line(px(warm), py(a + b * warm), px(t_end), py(a + b * t_end),
                 color="#c53030", width=1.5, dash="6 4")
        svg.text(width - right - 4, top + 14, f"least squares after warm-up: {b * 60:+.2f} "
                 f"MB/h", size=11, anchor="end", color="#c53030")
    svg.text(left, height - 8, "ticks on the time axis: broker restarts (every third a "
             "SIGKILL)", size=10, color="#718096")
    return svg.render()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=RESULTS_DIR)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    drawn = 0
    for name, draw, out in (("stages", stages_chart, "stages.svg"),
                            ("soak", soak_chart, "soak-rss.svg")):
        src = args.results / f"{name}.json"
        if not src.exists():
            print(f"skip {out}: no {src} (run bench/{name}.py first)")
            continue
        res = json.loads(src.read_text())
        (args.out / out).write_text(draw(res))
        print(f"wrote {args.out / out}")
        drawn += 1
    if not drawn:
        raise SystemExit("nothing drawn")


if __name__ == "__main__":
    main()
