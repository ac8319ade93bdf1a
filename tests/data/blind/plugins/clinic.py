"""Example plugin: the front desk of a small clinic.

Appointments, patient check-in, paging staff, the waiting-room display and the entrance door.
A real installation would talk to the practice management system and the door controller;
this one keeps everything in a small SQLite file.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Literal

from edged.plugin import ToolContext, tool

Practitioner = Literal["Dr Patel", "Dr Nguyen", "Nurse Adams", "physiotherapist"]
Service = Literal["consultation", "vaccination", "blood test", "dressing change", "physio"]
Staff = Literal["Dr Patel", "Dr Nguyen", "Nurse Adams", "physiotherapist", "practice manager"]


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "clinic.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS appointments(patient TEXT, practitioner TEXT, "
                 "service TEXT, at TEXT, checked_in REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS pages(staff TEXT, message TEXT, urgent INTEGER, "
                 "sent REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT)")
    return conn


@tool(
    examples=[
        ("book Maria Lopez in with Dr Patel tomorrow at 10am",
         {"patient": "Maria Lopez", "practitioner": "Dr Patel", "when": "tomorrow 10:00"}),
        ("flu jab for John Smith with the nurse on Friday at 2:30",
         {"patient": "John Smith", "practitioner": "Nurse Adams", "when": "Friday 14:30",
          "service": "vaccination"}),
    ],
    aliases={"practitioner": {"the nurse": "Nurse Adams", "nurse": "Nurse Adams",
                              "physio": "physiotherapist"}},
)
def book_appointment(patient: str, practitioner: Practitioner, when: str,
                     service: Service = "consultation", *, ctx: ToolContext) -> dict:
    """Book an appointment for a patient with a practitioner.

    Args:
        patient: The patient's full name.
        practitioner: Who the appointment is with.
        when: Day and time of the appointment, e.g. "Tuesday 09:30" or "tomorrow 14:00".
        service: What the appointment is for.
    """
    with _db(ctx) as conn:
        taken = conn.execute("SELECT patient FROM appointments WHERE practitioner = ? AND "
                             "lower(at) = lower(?)", (practitioner, when)).fetchone()
        if taken:
            return {"booked": False, "reason": f"{practitioner} is already booked at {when}"}
        conn.execute("INSERT INTO appointments VALUES(?,?,?,?,NULL)",
                     (patient, practitioner, service, when))
    return {"booked": True, "patient": patient, "practitioner": practitioner,
            "service": service, "when": when}


@tool
def cancel_appointment(patient: str, when: str = "", *, ctx: ToolContext) -> dict:
    """Cancel a patient's appointment.

    Args:
        patient: The patient's full name.
        when: Day and time of the appointment to cancel; leave empty to cancel the patient's
            next appointment.
    """
    with _db(ctx) as conn:
        if when:
            row = conn.execute("SELECT rowid, practitioner, at FROM appointments WHERE "
                               "lower(patient) = lower(?) AND lower(at) = lower(?)",
                               (patient, when)).fetchone()
        else:
            row = conn.execute("SELECT rowid, practitioner, at FROM appointments WHERE "
                               "lower(patient) = lower(?) ORDER BY rowid LIMIT 1",
                               (patient,)).fetchone()
        if not row:
            return {"cancelled": False, "reason": f"no appointment found for {patient}"}
        conn.execute("DELETE FROM appointments WHERE rowid = ?", (row[0],))
    return {"cancelled": True, "patient": patient, "practitioner": row[1], "when": row[2]}


@tool(examples=["Sam Carter has arrived"])
def check_in_patient(patient: str, *, ctx: ToolContext) -> dict:
    """Mark a patient as arrived for their appointment.

    Args:
        patient: The patient's full name.
    """
    with _db(ctx) as conn:
        row = conn.execute("SELECT rowid, practitioner, at FROM appointments WHERE "
                           "lower(patient) = lower(?) AND checked_in IS NULL ORDER BY rowid "
                           "LIMIT 1", (patient,)).fetchone()
        if row:
            conn.execute("UPDATE appointments SET checked_in = ? WHERE rowid = ?",
                         (time.time(), row[0]))
    if not row:
        return {"checked_in": True, "patient": patient, "appointment": None,
                "note": "walk-in, no booked appointment"}
    return {"checked_in": True, "patient": patient, "practitioner": row[1], "when": row[2]}


@tool(
    examples=[
        ("page Dr Nguyen, room 2 needs her", {"staff": "Dr Nguyen",
                                              "message": "room 2 needs you"}),
    ],
)
def page_staff(staff: Staff, message: str, urgent: bool = False, *, ctx: ToolContext) -> dict:
    """Send a page to a member of staff's pager.

    Args:
        staff: Who to page.
        message: The text of the page.
        urgent: True for an urgent page (repeats and buzzes until acknowledged).
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO pages VALUES(?,?,?,?)", (staff, message, int(urgent),
                                                           time.time()))
    return {"paged": staff, "message": message, "urgent": urgent}


@tool
def set_waiting_room_display(message: str, *, ctx: ToolContext) -> dict:
    """Show a message on the screen in the waiting room.

    Args:
        message: The text to show; it replaces the current message. An empty text clears it.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO settings VALUES('display', ?)", (message,))
    return {"display": message or "(cleared)"}


@tool
def set_entrance_door(open: bool, *, ctx: ToolContext) -> dict:
    """Open or close the automatic entrance door of the clinic.

    Args:
        open: True to open the door (and hold it open), False to close it.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO settings VALUES('door', ?)",
                     ("open" if open else "closed",))
    return {"entrance_door": "open" if open else "closed"}
