"""Boat systems on the little NMEA/relay box: pumps, anchor light, tanks, fridge, awning,
the log book and the diesel's glow plugs.

State and the log live in SQLite under the plugin's state folder.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from edged.plugin import ToolContext, tool

TANKS = {"fresh water": 180, "grey water": 60, "fuel": 90}  # litres


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "boat.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS state(key TEXT PRIMARY KEY, value REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS log(ts REAL, device TEXT, text TEXT)")
    return conn


def _set(ctx: ToolContext, key: str, value: float) -> None:
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO state VALUES(?,?)", (key, value))


@tool(examples=[("run the bilge pump", {"running": True}),
                ("turn off the fresh water pump", {"pump": "fresh water", "running": False})],
      aliases={"pump": {"water": "fresh water", "tap": "fresh water", "bilge pump": "bilge"}})
def set_pump(running: bool, pump: Literal["bilge", "fresh water"] = "bilge", *,
             ctx: ToolContext) -> dict:
    """Start or stop a pump: the bilge pump or the fresh water (pressure) pump.

    Args:
        running: True starts the pump, False stops it.
        pump: Which pump.
    """
    _set(ctx, f"pump:{pump}", int(running))
    return {"pump": pump, "running": running}


@tool
def set_anchor_light(on: bool, *, ctx: ToolContext) -> dict:
    """Switch the masthead anchor light on or off.

    Args:
        on: True switches the anchor light on.
    """
    _set(ctx, "anchor_light", int(on))
    return {"anchor_light": on}


@tool(examples=["how much water is left", ("check the fuel", {"tank": "fuel"})],
      aliases={"tank": {"water": "fresh water", "diesel": "fuel", "grey": "grey water",
                        "waste": "grey water"}})
def tank_level(tank: Literal["fresh water", "grey water", "fuel"] = "fresh water", *,
               ctx: ToolContext) -> dict:
    """How full a tank is, in percent and litres.

    Args:
        tank: Which tank.
    """
    with _db(ctx) as conn:
        row = conn.execute("SELECT value FROM state WHERE key = ?", (f"tank:{tank}",)).fetchone()
    percent = row[0] if row else 70.0
    return {"tank": tank, "percent": percent, "litres": round(TANKS[tank] * percent / 100)}


@tool
def set_fridge_temperature(target: Annotated[float, Meta(ge=-2, le=12)], *,
                           ctx: ToolContext) -> dict:
    """Set the fridge's target temperature.

    Args:
        target: Target in degrees Celsius, -2 to 12.
    """
    _set(ctx, "fridge", target)
    return {"fridge_target": target}


@tool
def set_awning(position: Annotated[int, Meta(ge=0, le=100)], *, ctx: ToolContext) -> dict:
    """Roll the awning in or out.

    Args:
        position: How far out, in percent: 0 is rolled in (stowed), 100 fully out.
    """
    _set(ctx, "awning", position)
    return {"awning": position}


@tool(examples=[("log that we reefed at 14:00", {"text": "we reefed at 14:00"})])
def add_log_entry(text: str, *, ctx: ToolContext) -> dict:
    """Write an entry in the log book, timestamped.

    Args:
        text: The entry, as it should read in the log.
    """
    now = time.time()
    with _db(ctx) as conn:
        conn.execute("INSERT INTO log VALUES(?,?,?)", (now, ctx.device, text.strip()))
    return {"logged": text.strip(), "at": time.strftime("%H:%M", time.localtime(now))}


@tool
async def preheat_engine(seconds: Annotated[int, Meta(ge=5, le=60)] = 20, *,
                         ctx: ToolContext) -> dict:
    """Run the diesel's glow plugs before a start.

    Args:
        seconds: How long to preheat, 5-60 seconds.
    """
    _set(ctx, "preheat_until", time.time() + seconds)
    return {"preheating_s": seconds}
