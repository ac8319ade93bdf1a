"""Development plugin: the reception desk of a dental practice.

The receptionist works the diary, checks patients in, pages the surgeries, lets people in at
the entrance and runs the screen in the waiting room, by voice on a headset or at the
keyboard. A real installation would talk to the practice management system, the door
controller and the signage player; this one keeps everything in SQLite.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from edged.plugin import ToolContext, ToolError, tool

Clinician = Literal["Dr Byrne", "Dr Nakamura", "Dr Osei", "hygienist"]
Treatment = Literal["check-up", "scale and polish", "filling", "extraction", "root canal",
                    "crown", "whitening", "emergency"]
Staff = Literal["Dr Byrne", "Dr Nakamura", "Dr Osei", "hygienist", "dental nurse",
                "practice manager", "everyone"]


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "dental.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS diary(id INTEGER PRIMARY KEY, patient TEXT, "
                 "clinician TEXT, starts TEXT, treatment TEXT, minutes INTEGER, "
                 "new_patient INTEGER, status TEXT DEFAULT 'booked', note TEXT DEFAULT '')")
    conn.execute("CREATE TABLE IF NOT EXISTS pages(staff TEXT, message TEXT, urgency TEXT, "
                 "sent REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS devices(key TEXT PRIMARY KEY, value TEXT)")
    return conn


_BY_NAME = "(lower(patient) = ? OR lower(patient) LIKE ?)"


def _match(patient: str) -> tuple[str, str]:
    """Parameters for _BY_NAME: full name, or surname with or without a title."""
    words = patient.replace(".", "").split()
    if words and words[0].lower() in {"mr", "mrs", "ms", "miss", "mx", "dr", "master"}:
        words = words[1:]
    name = " ".join(words).lower()
    return name, "% " + name


@tool
def book_appointment(patient_name: str, clinician: Clinician, starts_at: str,
                     treatment: Treatment = "check-up",
                     duration_min: Annotated[int, Meta(ge=10, le=180)] = 30,
                     new_patient: bool = False, *, ctx: ToolContext) -> dict:
    """Book a patient into a dentist's or the hygienist's diary.

    Args:
        patient_name: The patient's name as it goes on their record.
        clinician: Whose diary: one of the dentists, or the hygienist.
        starts_at: Day and 24-hour start time, e.g. "Tuesday 10:30", "tomorrow 08:15" or
            "14 March 16:00".
        treatment: What the appointment is for. "emergency" is an unplanned pain/trauma slot.
        duration_min: Minutes to block out, 10-180.
        new_patient: The patient isn't registered with the practice yet (sends the
            registration forms).
    """
    with _db(ctx) as conn:
        clash = conn.execute("SELECT patient FROM diary WHERE clinician = ? AND "
                             "lower(starts) = lower(?) AND status = 'booked'",
                             (clinician, starts_at)).fetchone()
        if clash:
            raise ToolError(f"{clinician} already has {clash[0]} at {starts_at}")
        cur = conn.execute("INSERT INTO diary(patient, clinician, starts, treatment, minutes, "
                           "new_patient) VALUES(?,?,?,?,?,?)",
                           (patient_name, clinician, starts_at, treatment, duration_min,
                            int(new_patient)))
    return {"appointment": cur.lastrowid, "patient": patient_name, "with": clinician,
            "at": starts_at, "treatment": treatment, "minutes": duration_min}


@tool
def cancel_appointment(who: str, on: str = "",
                       reason: Literal["patient cancelled", "did not attend",
                                       "practice cancelled"] = "patient cancelled",
                       late_fee: bool = False, *, ctx: ToolContext) -> dict:
    """Take an appointment out of the diary.

    Args:
        who: The patient (full name, or title and surname).
        on: Day of the appointment, optionally with its 24-hour time ("Thursday",
            "Thursday 15:45"). Empty cancels the patient's next appointment.
        reason: patient cancelled, did not attend (no-show, goes on their record) or practice
            cancelled (clinician off, equipment down).
        late_fee: Charge the late cancellation fee (under 24 hours' notice).
    """
    name, like = _match(who)
    sql = f"UPDATE diary SET status = ?, note = ? WHERE {_BY_NAME} AND status = 'booked'"
    params: list = [reason, "late fee" if late_fee else "", name, like]
    if on:
        sql += " AND lower(starts) LIKE ?"
        params.append(on.lower() + "%")
    with _db(ctx) as conn:
        cur = conn.execute(sql, params)
    return {"cancelled": cur.rowcount, "patient": who, "reason": reason, "late_fee": late_fee}


@tool
def reschedule(patient: str, new_start: str, currently: str = "",
               clinician: Clinician | None = None, *, ctx: ToolContext) -> dict:
    """Move a patient's appointment to another time, and optionally to another clinician.

    Args:
        patient: Who the appointment is for.
        new_start: The new day and 24-hour time, same format as when booking
            ("Friday 09:00").
        currently: When it's booked now (day, optionally with time). Only needed when the
            patient has more than one appointment coming up.
        clinician: Move it into this diary instead; leave out to keep the same clinician.
    """
    name, like = _match(patient)
    sql = f"SELECT id, clinician FROM diary WHERE {_BY_NAME} AND status = 'booked'"
    params: list = [name, like]
    if currently:
        sql += " AND lower(starts) LIKE ?"
        params.append(currently.lower() + "%")
    with _db(ctx) as conn:
        row = conn.execute(sql + " ORDER BY id LIMIT 1", params).fetchone()
        if row is None:
            raise ToolError(f"no appointment found for {patient}")
        conn.execute("UPDATE diary SET starts = ?, clinician = ? WHERE id = ?",
                     (new_start, clinician or row[1], row[0]))
    return {"appointment": row[0], "patient": patient, "now_at": new_start,
            "with": clinician or row[1]}


@tool
def check_in(who: str, late_minutes: Annotated[int, Meta(ge=0, le=90)] = 0,
             history_form_done: bool = False, *, ctx: ToolContext) -> dict:
    """Mark a patient as arrived; their clinician sees them in the surgery's queue.

    Args:
        who: The patient, as reception knows them ("Mrs Patel", "Tom Hughes").
        late_minutes: How many minutes late they arrived, if late.
        history_form_done: They have filled in the updated medical history form at the desk.
    """
    name, like = _match(who)
    with _db(ctx) as conn:
        cur = conn.execute(f"UPDATE diary SET status = 'arrived', note = ? WHERE {_BY_NAME} "
                           "AND status = 'booked'",
                           (f"late {late_minutes} min" if late_minutes else "", name, like))
    return {"patient": who, "arrived": True, "late_minutes": late_minutes,
            "found_in_diary": cur.rowcount > 0, "history_form": history_form_done}


@tool
def page_staff(to: Staff, message: str,
               urgency: Literal["routine", "urgent", "emergency"] = "routine", *,
               ctx: ToolContext) -> dict:
    """Send a message to a member of staff's pager (or everyone's).

    Args:
        to: Who to page.
        message: The text that appears on the pager.
        urgency: routine; urgent (pager keeps beeping until acknowledged); emergency (medical
            emergency: also sounds the alarm tone in every surgery).
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO pages VALUES(?,?,?,?)", (to, message, urgency, time.time()))
    return {"paged": to, "urgency": urgency}


