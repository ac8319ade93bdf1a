"""Prometheus text exposition (format 0.0.4) on a loopback port, no dependency.

Counters and histograms are kept here as the daemon updates them; everything else (queue
depths, models, governor, tools, escalations, memory) is read from the daemon at scrape
time, so a scrape always shows the present. The HTTP side is the few lines of HTTP/1.1 a
scraper needs: ``GET /metrics``, anything else is a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App
    from .bus.client import MQTTBus

log = logging.getLogger("edged.metrics")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0)
# The stages a request passes, in order (each observed where it happens, see service.py).
STAGES = ("ingest", "queue", "route", "agent", "memory", "tool", "model", "commit", "publish")
WINDOW = 2048  # observations behind each stage's recent-quantile summary
QUANTILES = (0.5, 0.95, 0.99)
Labels = tuple[tuple[str, str], ...]


def _labels(labels: dict[str, Any] | None) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in (labels or {}).items()))


def _fmt_labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = [*labels, *extra]
    if not items:
        return ""
    esc = [(k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
           for k, v in items]
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc) + "}"


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = {}
        self.hists: dict[str, dict[Labels, list[float]]] = {}  # bucket counts + sum + count
        self.help: dict[str, str] = {}
        self.windows: dict[str, deque[float]] = {}
        self.started = time.time()

    def stage(self, stage: str, seconds: float) -> None:
        """One request's time in a pipeline stage: a histogram for Prometheus (rates,
        long-range quantiles) and a window of the last observations for exact recent
        quantiles without PromQL (what ``edged status`` and the benchmarks read)."""
        seconds = max(0.0, seconds)
        self.observe("edged_stage_seconds", seconds, {"stage": stage},
                     help_="time spent per pipeline stage")
        w = self.windows.get(stage)
        if w is None:
            w = self.windows[stage] = deque(maxlen=WINDOW)
        w.append(seconds)

    def stage_quantiles(self) -> dict[str, dict[str, float]]:
        """``{stage: {"n": count in window, "p50": s, "p95": s, "p99": s}}`` in stage order."""
        out: dict[str, dict[str, float]] = {}
        order = {s: i for i, s in enumerate(STAGES)}
        for stage in sorted(self.windows, key=lambda s: (order.get(s, len(order)), s)):
            xs = sorted(self.windows[stage])
            if xs:
                out[stage] = {"n": len(xs), **{f"p{round(q * 100)}": _quantile(xs, q)
                                               for q in QUANTILES}}
        return out

    def inc(self, name: str, labels: dict[str, Any] | None = None, value: float = 1.0,
            help_: str = "") -> None:
        series = self.counters.setdefault(name, {})
        key = _labels(labels)
        series[key] = series.get(key, 0.0) + value
        if help_:
            self.help.setdefault(name, help_)

    def observe(self, name: str, value: float, labels: dict[str, Any] | None = None,
                help_: str = "") -> None:
        series = self.hists.setdefault(name, {})
        key = _labels(labels)
        h = series.get(key)
        if h is None:
            h = series[key] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        for i, b in enumerate(LATENCY_BUCKETS):
            if value <= b:
                h[i] += 1
        h[-2] += value
        h[-1] += 1
        if help_:
            self.help.setdefault(name, help_)

    def render(self, app: App, bus: MQTTBus | None) -> str:
        out: list[str] = []

        def head(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        def gauge(name: str, value: Any, help_: str, labels: dict[str, Any] | None = None,
                  first: bool = True) -> None:
            if first:
                head(name, "gauge", help_)
            out.append(f"{name}{_fmt_labels(_labels(labels))} {float(value or 0):g}")

        for name, series in sorted(self.counters.items()):
            head(name, "counter", self.help.get(name, name))
            for key, v in sorted(series.items()):
                out.append(f"{name}{_fmt_labels(key)} {v:g}")
        for name, hseries in sorted(self.hists.items()):
            head(name, "histogram", self.help.get(name, name))
            for key, h in sorted(hseries.items()):
                for i, b in enumerate(LATENCY_BUCKETS):
                    out.append(f"{name}_bucket{_fmt_labels(key, (('le', f'{b:g}'),))} {h[i]:g}")
                out.append(f"{name}_bucket{_fmt_labels(key, (('le', '+Inf'),))} {h[-1]:g}")
                out.append(f"{name}_sum{_fmt_labels(key)} {h[-2]:.6f}")
                out.append(f"{name}_count{_fmt_labels(key)} {h[-1]:g}")

        quantiles = self.stage_quantiles()
        if quantiles:
            head("edged_stage_recent_seconds", "summary",
                 f"time per pipeline stage over each stage's last {WINDOW} observations")
            for stage, q in quantiles.items():
                for qn in QUANTILES:
                    lab = _fmt_labels((("quantile", f"{qn:g}"), ("stage", stage)))
                    out.append(f"edged_stage_recent_seconds{lab} {q[f'p{round(qn * 100)}']:.6f}")
                w = self.windows[stage]
                out.append(f'edged_stage_recent_seconds_sum{{stage="{stage}"}} {sum(w):.6f}')
                out.append(f'edged_stage_recent_seconds_count{{stage="{stage}"}} {len(w)}')

        d = app
        head("edged_messages_total", "counter",
             "messages by stage: in, duplicates, rejected, sink, processed, failed, dead, out")
        for k, v in sorted(d.spine.stats.items()):
            out.append(f'edged_messages_total{{stage="{k}"}} {v:g}')
        gauge("edged_up", 1, "1 while the daemon runs")
        gauge("edged_start_time_seconds", self.started, "Unix time the daemon started")
        gauge("edged_pending_requests", d.spine.open, "requests journaled and not finished")
        gauge("edged_active_requests", len(d.spine.active), "requests being processed now")
        gauge("edged_outbox_rows", d.journal.outbox_rows, "messages waiting to be published")
        gauge("edged_bus_connected", 1 if bus and bus.connected.is_set() else 0,
              "1 while connected to the broker")
        from .models.pool import rss_bytes

        gauge("edged_rss_bytes", rss_bytes(), "resident memory of the daemon")
        first = True
        for m in d.pool.describe():
            gauge("edged_model_loaded", 1 if m["loaded"] else 0, "1 while a model is loaded",
                  {"model": m["alias"]}, first)
            first = False
        first = True
        for m in d.pool.describe():
            gauge("edged_model_tokens_per_second", m["tokens_per_s"],
                  "generation speed of a model (average)", {"model": m["alias"]}, first)
            first = False
        first = True
        for m in d.pool.describe():
            gauge("edged_model_rss_delta_bytes", m["rss_delta_mb"] * 2**20,
                  "memory a loaded model added", {"model": m["alias"]}, first)
            first = False
        for k in ("loads", "unloads", "evictions", "refused"):
            head(f"edged_model_{k}_total", "counter", f"model pool {k}")
            out.append(f"edged_model_{k}_total {d.pool.stats.get(k, 0):g}")
        head("edged_tool_calls_total", "counter", "tool calls by outcome")
        for k, v in sorted(d.runner.stats.items()):
            out.append(f'edged_tool_calls_total{{outcome="{k}"}} {v:g}')
        state = d.governor.state
        first = True
        for flag in ("memory_pressure", "low_battery", "hot"):
            gauge("edged_governor", 1 if getattr(state, flag) else 0,
                  "resource governor flags", {"flag": flag}, first)
            first = False
        if d.escalator is not None:
            st = d.escalator.describe()
            gauge("edged_cloud_online", 1 if st["state"] == "online" else 0,
                  "1 while the cloud is reachable")
            head("edged_cloud_escalations_total", "counter", "cloud escalations by outcome")
            for k in ("sent", "answered", "queued", "followups", "expired", "failed",
                      "over_budget"):
                out.append(f'edged_cloud_escalations_total{{outcome="{k}"}} {st.get(k, 0):g}')
            gauge("edged_cloud_queued", st.get("waiting", 0), "escalations waiting")
        if d.memory_status:
            gauge("edged_memories", d.memory_status.get("memories", 0), "long-term memories")
        return "\n".join(out) + "\n"


def _quantile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated quantile of sorted samples."""
    pos = (len(sorted_xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


async def serve_metrics(host: str, port: int, render: Callable[[], str]) -> None:
    """A minimal HTTP server for ``GET /metrics`` (no dependency; one request per
    connection)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            while (await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] == "/metrics":
                body = render().encode()
                status, ctype = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
            else:
                body, status, ctype = b"not found: try /metrics\n", "404 Not Found", \
                    "text/plain"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                         .encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port)
    log.info("metrics on http://%s:%d/metrics", host, port)
    async with server:
        await server.serve_forever()
