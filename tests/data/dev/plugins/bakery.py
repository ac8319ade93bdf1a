"""Bakery counter: prices, stock, customer orders, offers, the oven and shop announcements.

The state lives in a small SQLite file. A real shop would drive its till, the oven controller
and the shop speakers from here; this one records what it was asked to do.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from edged.plugin import ToolContext, ToolError, tool

Unit = Literal["pieces", "kilograms", "grams", "litres"]


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "bakery.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS prices(item TEXT PRIMARY KEY, euros REAL, "
                 "percent_off INTEGER DEFAULT 0)")
    conn.execute("CREATE TABLE IF NOT EXISTS stock(item TEXT, unit TEXT, quantity REAL, "
                 "PRIMARY KEY(item, unit))")
    conn.execute("CREATE TABLE IF NOT EXISTS orders(id INTEGER PRIMARY KEY, customer TEXT, "
                 "items TEXT, pickup TEXT, paid INTEGER, at REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS oven(id INTEGER PRIMARY KEY CHECK (id = 1), "
                 "on_ INTEGER, celsius INTEGER)")
    return conn


def _key(item: str) -> str:
    return " ".join(item.lower().split())


@tool
def set_price(item: str, euros: Annotated[float, Meta(ge=0, le=500)],
              *, ctx: ToolContext) -> dict:
    """Set the price of an item on the counter price list.

    Args:
        item: The item, as said (e.g. "croissants", "sourdough loaf").
        euros: The new price in euros, 0-500 (two forty = 2.40, ninety cents = 0.90).
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO prices(item, euros) VALUES(?,?) ON CONFLICT(item) "
                     "DO UPDATE SET euros = excluded.euros", (_key(item), round(euros, 2)))
    return {"item": item, "euros": round(euros, 2)}


@tool(
    examples=[
        ("we sold ten scones", {"item": "scones", "quantity": -10, "unit": "pieces"}),
        ("3 kilos of rye flour came in", {"item": "rye flour", "quantity": 3,
                                          "unit": "kilograms"}),
    ],
    aliases={"unit": {"kilos": "kilograms", "kilo": "kilograms", "kg": "kilograms",
                      "g": "grams", "gram": "grams", "pcs": "pieces", "piece": "pieces",
                      "liters": "litres", "litre": "litres", "l": "litres"}},
)
def record_stock(item: str, quantity: float, unit: Unit, *, ctx: ToolContext) -> dict:
    """Record stock coming in or going out (delivered, baked, sold, used, thrown away).

    Args:
        item: The item or ingredient, as said.
        quantity: How much; positive for stock in (delivered, baked), negative for stock
            out (sold, used, wasted). A dozen is 12.
        unit: The unit of the quantity: pieces for things that are counted.
    """
    if quantity == 0:
        raise ToolError("a quantity of 0 changes nothing")
    with _db(ctx) as conn:
        conn.execute("INSERT INTO stock VALUES(?,?,?) ON CONFLICT(item, unit) DO UPDATE SET "
                     "quantity = quantity + excluded.quantity", (_key(item), unit, quantity))
        level = conn.execute("SELECT quantity FROM stock WHERE item = ? AND unit = ?",
                             (_key(item), unit)).fetchone()[0]
    return {"item": item, "change": quantity, "unit": unit, "in_stock": level}


@tool
def take_order(customer: str, items: str, pickup: str, paid: bool = False,
               *, ctx: ToolContext) -> dict:
    """Take a customer order to be collected later.

    Args:
        customer: The customer's name, as said.
        items: What they ordered, as free text (e.g. "two sourdough loaves and a baguette").
        pickup: Pickup day and time as "<Day> <H:MM>" on a 24-hour clock, e.g.
            "Saturday 10:30" or "Friday 8:00".
        paid: True when the customer has already paid; False when they pay at pickup.
    """
    if not items.strip():
        raise ToolError("the order has no items")
    with _db(ctx) as conn:
        cur = conn.execute("INSERT INTO orders(customer, items, pickup, paid, at) "
                           "VALUES(?,?,?,?,?)", (customer, items, pickup, int(paid), time.time()))
    return {"order": cur.lastrowid, "customer": customer, "pickup": pickup, "paid": paid}


@tool
def put_on_offer(item: str, percent_off: Annotated[int, Meta(ge=1, le=90)],
                 *, ctx: ToolContext) -> dict:
    """Put an item on offer at a discount.

    Args:
        item: The item, as said.
        percent_off: Discount in percent, 1-90 (half price = 50).
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO prices(item, euros, percent_off) VALUES(?, NULL, ?) "
                     "ON CONFLICT(item) DO UPDATE SET percent_off = excluded.percent_off",
                     (_key(item), percent_off))
        row = conn.execute("SELECT euros FROM prices WHERE item = ?", (_key(item),)).fetchone()
    out: dict = {"item": item, "percent_off": percent_off}
    if row and row[0] is not None:
        out["offer_price"] = round(row[0] * (100 - percent_off) / 100, 2)
    return out


@tool
def switch_oven(on: bool, *, ctx: ToolContext) -> dict:
    """Switch the oven on or off (it heats to the last temperature set).

    Args:
        on: True to switch the oven on, False to switch it off.
    """
    with _db(ctx) as conn:
        row = conn.execute("SELECT celsius FROM oven WHERE id = 1").fetchone()
        celsius = row[0] if row else 180
        conn.execute("INSERT OR REPLACE INTO oven VALUES(1, ?, ?)", (int(on), celsius))
    return {"on": on, "celsius": celsius if on else 0}


@tool
def set_oven_temperature(celsius: Annotated[int, Meta(ge=50, le=300)],
                         *, ctx: ToolContext) -> dict:
    """Set the oven's temperature; switches the oven on if it is off.

    Args:
        celsius: Target temperature in degrees Celsius, 50-300.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO oven VALUES(1, 1, ?)", (celsius,))
    return {"on": True, "celsius": celsius}


@tool
async def announce(message: str, chime: bool = True, *, ctx: ToolContext) -> dict:
    """Announce a message over the shop speakers.

    Args:
        message: What to say, without "announce that".
        chime: True to play the chime before the message; False to speak without it.
    """
    if not message.strip():
        raise ToolError("nothing to announce")
    if ctx.publish is not None:
        await ctx.publish("bakery/speaker/say", ("[chime] " if chime else "") + message)
    return {"announced": message, "chime": chime}
