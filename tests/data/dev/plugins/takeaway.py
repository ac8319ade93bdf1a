"""Development plugin: a pizza and kebab takeaway.

Counter staff take orders at the till, the kitchen shouts things at the mic on the pass: dishes
going off and back on, order numbers to call over the shop speaker, the pizza oven, refunds.
A real shop would drive its EPOS, the order screen and the oven controller from here; this one
keeps everything in SQLite.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from edged.plugin import ToolContext, ToolError, tool

Fulfilment = Literal["collection", "delivery"]
PizzaSize = Literal["small", "medium", "large", "family"]
Deck = Literal["top", "bottom", "both"]
RefundReason = Literal["wrong item", "missing item", "cold food", "late delivery", "overcooked",
                       "cancelled", "other"]


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "takeaway.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS orders(id INTEGER PRIMARY KEY, customer TEXT, "
                 "items TEXT, fulfilment TEXT, phone TEXT, address TEXT, at REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS menu(dish TEXT, size TEXT DEFAULT '', "
                 "euros REAL, available INTEGER DEFAULT 1, PRIMARY KEY(dish, size))")
    conn.execute("CREATE TABLE IF NOT EXISTS portions(item TEXT PRIMARY KEY, left_ INTEGER)")
    conn.execute("CREATE TABLE IF NOT EXISTS refunds(order_no INTEGER, euros REAL, reason TEXT, "
                 "method TEXT, at REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS oven(deck TEXT PRIMARY KEY, celsius INTEGER)")
    return conn


def _key(name: str) -> str:
    return " ".join(name.lower().split())


@tool(examples=[("Dylan, a large pepperoni and chips to collect",
                 {"customer": "Dylan", "items": "a large pepperoni and chips",
                  "fulfilment": "collection"})])
def take_order(customer: str, items: str, fulfilment: Fulfilment, phone: str | None = None,
               address: str | None = None, *, ctx: ToolContext) -> dict:
    """Put a new order through to the kitchen screen and print the ticket.

    Args:
        customer: Name to put on the ticket.
        items: What they ordered, as said, with sizes and any changes ("no onions").
        fulfilment: Collection at the counter, or delivery by one of our drivers.
        phone: Contact number, digits only (e.g. 0871234567). Optional.
        address: Delivery address, if given.
    """
    if not items.strip():
        raise ToolError("the order has no items")
    with _db(ctx) as conn:
        cur = conn.execute("INSERT INTO orders(customer, items, fulfilment, phone, address, at) "
                           "VALUES(?,?,?,?,?,?)",
                           (customer, items, fulfilment, phone, address, time.time()))
    ticket = (cur.lastrowid or 0) % 1000 or 1
    return {"ticket_no": ticket, "customer": customer, "fulfilment": fulfilment}


@tool
def set_dish_available(dish: str, available: bool, *, ctx: ToolContext) -> dict:
    """Take a menu item off (sold out, "86") or put it back on the menu and the online shop.

    Args:
        dish: The menu item, e.g. "calzone", "garlic bread", "chicken wings".
        available: False when it has run out, True when it is back on.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO menu(dish, size, available) VALUES(?, '', ?) "
                     "ON CONFLICT(dish, size) DO UPDATE SET available = excluded.available",
                     (_key(dish), int(available)))
    return {"dish": dish, "available": available}


@tool
def change_price(what: str, price: Annotated[float, Meta(gt=0, le=100)],
                 size: PizzaSize | None = None, *, ctx: ToolContext) -> dict:
    """Change the menu price of a dish or drink (till and online menu).

    Args:
        what: The dish or drink, without the size.
        price: New price in euros, e.g. 12.5.
        size: Pizza size the price is for; leave out for things that have one size.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO menu(dish, size, euros) VALUES(?,?,?) "
                     "ON CONFLICT(dish, size) DO UPDATE SET euros = excluded.euros",
                     (_key(what), size or "", round(price, 2)))
    return {"what": what, "size": size, "euros": round(price, 2)}


@tool
async def call_order(ticket_no: Annotated[int, Meta(ge=1, le=999)],
                     repeat: Annotated[int, Meta(ge=1, le=3)] = 1, *,
                     ctx: ToolContext) -> dict:
    """Call an order as ready over the shop speaker and flash it on the collection screen.

    Args:
        ticket_no: The number printed on the customer's ticket (1-999).
        repeat: How many times the speaker says it, 1-3.
    """
    if ctx.publish is not None:
        for _ in range(repeat):
            await ctx.publish("takeaway/speaker/say", f"Order number {ticket_no}, please")
    return {"called": ticket_no, "times": repeat}


@tool
def set_oven_temp(temp_c: Annotated[int, Meta(ge=150, le=450)], deck: Deck = "both", *,
                  ctx: ToolContext) -> dict:
    """Set the pizza oven's target temperature.

    Args:
        temp_c: Target in degrees Celsius, 150-450.
        deck: Which deck of the oven; both unless said.
    """
    decks = ["top", "bottom"] if deck == "both" else [deck]
    with _db(ctx) as conn:
        for d in decks:
            conn.execute("INSERT OR REPLACE INTO oven VALUES(?, ?)", (d, temp_c))
    return {"deck": deck, "celsius": temp_c}


@tool
def portions_left(item: str, *, ctx: ToolContext) -> dict:
    """Look up how many portions of a prepped item are left (doner meat, dough balls, ...).

    Args:
        item: What to count, as said.
    """
    with _db(ctx) as conn:
        row = conn.execute("SELECT left_ FROM portions WHERE item = ?", (_key(item),)).fetchone()
    if row is None:
        raise ToolError(f"no count kept for {item}")
    return {"item": item, "portions_left": row[0]}


@tool
def record_refund(order_number: Annotated[int, Meta(ge=1, le=999)],
                  amount: Annotated[float, Meta(gt=0, le=250)], reason: RefundReason,
                  method: Literal["card", "cash"] = "card", *, ctx: ToolContext) -> dict:
    """Record money given back to a customer against one of today's orders.

    Args:
        order_number: The ticket number of the order.
        amount: Amount refunded in euros.
        reason: Why, for the end-of-day report.
        method: Back onto their card or cash from the till.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO refunds VALUES(?,?,?,?,?)",
                     (order_number, round(amount, 2), reason, method, time.time()))
    return {"order": order_number, "refunded_eur": round(amount, 2), "reason": reason,
            "method": method}
