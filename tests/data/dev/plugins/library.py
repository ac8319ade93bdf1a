"""Library front desk: loans, returns, reservations, staff pager and the noticeboard.

State is kept in a small SQLite file, so that loans and reservations survive restarts. A real
installation would talk to the library management system from these functions.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Annotated

from msgspec import Meta

from edged.plugin import ToolContext, ToolError, tool


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "library.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS loans(title TEXT PRIMARY KEY, member TEXT, "
                 "due REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS reservations(id INTEGER PRIMARY KEY, title TEXT, "
                 "member TEXT, note TEXT, at REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS returns(id INTEGER PRIMARY KEY, title TEXT, "
                 "member TEXT, damaged INTEGER, at REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS pages(id INTEGER PRIMARY KEY, colleague TEXT, "
                 "message TEXT, urgent INTEGER, at REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS notice(id INTEGER PRIMARY KEY CHECK (id = 1), "
                 "message TEXT)")
    return conn


def _key(title: str) -> str:
    return " ".join(title.lower().split())


@tool(
    examples=[
        ("lend Brave New World to Alice Carter for three weeks",
         {"member": "Alice Carter", "title": "Brave New World", "days": 21}),
        ("check out Beloved for Tom", {"member": "Tom", "title": "Beloved"}),
    ],
)
def lend_book(member: str, title: str, days: Annotated[int, Meta(ge=1, le=60)] = 14,
              *, ctx: ToolContext) -> dict:
    """Lend (check out) a book to a library member.

    Args:
        member: The member's name, as said.
        title: The book's title, without the author.
        days: Loan length in days, 1-60 (a week is 7 days, a fortnight 14).
    """
    if not title.strip() or not member.strip():
        raise ToolError("both a member and a title are needed")
    due = time.time() + days * 86400
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO loans VALUES(?,?,?)", (_key(title), member, due))
    return {"member": member, "title": title, "days": days,
            "due": time.strftime("%Y-%m-%d", time.localtime(due))}


@tool
def return_book(title: str, member: str = "", damaged: bool = False,
                *, ctx: ToolContext) -> dict:
    """Take a book back (check it in) at the desk or from the returns box.

    Args:
        title: The book's title, without the author.
        member: Who brought it back, if said; empty when not known.
        damaged: True when the book came back damaged (torn, stained, wet, missing pages).
    """
    with _db(ctx) as conn:
        row = conn.execute("SELECT member FROM loans WHERE title = ?", (_key(title),)).fetchone()
        conn.execute("DELETE FROM loans WHERE title = ?", (_key(title),))
        conn.execute("INSERT INTO returns(title, member, damaged, at) VALUES(?,?,?,?)",
                     (title, member or (row[0] if row else ""), int(damaged), time.time()))
    return {"title": title, "was_on_loan": bool(row), "damaged": damaged}


@tool
def reserve_title(member: str, title: str, note: str = "", *, ctx: ToolContext) -> dict:
    """Reserve (put a hold on) a title for a member, with an optional note for the staff.

    Args:
        member: The member's name, as said.
        title: The book's title, without the author.
        note: A short note kept with the reservation (edition wanted, when they collect,
            how to reach them); empty for none.
    """
    with _db(ctx) as conn:
        cur = conn.execute("INSERT INTO reservations(title, member, note, at) VALUES(?,?,?,?)",
                           (title, member, note.strip(), time.time()))
        queue = conn.execute("SELECT COUNT(*) FROM reservations WHERE lower(title) = ?",
                             (_key(title),)).fetchone()[0]
    return {"reservation": cur.lastrowid, "member": member, "title": title,
            "place_in_queue": queue}


@tool(
    examples=[
        ("tell Joe that the delivery is at the back door",
         {"colleague": "Joe", "message": "the delivery is at the back door"}),
    ],
)
async def page_colleague(colleague: str, message: str, urgent: bool = False,
                         *, ctx: ToolContext) -> dict:
    """Page a colleague on the staff pager with a short message.

    Args:
        colleague: Who to page (first name or name as said).
        message: The message itself, without "tell ... that".
        urgent: True for an urgent page (emergency, right now); False for a normal one.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO pages(colleague, message, urgent, at) VALUES(?,?,?,?)",
                     (colleague, message, int(urgent), time.time()))
    if ctx.publish is not None:
        slug = "-".join(colleague.lower().split()) or "all"
        await ctx.publish(f"library/pager/{slug}",
                          ("URGENT: " if urgent else "") + message)
    return {"colleague": colleague, "sent": True, "urgent": urgent}


@tool
def set_noticeboard(message: str, *, ctx: ToolContext) -> dict:
    """Set the message shown on the noticeboard screen by the entrance.

    Args:
        message: The text to show; an empty string clears the noticeboard.
    """
    message = message.strip()
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO notice VALUES(1, ?)", (message,))
    return {"noticeboard": message, "cleared": not message}


@tool
def check_shelf(title: str, *, ctx: ToolContext) -> dict:
    """Look up whether a title is on the shelf (in) or out on loan.

    Args:
        title: The book's title, without the author.
    """
    with _db(ctx) as conn:
        row = conn.execute("SELECT due FROM loans WHERE title = ?", (_key(title),)).fetchone()
        holds = conn.execute("SELECT COUNT(*) FROM reservations WHERE lower(title) = ?",
                             (_key(title),)).fetchone()[0]
    if row:
        return {"title": title, "on_shelf": False,
                "due": time.strftime("%Y-%m-%d", time.localtime(row[0])), "holds": holds}
    return {"title": title, "on_shelf": True, "holds": holds}