@tool
def entrance(action: Literal["buzz", "unlock", "lock"],
             door: Literal["front", "staff"] = "front",
             seconds: Annotated[int, Meta(ge=2, le=20)] = 5, *, ctx: ToolContext) -> dict:
    """Work the entrance doors from the desk.

    Args:
        action: buzz (release the latch briefly to let someone in), unlock (leave it open,
            e.g. at opening time) or lock.
        door: front (patients' entrance) or staff (the back door by the car park).
        seconds: How long a buzz keeps the latch released.
    """
    state = {"buzz": "locked", "unlock": "unlocked", "lock": "locked"}[action]
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO devices VALUES(?, ?)", (f"door:{door}", state))
    return {"door": door, "action": action, "state": state,
            **({"released_for_s": seconds} if action == "buzz" else {})}


@tool
def waiting_room_display(mode: Literal["welcome", "oral health tips", "running late",
                                       "notice", "off"],
                         notice: str = "",
                         running_late_by: Annotated[int, Meta(ge=0, le=180)] = 0, *,
                         ctx: ToolContext) -> dict:
    """Change what the TV in the waiting room shows.

    Args:
        mode: welcome (practice logo and opening hours), oral health tips (the default
            loop), running late (apology banner), notice (your own text) or off.
        notice: For mode "notice": the text to show.
        running_late_by: For mode "running late": about how many minutes behind; 0 leaves
            the number off.
    """
    if mode == "notice" and not notice.strip():
        raise ToolError("a notice needs some text")
    shown = {"notice": notice, "running late": f"running late {running_late_by} min"
             if running_late_by else "running late"}.get(mode, mode)
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO devices VALUES('screen', ?)", (shown,))
    return {"screen": shown}
