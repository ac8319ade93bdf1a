"""Development plugin: the reception desk of a small veterinary practice.

Visits, arrivals, calling staff, the reception screen and the kennel heating. A real
installation would talk to the practice software; this one keeps everything in SQLite.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from edged.plugin import ToolContext, tool

Vet = Literal["Dr Moreau", "Dr Okoye", "Nurse Kim", "groomer"]
Reason = Literal["check-up", "vaccination", "dental", "surgery", "grooming"]
Staff = Literal["Dr Moreau", "Dr Okoye", "Nurse Kim", "groomer", "kennel assistant"]


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "vet.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS visits(owner TEXT, pet TEXT, vet TEXT, "
                 "reason TEXT, at TEXT, arrived INTEGER DEFAULT 0)")
    conn.execute("CREATE TABLE IF NOT EXISTS calls(staff TEXT, message TEXT, urgent INTEGER)")
    conn.execute("CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT)")
    return conn


@tool(
    examples=[
        ("book Rex in with Dr Okoye on Monday at 11am for Helen Price",
         {"owner": "Helen Price", "pet": "Rex", "vet": "Dr Okoye", "when": "Monday 11:00"}),
        ("vaccination for Mittens with the nurse tomorrow at 4pm, owner Sam Ward",
         {"owner": "Sam Ward", "pet": "Mittens", "vet": "Nurse Kim", "when": "tomorrow 16:00",
          "reason": "vaccination"}),
    ],
    aliases={"vet": {"the nurse": "Nurse Kim", "nurse": "Nurse Kim"}},
)
def book_visit(owner: str, pet: str, vet: Vet, when: str, reason: Reason = "check-up",
               *, ctx: ToolContext) -> dict:
    """Book a visit for a pet with a vet.

    Args:
        owner: The owner's full name.
        pet: The pet's name.
        vet: Who the visit is with.
        when: Day and time of the visit, e.g. "Tuesday 09:30" or "tomorrow 14:00".
        reason: What the visit is for.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO visits(owner, pet, vet, reason, at) VALUES(?,?,?,?,?)",
                     (owner, pet, vet, reason, when))
    return {"booked": True, "owner": owner, "pet": pet, "vet": vet, "when": when}


@tool
def cancel_visit(pet: str, when: str = "", *, ctx: ToolContext) -> dict:
    """Cancel a pet's visit.

    Args:
        pet: The pet's name.
        when: Day and time of the visit to cancel; empty cancels the pet's next visit.
    """
    with _db(ctx) as conn:
        cur = conn.execute("DELETE FROM visits WHERE lower(pet) = lower(?)"
                           + (" AND lower(at) = lower(?)" if when else ""),
                           (pet, when) if when else (pet,))
    return {"cancelled": cur.rowcount > 0, "pet": pet}


@tool
def mark_arrived(pet: str, *, ctx: ToolContext) -> dict:
    """Mark a pet as arrived for its visit (checked in at reception).

    Args:
        pet: The pet's name.
    """
    with _db(ctx) as conn:
        cur = conn.execute("UPDATE visits SET arrived = 1 WHERE lower(pet) = lower(?)", (pet,))
    return {"pet": pet, "arrived": True, "had_visit": cur.rowcount > 0}


@tool
def call_staff(staff: Staff, message: str, urgent: bool = False, *, ctx: ToolContext) -> dict:
    """Call a member of staff on their handset with a short message.

    Args:
        staff: Who to call.
        message: What to tell them.
        urgent: True for an urgent call (it rings until answered).
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO calls VALUES(?,?,?)", (staff, message, int(urgent)))
    return {"called": staff, "urgent": urgent}


@tool
def set_reception_screen(message: str, *, ctx: ToolContext) -> dict:
    """Show a message on the screen above the reception desk.

    Args:
        message: The text to show; it replaces the current one. An empty text clears it.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO settings VALUES('screen', ?)", (message,))
    return {"screen": message or "(cleared)"}


@tool
def set_kennel_heating(celsius: Annotated[int, Meta(ge=10, le=30)], *,
                       ctx: ToolContext) -> dict:
    """Set the temperature of the kennel room where pets stay overnight.

    Args:
        celsius: Target temperature in degrees Celsius, 10-30.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO settings VALUES('kennel', ?)", (str(celsius),))
    return {"kennel_celsius": celsius}
