"""Development plugin: the support desk of a small internet provider.

Agents take calls on a headset and work the customer's account while they talk: pull up the
account or an order, open and update tickets, test the line, reboot the customer's router,
book an engineer and put credits on the bill. A real installation would talk to the BSS/OSS
and the ACS that manages the routers; this one keeps everything in SQLite.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from edged.plugin import ToolContext, ToolError, tool


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "helpdesk.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS tickets(id INTEGER PRIMARY KEY, account TEXT, "
                 "summary TEXT, priority TEXT, status TEXT, updated REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS visits(id INTEGER PRIMARY KEY, account TEXT, "
                 "slot TEXT, hours REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS credits(id INTEGER PRIMARY KEY, account TEXT, "
                 "amount REAL, reason TEXT, to_card INTEGER, created REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS jobs(id INTEGER PRIMARY KEY, account TEXT, "
                 "kind TEXT, detail TEXT, due REAL)")
    # Ticket numbers on the desk start at 1000.
    conn.execute("INSERT OR IGNORE INTO tickets(id, account, summary, priority, status, "
                 "updated) VALUES(999, '', 'seed', 'low', 'closed', 0)")
    return conn


def _acct(account: str) -> str:
    return "".join(account.split())


@tool
def lookup(number: str, kind: Literal["account", "order"] = "account", *,
           ctx: ToolContext) -> dict:
    """Pull up a customer account or an order on the desk screen.

    Shows the account holder, their plan and open tickets, or for an order what was
    ordered and where the delivery/activation is at.

    Args:
        number: The account or order number, as the customer reads it out.
        kind: Whether the number is an account number or an order number.
    """
    number = _acct(number)
    with _db(ctx) as conn:
        open_tickets = conn.execute("SELECT id, summary, status FROM tickets WHERE account = ? "
                                    "AND status NOT IN ('resolved', 'closed')",
                                    (number,)).fetchall()
    if kind == "order":
        return {"order": number, "state": "unknown"}
    return {"account": number, "open_tickets": [
        {"ticket": t, "summary": s, "status": st} for t, s, st in open_tickets]}


@tool
def open_ticket(account: str, summary: str,
                priority: Literal["low", "normal", "high", "urgent"] = "normal", *,
                ctx: ToolContext) -> dict:
    """Open a support ticket on a customer's account.

    Args:
        account: The customer's account number.
        summary: One line describing the problem, in the customer's words.
        priority: low, normal, high, or urgent (whole site / business customer down).
    """
    with _db(ctx) as conn:
        cur = conn.execute("INSERT INTO tickets(account, summary, priority, status, updated) "
                           "VALUES(?,?,?,?,?)",
                           (_acct(account), summary, priority, "open", time.time()))
    return {"ticket": cur.lastrowid, "account": _acct(account), "priority": priority}


@tool
def set_ticket_status(ticket: Annotated[int, Meta(ge=1000)],
                      status: Literal["open", "pending", "escalated", "resolved", "closed"],
                      notify_customer: bool = True, *, ctx: ToolContext) -> dict:
    """Move a ticket to another status.

    Args:
        ticket: The ticket number.
        status: open (also to reopen), pending (waiting on the customer), escalated (to
            second line), resolved or closed.
        notify_customer: Email the customer about the change.
    """
    with _db(ctx) as conn:
        cur = conn.execute("UPDATE tickets SET status = ?, updated = ? WHERE id = ?",
                           (status, time.time(), ticket))
    if cur.rowcount == 0:
        raise ToolError(f"no ticket {ticket}")
    return {"ticket": ticket, "status": status, "customer_notified": notify_customer}


@tool
def line_test(account: str, extended: bool = False, *, ctx: ToolContext) -> dict:
    """Run a diagnostic on the customer's line from the exchange side.

    The standard test takes under a minute and doesn't interrupt service. The extended
    test checks noise, attenuation and sync over about ten minutes and drops the connection
    while it runs.

    Args:
        account: The customer's account number.
        extended: Run the extended test instead of the standard one.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO jobs(account, kind, detail, due) VALUES(?,?,?,?)",
                     (_acct(account), "line test", "extended" if extended else "standard",
                      time.time()))
    return {"account": _acct(account), "test": "extended" if extended else "standard",
            "result": "pending"}


@tool
def restart_router(account: str,
                   delay_minutes: Annotated[int, Meta(ge=0, le=240)] = 0,
                   factory_reset: bool = False, *, ctx: ToolContext) -> dict:
    """Remotely reboot the customer's router (CPE).

    Args:
        account: The customer's account number.
        delay_minutes: Wait this many minutes before rebooting, 0-240.
        factory_reset: Wipe the router back to factory settings (customer's wifi name and
            password are lost) instead of a plain reboot.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO jobs(account, kind, detail, due) VALUES(?,?,?,?)",
                     (_acct(account), "reboot", "factory reset" if factory_reset else "reboot",
                      time.time() + 60 * delay_minutes))
    return {"account": _acct(account), "in_minutes": delay_minutes,
            "factory_reset": factory_reset}


@tool
def book_technician(account: str, slot: str,
                    duration_hours: Annotated[float, Meta(ge=0.5, le=6)] = 1.0, *,
                    ctx: ToolContext) -> dict:
    """Book a field engineer to visit the customer's premises.

    Args:
        account: The customer's account number.
        slot: When the customer wants the visit, e.g. "Thursday morning" or "3 May 2pm".
        duration_hours: Hours to block in the engineer's diary (0.5-6).
    """
    with _db(ctx) as conn:
        cur = conn.execute("INSERT INTO visits(account, slot, hours) VALUES(?,?,?)",
                           (_acct(account), slot, duration_hours))
    return {"visit": cur.lastrowid, "account": _acct(account), "slot": slot,
            "hours": duration_hours}


@tool
def issue_credit(account: str, amount: Annotated[float, Meta(gt=0, le=500)],
                 reason: Literal["outage", "billing error", "missed visit", "goodwill"]
                 = "goodwill",
                 to_card: bool = False, *, ctx: ToolContext) -> dict:
    """Put a credit on the customer's account, or refund it to their card.

    Args:
        account: The customer's account number.
        amount: Amount in euros.
        reason: Why, for the monthly report: outage, billing error, missed visit (engineer
            no-show) or goodwill.
        to_card: Refund to the card on file instead of taking it off the next bill.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO credits(account, amount, reason, to_card, created) "
                     "VALUES(?,?,?,?,?)", (_acct(account), amount, reason, int(to_card),
                                           time.time()))
    return {"account": _acct(account), "amount_eur": amount, "reason": reason,
            "refunded_to_card": to_card}
