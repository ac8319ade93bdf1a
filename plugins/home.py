"""Example plugin: lights, heating and sensors of a home, with state kept in SQLite.

Drop it into a plugin folder. A real installation would call Zigbee2MQTT or Home Assistant
from these functions; this one keeps the state itself so that the demo and the tests have
something that survives restarts.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from edged.plugin import ToolContext, tool

Room = Literal["kitchen", "living room", "bedroom", "bathroom", "hall", "office", "garden"]
ROOM_ALIASES = {"lounge": "living room", "sitting room": "living room", "front room":
                "living room", "study": "office", "corridor": "hall", "hallway": "hall",
                "toilet": "bathroom", "loo": "bathroom", "yard": "garden"}


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "home.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS lights(room TEXT PRIMARY KEY, on_ INTEGER, "
                 "brightness INTEGER)")
    conn.execute("CREATE TABLE IF NOT EXISTS heating(room TEXT PRIMARY KEY, target REAL)")
    return conn


@tool(
    examples=[
        ("turn on the kitchen lights", {"room": "kitchen", "on": True}),
        ("switch off the light in the bedroom", {"room": "bedroom", "on": False}),
        ("lights on in the lounge", {"room": "living room", "on": True}),
        ("dim the office lights to 30 percent", {"room": "office", "on": True,
                                                  "brightness": 30}),
        ("kill the hall light", {"room": "hall", "on": False}),
    ],
    aliases={"room": ROOM_ALIASES},
)
def set_light(room: Room, on: bool, brightness: Annotated[int, Meta(ge=1, le=100)] = 100,
              *, ctx: ToolContext) -> dict:
    """Turn the lights in a room on or off, optionally at a brightness.

    Args:
        room: The room.
        on: True to switch the lights on, False to switch them off.
        brightness: Brightness in percent, 1-100.
    """
    brightness = max(1, min(100, brightness))
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO lights VALUES(?,?,?)", (room, int(on), brightness))
    return {"room": room, "on": on, "brightness": brightness if on else 0}


@tool(
    examples=[
        ("set the heating to 21 degrees", {"degrees": 21}),
        ("make the bedroom 19 degrees", {"room": "bedroom", "degrees": 19}),
        ("warm up the living room to twenty two", {"room": "living room", "degrees": 22}),
        ("set the thermostat in the office to 20.5", {"room": "office", "degrees": 20.5}),
    ],
    aliases={"room": ROOM_ALIASES},
)
def set_temperature(degrees: Annotated[float, Meta(ge=5, le=30)], room: Room = "living room",
                    *, ctx: ToolContext) -> dict:
    """Set the heating thermostat of a room to a target temperature.

    Args:
        degrees: Target temperature in degrees Celsius, 5-30.
        room: The room.
    """
    if not 5 <= degrees <= 30:
        raise ValueError(f"{degrees} degrees is outside 5-30")
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO heating VALUES(?,?)", (room, degrees))
    return {"room": room, "target": degrees}


@tool(
    examples=[
        ("what's the temperature in the kitchen", {"room": "kitchen",
                                                    "kind": "temperature"}),
        ("how humid is the bathroom", {"room": "bathroom", "kind": "humidity"}),
        ("are the bedroom lights on", {"room": "bedroom", "kind": "light"}),
        ("is it warm in the office", {"room": "office", "kind": "temperature"}),
    ],
    aliases={"room": ROOM_ALIASES, "kind": {"warm": "temperature", "cold": "temperature",
                                            "temp": "temperature", "degrees": "temperature",
                                            "hot": "temperature", "humid": "humidity",
                                            "lights": "light", "lamp": "light"}},
)
def read_sensor(room: Room, kind: Literal["temperature", "humidity", "light"],
                *, ctx: ToolContext) -> dict:
    """Read a sensor in a room: temperature, humidity or whether the light is on.

    Args:
        room: The room.
        kind: Which reading.
    """
    with _db(ctx) as conn:
        if kind == "light":
            row = conn.execute("SELECT on_, brightness FROM lights WHERE room = ?",
                               (room,)).fetchone()
            return {"room": room, "light_on": bool(row and row[0]),
                    "brightness": row[1] if row and row[0] else 0}
        target = conn.execute("SELECT target FROM heating WHERE room = ?", (room,)).fetchone()
    base = target[0] if target else 20.0
    value = round(base - 0.4, 1) if kind == "temperature" else 48.0
    return {"room": room, kind: value, "unit": "C" if kind == "temperature" else "%"}
