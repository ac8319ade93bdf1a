"""Greenhouse controller: vents, irrigation zones, heater, grow lights, misting and sensors.

A real install drives the relay board and reads the sensor hub from these functions; this
one keeps the state in a small SQLite file so that it survives restarts.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from edged.plugin import ToolContext, tool

Zone = Literal["tomatoes", "cucumbers", "seedlings", "herbs"]
ZONE_ALIASES = {"toms": "tomatoes", "tomato": "tomatoes", "cukes": "cucumbers",
                "cucumber": "cucumbers", "propagation bench": "seedlings",
                "seedling": "seedlings", "herb bed": "herbs"}


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "greenhouse.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS state(key TEXT PRIMARY KEY, value TEXT)")
    return conn


def _set(ctx: ToolContext, **values: object) -> None:
    with _db(ctx) as conn:
        conn.executemany("INSERT OR REPLACE INTO state VALUES(?,?)",
                         [(k, str(v)) for k, v in values.items()])


def _get(ctx: ToolContext, key: str, default: str) -> str:
    with _db(ctx) as conn:
        row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    return row[0] if row else default


@tool(
    examples=[
        ("open the roof vents halfway", {"vent": "roof", "opening": 50}),
        ("close all the vents", {"opening": 0}),
    ],
    aliases={"vent": {"ridge": "roof", "top": "roof", "windows": "side",
                      "side windows": "side", "louvres": "side", "everything": "all"}},
)
def set_vent(opening: Annotated[int, Meta(ge=0, le=100)],
             vent: Literal["roof", "side", "all"] = "all", *, ctx: ToolContext) -> dict:
    """Open or close the greenhouse vents and windows to a given opening.

    Args:
        opening: How far open, in percent: 0 is closed, 100 is fully open.
        vent: Which vents: "roof" (the ridge vents), "side" (the side windows) or "all".
    """
    names = ["roof", "side"] if vent == "all" else [vent]
    _set(ctx, **{f"vent:{n}": opening for n in names})
    return {"vent": vent, "opening": opening}


@tool(aliases={"zone": ZONE_ALIASES})
def set_valve(zone: Zone, open: bool, *, ctx: ToolContext) -> dict:
    """Open or close the irrigation valve of one zone. An open valve waters until it is
    closed again.

    Args:
        zone: The irrigation zone.
        open: True opens the valve so the water runs, False shuts it.
    """
    _set(ctx, **{f"valve:{zone}": int(open), f"until:{zone}": 0})
    return {"zone": zone, "open": open}


@tool(
    examples=[("water the tomatoes for 20 minutes", {"zone": "tomatoes",
                                                     "duration_minutes": 20})],
    aliases={"zone": ZONE_ALIASES},
)
def water_zone(zone: Zone, duration_minutes: Annotated[int, Meta(ge=1, le=120)] = 15,
               *, ctx: ToolContext) -> dict:
    """Water one zone for a while: opens its valve and closes it after the duration.

    Args:
        zone: The irrigation zone.
        duration_minutes: How long to water, 1-120 minutes.
    """
    until = time.time() + duration_minutes * 60
    _set(ctx, **{f"valve:{zone}": 1, f"until:{zone}": int(until)})
    return {"zone": zone, "minutes": duration_minutes,
            "until": time.strftime("%H:%M", time.localtime(until))}


@tool
def set_heater(target_celsius: Annotated[float, Meta(ge=0, le=30)], *,
               ctx: ToolContext) -> dict:
    """Set the greenhouse heater's target; it heats whenever the air is colder than this.

    Args:
        target_celsius: Keep the greenhouse at least this warm, 0-30 °C.
    """
    _set(ctx, heater=target_celsius)
    return {"heater_target": target_celsius}


@tool
def set_grow_lights(enabled: bool, *, ctx: ToolContext) -> dict:
    """Switch the LED grow lights over the benches on or off.

    Args:
        enabled: True switches the grow lights on, False switches them off.
    """
    _set(ctx, grow_lights=int(enabled))
    return {"grow_lights": enabled}


@tool(examples=["start the misting", ("stop the misters", {"running": False})])
def set_misting(running: bool, *, ctx: ToolContext) -> dict:
    """Start or stop the misting system, which sprays a fine fog to raise the humidity.

    Args:
        running: True starts misting, False stops it.
    """
    _set(ctx, misting=int(running))
    return {"misting": running}


@tool(aliases={"reading": {"temp": "temperature", "warm": "temperature", "hot": "temperature",
                           "cold": "temperature", "humid": "humidity", "damp": "humidity",
                           "bright": "light", "sun": "light"}})
def read_climate(reading: Literal["temperature", "humidity", "light"], *,
                 ctx: ToolContext) -> dict:
    """Read a greenhouse sensor: the air temperature, the relative humidity or the light level.

    Args:
        reading: Which sensor: "temperature" (°C), "humidity" (% relative) or "light" (lux).
    """
    heater = float(_get(ctx, "heater", "12"))
    misting = _get(ctx, "misting", "0") == "1"
    if reading == "temperature":
        return {"temperature": round(max(heater, 18.5), 1), "unit": "C"}
    if reading == "humidity":
        return {"humidity": 85 if misting else 62, "unit": "%"}
    if _get(ctx, "grow_lights", "0") == "1":
        return {"light": 12000, "unit": "lux"}
    return {"light": 4500, "unit": "lux"}
