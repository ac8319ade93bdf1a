"""Development plugin: the counter of a small pharmacy and health shop.

Shelf prices, promotions, stock counts, the till's stock lookup, the shop's PA and the
automatic door. A real installation would talk to the point-of-sale system; this one keeps
everything in SQLite.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from edged.plugin import ToolContext, tool


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "pharmacy.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS products(name TEXT PRIMARY KEY, price REAL, "
                 "promo INTEGER DEFAULT 0, stock REAL DEFAULT 0, unit TEXT DEFAULT 'packs')")
    conn.execute("CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT)")
    return conn


def _name(product: str) -> str:
    return " ".join(product.lower().split())


@tool
def set_shelf_price(product: str, price: Annotated[float, Meta(ge=0, le=300)], *,
                    ctx: ToolContext) -> dict:
    """Change the shelf price of a product.

    Args:
        product: The product's name.
        price: The new price in euros (e.g. "four ninety nine" is 4.99).
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO products(name, price) VALUES(?, ?) ON CONFLICT(name) DO "
                     "UPDATE SET price = excluded.price", (_name(product), price))
    return {"product": _name(product), "price": price}


@tool
def start_promotion(product: str, percent: Annotated[int, Meta(ge=0, le=80)], *,
                    ctx: ToolContext) -> dict:
    """Run a promotion on a product: a percentage taken off its shelf price.

    Args:
        product: The product's name.
        percent: How many percent off, 0-80; 0 stops the promotion.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO products(name, promo) VALUES(?, ?) ON CONFLICT(name) DO "
                     "UPDATE SET promo = excluded.promo", (_name(product), percent))
    return {"product": _name(product), "percent_off": percent}


@tool(
    examples=[
        ("we got 24 boxes of plasters in", {"product": "plasters", "amount": 24}),
        ("2 kilos of epsom salts went in the bin", {"product": "epsom salts", "amount": -2,
                                                    "unit": "kilograms"}),
    ],
)
def update_stock(product: str, amount: float,
                 unit: Literal["packs", "grams", "kilograms", "bottles"] = "packs",
                 *, ctx: ToolContext) -> dict:
    """Record stock arriving or leaving (a delivery, a breakage, out-of-date stock).

    Args:
        product: The product's name.
        amount: How much arrived (positive) or left (negative).
        unit: What the amount counts: packs, bottles, or grams or kilograms for loose goods.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO products(name, stock, unit) VALUES(?, ?, ?) ON "
                     "CONFLICT(name) DO UPDATE SET stock = stock + excluded.stock",
                     (_name(product), amount, unit))
    return {"product": _name(product), "change": amount, "unit": unit}


@tool
def stock_level(product: str, *, ctx: ToolContext) -> dict:
    """Find out how many of a product are left and what it costs.

    Args:
        product: The product's name.
    """
    with _db(ctx) as conn:
        row = conn.execute("SELECT stock, unit, price FROM products WHERE name = ?",
                           (_name(product),)).fetchone()
    if row is None:
        return {"product": _name(product), "stock": 0}
    return {"product": _name(product), "stock": row[0], "unit": row[1], "price": row[2]}


@tool
def page_shop_floor(message: str, chime: bool = True, *, ctx: ToolContext) -> dict:
    """Say a message over the speakers on the shop floor.

    Args:
        message: What to say.
        chime: Play the two-tone chime first.
    """
    return {"said": message, "chime": chime}


@tool
def set_front_door(open: bool, *, ctx: ToolContext) -> dict:
    """Open or lock the automatic front door.

    Args:
        open: True opens the door for customers, False locks it.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO settings VALUES('door', ?)",
                     ("open" if open else "locked",))
    return {"front_door": "open" if open else "locked"}
