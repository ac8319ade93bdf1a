"""Example plugin: kitchen timers and reminders, published over MQTT when due.

A timer is a durable scheduled message: it survives a restart of edged, and when it is due
the device that set it gets ``{"id", "agent": "timers", "text": ...}`` on its reply topic
(``<prefix>/out/<device>``).
"""

from __future__ import annotations

import json
import re
import time

from edged.plugin import ToolContext, tool


def _key(ctx: ToolContext, label: str) -> str:
    return f"timers:{ctx.device}:{re.sub(r'[^a-z0-9 ]', '', label.lower()).strip() or 'timer'}"


def _topic(ctx: ToolContext) -> str:
    prefix = ctx.topic.split("/", 1)[0] if ctx.topic.count("/") >= 2 else "edged"
    return f"{prefix}/out/{ctx.device}"


@tool(examples=[("set a timer for 10 minutes", {"minutes": 10}),
                ("remind me in half an hour", {"minutes": 30}),
                ("start a five minute timer for the pasta", {"minutes": 5, "label": "pasta"}),
                ("timer for 2 minutes", {"minutes": 2})])
async def set_timer(minutes: float, label: str = "timer", *, ctx: ToolContext) -> dict:
    """Start a countdown timer; when it ends the device gets a message.

    Args:
        minutes: How long, in minutes.
        label: A name for the timer.
    """
    if not 0 < minutes <= 24 * 60:
        raise ValueError("a timer runs between a few seconds and 24 hours")
    due = time.time() + minutes * 60
    key = _key(ctx, label)
    text = f"Your {label} timer is done." if label != "timer" else "Your timer is done."
    await ctx.schedule(key, due, _topic(ctx), json.dumps(
        {"id": f"{key}:{int(due)}", "agent": "timers", "text": text}))
    return {"label": label, "minutes": minutes, "due": time.strftime("%H:%M", time.localtime(due))}


@tool(examples=[("cancel the pasta timer", {"label": "pasta"}), ("stop the timer", {}),
                ("cancel my timer", {})])
async def cancel_timer(label: str = "timer", *, ctx: ToolContext) -> str:
    """Cancel a running timer.

    Args:
        label: Which timer.
    """
    if await ctx.unschedule(_key(ctx, label)):
        return f"Cancelled the {label} timer." if label != "timer" else "Timer cancelled."
    return "There is no such timer."


@tool(examples=["what timers are running", "how long is left on my timer", "list my timers"])
async def list_timers(*, ctx: ToolContext) -> list[str]:
    """List the running timers with the time left."""
    now = time.time()
    out = []
    for key, due in await ctx.scheduled(f"timers:{ctx.device}:"):
        left = max(0, due - now)
        out.append(f"{key.split(':', 2)[2]}: {int(left // 60)} min {int(left % 60)} s left")
    return out
