"""Development plugin: a neighbourhood hardware and garden store.

Staff use it at the tills and over their headsets: sales and markdowns, shelf prices, stock
counts (and where things live), the PA speakers and the LED sign over the front door. A real
store would push these to the EPOS back office, the PA amplifier and the sign controller;
this one keeps everything in SQLite.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from edged.plugin import ToolContext, ToolError, tool

Place = Literal["shop floor", "stockroom", "garden centre", "yard"]


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "hardware.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS articles(key TEXT PRIMARY KEY, price REAL, "
                 "per TEXT DEFAULT 'each', aisle TEXT DEFAULT '?')")
    conn.execute("CREATE TABLE IF NOT EXISTS sales(key TEXT PRIMARY KEY, percent_off INTEGER, "
                 "sale_price REAL, until TEXT, started REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS stock(key TEXT, unit TEXT, place TEXT, "
                 "quantity REAL, PRIMARY KEY(key, unit, place))")
    conn.execute("CREATE TABLE IF NOT EXISTS movements(id INTEGER PRIMARY KEY, key TEXT, "
                 "change REAL, unit TEXT, reason TEXT, at REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS pa(id INTEGER PRIMARY KEY, message TEXT, "
                 "zone TEXT, chime INTEGER, at REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS sign(id INTEGER PRIMARY KEY CHECK (id = 1), "
                 "text TEXT, scrolling INTEGER)")
    return conn


def _key(name: str) -> str:
    return " ".join(name.lower().split())


@tool
def put_on_sale(sku_or_name: str,
                percent_off: Annotated[int, Meta(ge=5, le=75)] | None = None,
                sale_price: Annotated[float, Meta(gt=0, le=5000)] | None = None,
                until: str | None = None, *, ctx: ToolContext) -> dict:
    """Mark an article down: a percentage off, or a fixed sale price.

    The till applies the markdown straight away and the shelf-edge label printer queues a red
    sale label. Exactly one of percent_off / sale_price.

    Args:
        sku_or_name: SKU from the label (e.g. "HW-20418") or the article's name.
        percent_off: Reduction in percent, 5-75.
        sale_price: Sale price in euros (incl. VAT).
        until: Last day of the sale, e.g. "Sunday", "30 June". Runs until ended if not set.
    """
    if (percent_off is None) == (sale_price is None):
        raise ToolError("give either percent_off or sale_price")
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO sales VALUES(?,?,?,?,?)",
                     (_key(sku_or_name), percent_off, sale_price, until, time.time()))
    return {"article": sku_or_name, "percent_off": percent_off, "sale_price": sale_price,
            "until": until or "open-ended"}


@tool
def end_sale(article: str | None = None, *, ctx: ToolContext) -> dict:
    """End a markdown; the article goes back to its regular shelf price.

    Args:
        article: SKU or name of the article. Leave out to end ALL running sales.
    """
    with _db(ctx) as conn:
        if article is None:
            cur = conn.execute("DELETE FROM sales")
        else:
            cur = conn.execute("DELETE FROM sales WHERE key = ?", (_key(article),))
    if article is not None and cur.rowcount == 0:
        raise ToolError(f"{article} is not on sale")
    return {"ended": cur.rowcount, "article": article or "all"}


@tool
def stock_level(what: str, location: Place | None = None, *, ctx: ToolContext) -> dict:
    """Look up how much of something is in stock and where it lives (aisle / bay).

    Args:
        what: SKU, barcode or a description of the article.
        location: Count only what's in this part of the store; everywhere if not given.
    """
    with _db(ctx) as conn:
        q = "SELECT unit, place, quantity FROM stock WHERE key = ?"
        params: tuple = (_key(what),)
        if location is not None:
            q += " AND place = ?"
            params += (location,)
        rows = conn.execute(q, params).fetchall()
        aisle = conn.execute("SELECT aisle FROM articles WHERE key = ?",
                             (_key(what),)).fetchone()
    return {"article": what, "aisle": aisle[0] if aisle else "unknown",
            "stock": [{"unit": u, "where": p, "quantity": n} for u, p, n in rows]}


@tool
def adjust_stock(item: str, change: float,
                 unit: Literal["pieces", "packs", "metres", "kilos", "litres"] = "pieces",
                 reason: Literal["delivery", "breakage", "theft", "return", "correction"]
                 = "correction", *, ctx: ToolContext) -> dict:
    """Book stock in or out outside of normal till sales.

    Args:
        item: The article as named on the shelf, or its SKU.
        change: Signed quantity: +n books stock in, -n books it out.
        unit: What the quantity counts. Chain, rope, cable and hose by the metre; loose
            nails, seed and grit by the kilo.
        reason: delivery, breakage (damaged / written off), theft, return (customer brought
            it back) or correction (miscount).
    """
    if change == 0:
        raise ToolError("change of 0")
    with _db(ctx) as conn:
        conn.execute("INSERT INTO movements(key, change, unit, reason, at) VALUES(?,?,?,?,?)",
                     (_key(item), change, unit, reason, time.time()))
        conn.execute("INSERT INTO stock VALUES(?,?,?,?) ON CONFLICT(key, unit, place) DO "
                     "UPDATE SET quantity = quantity + excluded.quantity",
                     (_key(item), unit, "stockroom", change))
        level = conn.execute("SELECT SUM(quantity) FROM stock WHERE key = ? AND unit = ?",
                             (_key(item), unit)).fetchone()[0]
    return {"item": item, "change": change, "unit": unit, "reason": reason, "now": level}


@tool
def set_price(product: str, price: Annotated[float, Meta(gt=0, le=20000)],
              per: Literal["each", "metre", "kilo", "litre", "pack"] = "each", *,
              ctx: ToolContext) -> dict:
    """Change an article's regular price (not a sale: see put_on_sale).

    Args:
        product: SKU or product name.
        price: New regular price, euros incl. VAT.
        per: What the price is for.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT INTO articles(key, price, per) VALUES(?,?,?) ON CONFLICT(key) "
                     "DO UPDATE SET price = excluded.price, per = excluded.per",
                     (_key(product), round(price, 2), per))
    return {"product": product, "price_eur": round(price, 2), "per": per}


@tool
async def announce(message: str, zone: Literal["everywhere", "shop floor", "garden centre",
                                               "yard"] = "everywhere",
                   chime: bool = True, *, ctx: ToolContext) -> dict:
    """Speak a message over the store PA (text-to-speech).

    Args:
        message: The words to be read out.
        zone: Speakers to use. The yard is the timber & building-materials yard out back.
        chime: Ding-dong before the message.
    """
    if not message.strip():
        raise ToolError("empty announcement")
    with _db(ctx) as conn:
        conn.execute("INSERT INTO pa(message, zone, chime, at) VALUES(?,?,?,?)",
                     (message, zone, int(chime), time.time()))
    if ctx.publish is not None:
        await ctx.publish(f"hardware/pa/{zone.replace(' ', '_')}", message)
    return {"announced": message, "zone": zone, "chime": chime}


@tool
def set_sign(text: Annotated[str, Meta(max_length=80)], scrolling: bool = False, *,
             ctx: ToolContext) -> dict:
    """Set what the LED sign over the front entrance shows.

    Args:
        text: The text, max 80 characters. "" switches the sign off (blank).
        scrolling: Scroll the text across instead of a static display.
    """
    with _db(ctx) as conn:
        conn.execute("INSERT OR REPLACE INTO sign VALUES(1, ?, ?)", (text, int(scrolling)))
    return {"sign": text or "(blank)", "scrolling": scrolling}
