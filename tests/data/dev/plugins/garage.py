"""Development plugin: an independent car repair garage (four bays and a front desk).

Mechanics drive it over the bay radios with their hands full of grease; the front desk uses
the PC. It runs the two-post lifts, the workshop kit, the roller doors and the space heater,
and keeps the job board: bookings, parts to order, cars ready to collect. A real garage would
talk to the lift controllers, the building relays and the garage-management system; this
one keeps everything in SQLite.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from edged.plugin import ToolContext, ToolError, tool

Bay = Literal["bay 1", "bay 2", "bay 3", "MOT bay"]
Kit = Literal["air compressor", "tyre changer", "wheel balancer", "exhaust extraction",
              "parts washer", "battery charger"]
Job = Literal["MOT", "interim service", "full service", "brakes", "tyres", "clutch",
              "timing belt", "exhaust", "diagnostics", "air con regas"]
Door = Literal["front", "side"]
Unit = Literal["each", "pairs", "sets", "litres", "metres"]


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "garage.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS lifts(bay TEXT PRIMARY KEY, height_mm INTEGER, "
                 "at REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS kit(unit TEXT PRIMARY KEY, running INTEGER)")
    conn.execute("CREATE TABLE IF NOT EXISTS doors(door TEXT PRIMARY KEY, open_pct INTEGER)")
    conn.execute("CREATE TABLE IF NOT EXISTS jobs(id INTEGER PRIMARY KEY, reg TEXT, job TEXT, "
                 "due TEXT, phone TEXT, courtesy_car INTEGER, status TEXT, note TEXT, "
                 "updated REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS parts(id INTEGER PRIMARY KEY, part TEXT, "
                 "quantity REAL, unit TEXT, urgency TEXT, vehicle TEXT, created REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT)")
    return conn


def _plate(reg: str) -> str:
    return " ".join(reg.upper().split())


FULL_HEIGHT_MM = 1900


@tool(examples=[("bay two up", {"bay": "bay 2", "travel": "up"}),
                ("take the MOT bay lift to 1.2 metres", {"bay": "MOT bay", "height_mm": 1200})])
def move_lift(bay: Bay, height_mm: Annotated[int, Meta(ge=0, le=1900)] | None = None,
              travel: Literal["up", "down"] | None = None, *, ctx: ToolContext) -> dict:
    """Raise or lower the two-post vehicle lift in one of the bays.

    Give either a height, or travel to run it all the way up or all the way down.

    Args:
        bay: Which bay's lift. The MOT bay is the one with the brake rollers.
        height_mm: Height of the lifting arms above the floor in millimetres (0-1900).
        travel: "up" = full working height (1900 mm), "down" = lowered onto the floor
            (the lift drops onto its safety locks first).
    """
    if (height_mm is None) == (travel is None):
        raise ToolError("give either height_mm or travel")
    target = height_mm if height_mm is not None else (FULL_HEIGHT_MM if travel == "up" else 0)
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO lifts VALUES(?,?,?)", (bay, target, time.time()))
    return {"bay": bay, "height_mm": target}


@tool
def switch_equipment(unit: Kit, running: bool, *, ctx: ToolContext) -> dict:
    """Start or stop a piece of workshop equipment (via its contactor in the main panel).

    Args:
        unit: The machine. "exhaust extraction" is the fume extraction fan and hose reels
            over the bays.
        running: True starts it, False stops it.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO kit VALUES(?,?)", (unit, int(running)))
    return {"unit": unit, "running": running}


@tool(reply="The {door} door is {open_pct}% open.")
def set_roller_door(open_pct: Annotated[int, Meta(ge=0, le=100)], door: Door = "front", *,
                    ctx: ToolContext) -> dict:
    """Move a workshop roller shutter door.

    Args:
        open_pct: How far open, in percent: 0 = shut, 100 = fully up.
        door: The big front door onto the forecourt, or the side door to the yard.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO doors VALUES(?,?)", (door, open_pct))
    return {"door": door, "open_pct": open_pct}


@tool
def book_in(registration: str, job: Job, when: str, customer_phone: str | None = None,
            courtesy_car: bool = False, *, ctx: ToolContext) -> dict:
    """Put a car on the job board for a date and time.

    Args:
        registration: UK registration as on the number plate, e.g. "AB12 CDE".
        job: The main work booked.
        when: Day and time the car is due in, e.g. "Monday 08:30" or "12 May 14:00".
        customer_phone: Number to reach the customer on, if they gave one.
        courtesy_car: Whether the customer needs the courtesy car while theirs is in.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO jobs(reg, job, due, phone, courtesy_car, status, updated) "
                     "VALUES(?,?,?,?,?,'booked',?)",
                     (_plate(registration), job, when, customer_phone, int(courtesy_car),
                      time.time()))
    return {"booked": _plate(registration), "job": job, "when": when,
            "courtesy_car": courtesy_car}


@tool
def order_part(part: str, quantity: Annotated[float, Meta(gt=0, le=200)] = 1,
               unit: Unit = "each",
               urgency: Literal["routine", "next day", "same day"] = "routine",
               for_vehicle: str | None = None, *, ctx: ToolContext) -> dict:
    """Add a part to the order list for the motor factors.

    Args:
        part: What to order, as you would say it to the factors: part name, size, brand,
            e.g. "front brake discs", "5W-30 fully synthetic oil".
        quantity: How many, or how much of it in the unit below.
        unit: What the quantity counts: single items, pairs, sets, litres (oils and fluids)
            or metres (hose, cable, pipe).
        urgency: routine = goes on the weekly stock order; next day = overnight delivery;
            same day = on the factors' afternoon van (extra charge).
        for_vehicle: Registration of the car the part is for, if it is for a job.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO parts(part, quantity, unit, urgency, vehicle, created) "
                     "VALUES(?,?,?,?,?,?)",
                     (part, quantity, unit, urgency,
                      _plate(for_vehicle) if for_vehicle else None, time.time()))
    return {"part": part, "quantity": quantity, "unit": unit, "urgency": urgency,
            "for": for_vehicle}


@tool
def job_done(plate: str, note: str | None = None, text_customer: bool = True, *,
             ctx: ToolContext) -> dict:
    """Mark a car's job as finished: it shows as ready for collection at the desk.

    Args:
        plate: The car's registration, e.g. "KX19 LMN".
        note: Anything the customer should be told when they collect (advisories etc.).
        text_customer: Send the customer the "your car is ready" SMS.
    """
    with _db(ctx) as conn:
        cur = conn.execute("UPDATE jobs SET status = 'ready', note = ?, updated = ? "
                           "WHERE reg = ? AND status = 'booked'",
                           (note, time.time(), _plate(plate)))
    if cur.rowcount == 0:
        raise ToolError(f"no open job for {_plate(plate)}")
    return {"ready": _plate(plate), "note": note, "texted": text_customer}


@tool
def set_heater(celsius: Annotated[float, Meta(ge=5, le=24)],
               hours: Annotated[int, Meta(ge=1, le=12)] | None = None, *,
               ctx: ToolContext) -> dict:
    """Set the workshop's warm-air heater thermostat.

    Args:
        celsius: Target temperature for the workshop floor in °C (5-24), half degrees
            allowed. 5 is frost protection.
        hours: Hold this temperature for so many hours, then go back to the timer
            program. Stays until changed if not given.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO settings VALUES('heater', ?)",
                     (f"{celsius}|{hours or ''}",))
    return {"heater_celsius": celsius, "hours": hours or "until changed"}
