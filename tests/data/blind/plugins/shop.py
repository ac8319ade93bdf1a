"""Example plugin: a small delicatessen shop.

Prices, stock, sales, the shop sign, the front shutter and the PA. A real installation would
talk to the till system and the shopfront controllers; this one keeps its state in SQLite.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from edged.plugin import ToolContext, tool

# item -> (price in euros, stock, unit); stock is kept in grams or as a count
_STARTING_STOCK = {
    "coffee beans": (14.50, 2500, "grams"),
    "cheddar": (3.20, 1800, "grams"),
    "olives": (2.80, 1200, "grams"),
    "sourdough loaf": (4.50, 12, "count"),
    "olive oil": (9.90, 8, "count"),
    "eggs": (0.40, 60, "count"),
}


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "shop.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS items(name TEXT PRIMARY KEY, price REAL, "
                 "stock REAL, unit TEXT, discount INTEGER DEFAULT 0)")
    conn.execute("CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT)")
    if not conn.execute("SELECT count(*) FROM items").fetchone()[0]:
        conn.executemany("INSERT INTO items(name, price, stock, unit) VALUES(?,?,?,?)",
                         [(k, *v) for k, v in _STARTING_STOCK.items()])
    return conn


def _name(item: str) -> str:
    return " ".join(item.lower().split())


@tool(examples=[("the sourdough is 5 euros now", {"item": "sourdough loaf", "price": 5.0})])
def set_price(item: str, price: Annotated[float, Meta(gt=0, le=1000)],
              *, ctx: ToolContext) -> dict:
    """Set the regular shelf price of an item.

    Args:
        item: The item's name, e.g. "coffee beans".
        price: New price in euros (per item, or per kilogram for things sold by weight).
    """
    item = _name(item)
    with _db(ctx) as conn:
        if conn.execute("UPDATE items SET price = ? WHERE name = ?", (price, item)).rowcount == 0:
            conn.execute("INSERT INTO items(name, price, stock, unit) VALUES(?,?,0,'count')",
                         (item, price))
    return {"item": item, "price": round(price, 2)}


@tool
def put_on_sale(item: str, discount_percent: Annotated[int, Meta(ge=0, le=90)],
                *, ctx: ToolContext) -> dict:
    """Put an item on sale at a discount off its regular price.

    Args:
        item: The item's name.
        discount_percent: Discount in percent, 0-90. 0 ends the sale.
    """
    item = _name(item)
    with _db(ctx) as conn:
        row = conn.execute("SELECT price FROM items WHERE name = ?", (item,)).fetchone()
        if not row:
            return {"item": item, "error": "not an item we sell"}
        conn.execute("UPDATE items SET discount = ? WHERE name = ?", (discount_percent, item))
    return {"item": item, "discount_percent": discount_percent,
            "sale_price": round(row[0] * (100 - discount_percent) / 100, 2)}


@tool(
    examples=[
        ("we got 12 more loaves of sourdough", {"item": "sourdough loaf", "change": 12,
                                               "unit": "count"}),
        ("take 500 grams of cheddar off the stock", {"item": "cheddar", "change": -500,
                                                     "unit": "grams"}),
    ],
)
def adjust_stock(item: str, change: float,
                 unit: Literal["count", "grams", "kilograms"] = "count",
                 *, ctx: ToolContext) -> dict:
    """Add to or take away from the stock of an item (a delivery, breakage, waste).

    Args:
        item: The item's name.
        change: How much to add; negative to take away.
        unit: The unit of the change: a count of pieces, or grams or kilograms for things
            sold by weight.
    """
    item = _name(item)
    amount = change * 1000 if unit == "kilograms" else change
    unit = "grams" if unit == "kilograms" else unit
    with _db(ctx) as conn:
        row = conn.execute("SELECT stock, unit FROM items WHERE name = ?", (item,)).fetchone()
        if row is None:
            conn.execute("INSERT INTO items(name, price, stock, unit) VALUES(?,0,?,?)",
                         (item, max(0.0, amount), unit))
            return {"item": item, "stock": max(0.0, amount), "unit": unit, "new_item": True}
        if row[1] != unit:
            raise ValueError(f"{item} is counted in {row[1]}, not {unit}")
        stock = max(0.0, row[0] + amount)
        conn.execute("UPDATE items SET stock = ? WHERE name = ?", (stock, item))
    return {"item": item, "stock": stock, "unit": unit}


@tool
def check_stock(item: str, *, ctx: ToolContext) -> dict:
    """Look up how much of an item is in stock, and its current price.

    Args:
        item: The item's name.
    """
    item = _name(item)
    with _db(ctx) as conn:
        row = conn.execute("SELECT stock, unit, price, discount FROM items WHERE name = ?",
                           (item,)).fetchone()
    if row is None:
        return {"item": item, "stock": 0, "note": "not an item we sell"}
    out = {"item": item, "stock": row[0], "unit": row[1], "price": row[2]}
    if row[3]:
        out["discount_percent"] = row[3]
    return out


@tool
def set_sign(enabled: bool, *, ctx: ToolContext) -> dict:
    """Switch the illuminated shop sign over the front window on or off.

    Args:
        enabled: True to light the sign, False to switch it off.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO settings VALUES('sign', ?)", (str(int(enabled)),))
    return {"sign": "on" if enabled else "off"}


@tool(examples=[("open the shutter halfway", {"position": 50})])
def set_shutter(position: Annotated[int, Meta(ge=0, le=100)], *, ctx: ToolContext) -> dict:
    """Move the roller shutter over the shop front.

    Args:
        position: Shutter position in percent: 0 is fully closed, 100 is fully open.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO settings VALUES('shutter', ?)", (str(position),))
    return {"shutter_position": position}


@tool
def announce(message: str, chime: bool = True, *, ctx: ToolContext) -> dict:
    """Read out an announcement over the shop's PA speakers.

    Args:
        message: What to announce, word for word.
        chime: True to play the chime before the announcement.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO settings VALUES('last_announcement', ?)",
                     (message,))
    return {"announced": message, "chime": chime}
