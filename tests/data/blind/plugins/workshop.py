"""Example plugin: a maker workshop / garage.

Machines, the dust extractor, the spray booth extractor fan, the air compressor, the kiln and
the roller door. A real installation would drive smart relays and the kiln controller from
these functions; this one keeps the state in a small SQLite file so that it survives restarts.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from edged.plugin import ToolContext, tool

Machine = Literal["table saw", "bandsaw", "lathe", "drill press", "cnc router", "planer"]


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "workshop.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS devices(name TEXT PRIMARY KEY, running INTEGER, "
                 "setting REAL, updated REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS kiln(id INTEGER PRIMARY KEY CHECK (id = 1), "
                 "temperature INTEGER, hold_minutes INTEGER, started REAL)")
    return conn


def _put(ctx: ToolContext, name: str, running: bool, setting: float | None = None) -> None:
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO devices VALUES(?,?,?,?)",
                     (name, int(running), setting, time.time()))


@tool(
    examples=[
        ("start the table saw", {"machine": "table saw", "running": True}),
        ("turn off the lathe", {"machine": "lathe", "running": False}),
    ],
    aliases={"machine": {"band saw": "bandsaw", "cnc": "cnc router", "router": "cnc router",
                         "thicknesser": "planer", "pillar drill": "drill press"}},
)
def set_machine(machine: Machine, running: bool, *, ctx: ToolContext) -> dict:
    """Start or stop one of the workshop machines (powers its smart relay).

    Args:
        machine: Which machine.
        running: True to start the machine, False to stop it.
    """
    _put(ctx, machine, running)
    return {"machine": machine, "running": running}


@tool
def set_dust_extractor(running: bool, *, ctx: ToolContext) -> dict:
    """Start or stop the dust extractor (the wood dust collector ducted to the machines).

    Args:
        running: True to start the dust extractor, False to stop it.
    """
    _put(ctx, "dust extractor", running)
    return {"dust_extractor": "running" if running else "stopped"}


@tool
def set_extractor_fan(speed: Annotated[int, Meta(ge=0, le=3)], *, ctx: ToolContext) -> dict:
    """Set the speed of the extractor fan in the spray booth (paint and finishing fumes).

    Args:
        speed: Fan speed from 0 to 3; 0 is off, 1 is low, 3 is full speed.
    """
    _put(ctx, "extractor fan", speed > 0, speed)
    return {"extractor_fan_speed": speed}


@tool(
    examples=[
        ("turn the compressor on", {"running": True}),
        ("run the compressor at 8 bar", {"running": True, "pressure_bar": 8.0}),
    ],
)
def set_compressor(running: bool, pressure_bar: Annotated[float, Meta(ge=1, le=10)] = 6.0,
                   *, ctx: ToolContext) -> dict:
    """Start or stop the air compressor and set the tank pressure it cuts out at.

    Args:
        running: True to start the compressor, False to stop it.
        pressure_bar: Cut-out pressure in bar, 1-10. Default 6 bar.
    """
    _put(ctx, "compressor", running, pressure_bar)
    return {"compressor": "running" if running else "stopped", "pressure_bar": pressure_bar}


@tool(examples=[("fire the kiln to 1000 degrees and hold it for 20 minutes",
                 {"temperature": 1000, "hold_minutes": 20})])
def fire_kiln(temperature: Annotated[int, Meta(ge=100, le=1300)],
              hold_minutes: Annotated[int, Meta(ge=0, le=240)] = 0,
              *, ctx: ToolContext) -> dict:
    """Start a kiln firing: ramp up to a peak temperature, then hold it for a while.

    Args:
        temperature: Peak temperature in degrees Celsius, 100-1300.
        hold_minutes: How long to hold the peak temperature, in minutes (0-240). 0 means no
            hold; the kiln starts cooling as soon as it reaches the peak.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO kiln VALUES(1,?,?,?)",
                     (temperature, hold_minutes, time.time()))
    # a rough ramp of 150 C per hour from room temperature
    ramp_min = round((temperature - 20) / 150 * 60)
    return {"kiln": "firing", "peak_c": temperature, "hold_minutes": hold_minutes,
            "estimated_minutes": ramp_min + hold_minutes}


@tool
def set_roller_door(position: Annotated[int, Meta(ge=0, le=100)], *, ctx: ToolContext) -> dict:
    """Move the garage roller door to a position.

    Args:
        position: Door position in percent: 0 is fully closed, 100 is fully open.
    """
    _put(ctx, "roller door", position > 0, position)
    state = "closed" if position == 0 else "open" if position == 100 else "partly open"
    return {"roller_door": state, "position": position}
