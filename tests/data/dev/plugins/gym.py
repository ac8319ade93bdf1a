"""Development plugin: the front desk of a small gym and sports centre.

Class bookings, check-ins, membership freezes, payments, the sauna, the court lights and the
PA. Staff use it from the desk tablet or by voice. A real installation would talk to the
membership system and the building controller; this one keeps everything in SQLite.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from edged.plugin import ToolContext, tool

ClassName = Literal["spin", "yoga", "pilates", "HIIT", "circuits", "boxfit", "zumba"]
Area = Literal["court 1", "court 2", "court 3", "sports hall"]
Zone = Literal["everywhere", "gym floor", "studios", "changing rooms", "courts"]
FreezeReason = Literal["injury", "illness", "travel", "maternity", "other"]


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "gym.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS bookings(member TEXT, class TEXT, at TEXT)")
    conn.execute("CREATE TABLE IF NOT EXISTS visits(member TEXT, guests INTEGER, at REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS freezes(member TEXT, weeks INTEGER, reason TEXT, "
                 "created REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS payments(member TEXT, amount REAL, method TEXT, "
                 "created REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT)")
    return conn


@tool(examples=[("put Jane Doyle in Tuesday's 6pm spin",
                 {"member": "Jane Doyle", "class_name": "spin", "when": "Tuesday 18:00"})])
def book_class(member: str, class_name: ClassName, when: str, *, ctx: ToolContext) -> dict:
    """Book a member onto a group class on the timetable.

    Args:
        member: The member's full name.
        class_name: Which class.
        when: Day and start time of the class, e.g. "Thursday 18:30" or "tomorrow 07:00".
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO bookings VALUES(?,?,?)", (member, class_name, when))
    return {"booked": True, "member": member, "class": class_name, "when": when}


@tool
def check_in(member: str, guests: Annotated[int, Meta(ge=0, le=3)] = 0, *,
             ctx: ToolContext) -> dict:
    """Check a member in at the desk (opens the turnstile for them and any guests).

    Args:
        member: The member's full name.
        guests: Guests the member brings in on guest passes, up to 3.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO visits VALUES(?,?,?)", (member, guests, time.time()))
    return {"checked_in": member, "guests": guests}


@tool
def freeze_membership(member: str, weeks: Annotated[int, Meta(ge=1, le=26)],
                      reason: FreezeReason = "other", *, ctx: ToolContext) -> dict:
    """Put a membership on hold: no fees are taken and the end date moves back.

    Args:
        member: The member's full name.
        weeks: Length of the freeze in weeks (1-26).
        reason: Why, for the records.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO freezes VALUES(?,?,?,?)", (member, weeks, reason, time.time()))
    return {"member": member, "frozen_weeks": weeks, "reason": reason}


@tool
def set_sauna_temperature(celsius: Annotated[int, Meta(ge=60, le=95)], *,
                          ctx: ToolContext) -> dict:
    """Set the sauna's heater.

    Args:
        celsius: Target temperature in °C, 60-95.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO settings VALUES('sauna', ?)", (str(celsius),))
    return {"sauna_celsius": celsius}


@tool
def set_court_lights(area: Area, lit: bool, *, ctx: ToolContext) -> dict:
    """Switch the floodlights of a court or of the sports hall.

    Args:
        area: Which court, or the sports hall.
        lit: True switches the lights on, False off.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO settings VALUES(?, ?)",
                     (f"lights:{area}", "on" if lit else "off"))
    return {"area": area, "lights": "on" if lit else "off"}


@tool
def announce(message: str, zone: Zone = "everywhere", *, ctx: ToolContext) -> dict:
    """Read a message out over the PA speakers.

    Args:
        message: The text to read out.
        zone: Where it is heard; the whole building by default.
    """
    return {"announced": message, "zone": zone}


@tool
def record_payment(member: str, amount: Annotated[float, Meta(gt=0, le=2000)],
                   method: Literal["card", "cash", "bank transfer"] = "card", *,
                   ctx: ToolContext) -> dict:
    """Record money a member paid at the desk (fees, passes, lockers, shop).

    Args:
        member: The member's full name.
        amount: Amount in euros, e.g. 39.99.
        method: How they paid.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO payments VALUES(?,?,?,?)",
                     (member, amount, method, time.time()))
    return {"member": member, "amount_eur": amount, "method": method}
