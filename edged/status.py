"""One snapshot of a running edged, for the status topic, ``edged status`` and the metrics;
and the health check behind the systemd watchdog. Both read the parts' public state only."""

from __future__ import annotations

import asyncio
import os
import time

import msgspec

from . import __version__
from .app import App
from .bus.client import MQTTBus
from .messages import Status
from .models.pool import rss_bytes

BUS_DOWN_UNHEALTHY_S = 300.0  # a bus that never comes back (its reconnect starved) is a fault


def snapshot(app: App, bus: MQTTBus | None, state: str) -> Status:
    """``state`` is online or offline (the will and the clean stop say offline)."""
    pool, spine, journal = app.pool, app.spine, app.journal
    models = [{"alias": m["alias"], "loaded": m["loaded"], "busy": m["busy"],
               "rss_delta_mb": m["rss_delta_mb"], "tokens_per_s": m["tokens_per_s"],
               "pid": m.get("pid"), "crashes": m["crashes"], "failed": m["failed"]}
              for m in pool.describe()]
    degraded = bool(pool.failed()) or app.governor.state.name != "normal" \
        or bool(journal.degraded) or "unavailable" in app.memory_status
    detail = {
        "active": len(spine.active), **spine.stats,
        "rss_mb": round(rss_bytes() / 2**20, 1),
        "governor": app.governor.status(), "models": models,
        "tools": len(app.registry.tools),
        "plugin_errors": [f"{e.plugin}: {e.error}"[:200] for e in app.registry.errors],
        "bus": bus.state if bus else "idle",
        "bus_error": bus.last_error[:200] if bus else "",
        "last_error": app.last_error[:300],
        "storage": journal.degraded[:300] or "ok",
        "memory": {k: v for k, v in app.memory_status.items() if k != "by_kind"},
        "scheduler": app.scheduler.describe(),
        "latency_ms": {stage: [round(q["p50"] * 1e3, 2), round(q["p95"] * 1e3, 2)]
                       for stage, q in app.metrics.stage_quantiles().items()},
    }
    if app.escalator is not None:
        detail["cloud"] = app.escalator.describe()
    return Status(state=state, client_id=app.cfg.mqtt.client_id, pid=os.getpid(),
                  ts=round(app.clock(), 3), version=__version__,
                  health="degraded" if degraded else "ok",
                  pending=spine.open, outbox=journal.outbox_rows,
                  models_loaded=pool.loaded(), detail=detail)


def payload(app: App, bus: MQTTBus | None, state: str) -> bytes:
    return msgspec.json.encode(snapshot(app, bus, state))


async def health(app: App, bus: MQTTBus | None) -> str | None:
    """Why the daemon is not healthy, or None. The event loop answering this at all is the
    first check; then the journal's writer thread, stuck model calls, every tool thread hung,
    and the MQTT bus down for more than 5 minutes. A disk that refuses writes is not here:
    that is ``degraded`` (status, STATUS=), which a restart would not cure."""
    try:
        await asyncio.wait_for(app.journal.ping(), 10.0)
    except Exception as e:  # noqa: BLE001 - any failure is unhealthy
        return f"journal not answering: {e!r}"
    stuck_after = app.cfg.resources.stuck_after_s
    if stuck := app.pool.stuck(stuck_after):
        return f"model {', '.join(stuck)} held for more than {stuck_after:g} s"
    if (tools := app.runner.health()) is not None:
        return tools  # every tool thread hung: only a restart frees them
    if bus is not None and bus.disconnected_since is not None:
        down_s = time.monotonic() - bus.disconnected_since
        if down_s > BUS_DOWN_UNHEALTHY_S:
            return f"MQTT not connected for {down_s:.0f} s ({bus.state}: {bus.last_error})"
    return None
