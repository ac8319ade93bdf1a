"""Front desk of a small hotel (rooms 101-120, 201-220, 301-320): room service, room
thermostats, housekeeping, the lobby music, wake-up calls and the guest wifi.

Orders and requests go into a SQLite file that the desk's screen shows; a real install would
also push them to the kitchen printer and the PBX.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Annotated

from msgspec import Meta

from edged.plugin import ToolContext, ToolError, tool

Room = Annotated[int, Meta(ge=101, le=320)]


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "hotel.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS orders(id INTEGER PRIMARY KEY, room INTEGER, "
                 "kind TEXT, text TEXT, urgent INTEGER, created REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS wakeups(room INTEGER PRIMARY KEY, at TEXT)")
    conn.execute("CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT)")
    return conn


def _check_room(room: int) -> None:
    if not 1 <= room % 100 <= 20:
        raise ToolError(f"there is no room {room}")


@tool(examples=[("room service for 204: two coffees and a croissant",
                 {"room": 204, "items": "two coffees and a croissant"})])
def order_room_service(room: Room, items: str, *, ctx: ToolContext) -> dict:
    """Send a room service order to the kitchen.

    Args:
        room: Room number, e.g. 204.
        items: What to bring, in the guest's words, e.g. "two coffees and a croissant".
    """
    _check_room(room)
    with _db(ctx) as conn:
        cur = conn.execute("INSERT INTO orders(room, kind, text, urgent, created) "
                           "VALUES(?,?,?,?,?)", (room, "room service", items, 0, time.time()))
    return {"order": cur.lastrowid, "room": room, "items": items}


@tool
def set_room_thermostat(room: Room, celsius: Annotated[float, Meta(ge=16, le=28)], *,
                        ctx: ToolContext) -> dict:
    """Set the thermostat of a guest room.

    Args:
        room: Room number.
        celsius: Target temperature, 16-28 °C.
    """
    _check_room(room)
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO settings VALUES(?,?)", (f"temp:{room}", celsius))
    return {"room": room, "target": celsius}


@tool(examples=[("housekeeping to 112, the guest wants extra towels",
                 {"room": 112, "note": "extra towels"})])
def request_housekeeping(room: Room, note: str = "", urgent: bool = False, *,
                         ctx: ToolContext) -> dict:
    """Ask housekeeping to come to a room.

    Args:
        room: Room number.
        note: What is needed, for the housekeeper, e.g. "extra pillows".
        urgent: True sends someone right away instead of on the next round.
    """
    _check_room(room)
    with _db(ctx) as conn:
        cur = conn.execute("INSERT INTO orders(room, kind, text, urgent, created) "
                           "VALUES(?,?,?,?,?)", (room, "housekeeping", note, int(urgent),
                                                 time.time()))
    return {"request": cur.lastrowid, "room": room, "urgent": urgent}


@tool
def set_lobby_music(volume: Annotated[int, Meta(ge=0, le=10)], *, ctx: ToolContext) -> dict:
    """Set the volume of the background music in the lobby.

    Args:
        volume: 0 (silent) to 10 (loudest).
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO settings VALUES('music', ?)", (volume,))
    return {"lobby_music_volume": volume}


@tool(examples=[("wake-up call for room 305 at 6:30", {"room": 305, "at": "06:30"}),
                ("wake up 118 at seven", {"room": 118, "at": "07:00"})])
def set_wake_up_call(room: Room,
                     at: Annotated[str, Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")], *,
                     ctx: ToolContext) -> dict:
    """Book a wake-up call: the room's phone rings at that time (the next time it comes).

    Args:
        room: Room number.
        at: Time of the call, 24-hour HH:MM, e.g. "06:45".
    """
    _check_room(room)
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO wakeups VALUES(?,?)", (room, at))
    return {"room": room, "wake_up_at": at}


@tool
def cancel_wake_up_call(room: Room, *, ctx: ToolContext) -> dict:
    """Cancel a room's wake-up call.

    Args:
        room: Room number.
    """
    with _db(ctx) as conn:
        gone = conn.execute("DELETE FROM wakeups WHERE room = ?", (room,)).rowcount
    return {"room": room, "cancelled": bool(gone)}


@tool
def set_guest_wifi(enabled: bool, *, ctx: ToolContext) -> dict:
    """Turn the guest wifi network on or off (the staff network is not affected).

    Args:
        enabled: True turns the guest network on, False off.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO settings VALUES('wifi', ?)", (int(enabled),))
    return {"guest_wifi": enabled}
