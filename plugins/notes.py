"""Example plugin: short notes and a shopping list, kept in SQLite, per device: one
device's notes are never another device's tool result (privacy by default)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from edged.plugin import ToolContext, tool


def _db(ctx: ToolContext) -> sqlite3.Connection:
    Path(ctx.state_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(ctx.state_dir) / "notes.db", timeout=5)
    conn.execute("CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, ts REAL, "
                 "device TEXT, text TEXT)")
    return conn


@tool(examples=[("note that the plumber comes on friday",
                 {"text": "the plumber comes on friday"}),
                ("add milk to the shopping list", {"text": "milk"}),
                ("remember to water the plants", {"text": "water the plants"}),
                ("we're out of oat milk", {"text": "oat milk"})])
def add_note(text: str, *, ctx: ToolContext) -> dict:
    """Write down a note or a shopping-list item.

    Args:
        text: What to write down.
    """
    text = text.strip()[:500]
    if not text:
        raise ValueError("nothing to write down")
    with _db(ctx) as conn:
        cur = conn.execute("INSERT INTO notes(ts, device, text) VALUES(?,?,?)",
                           (time.time(), ctx.device, text))
    return {"id": cur.lastrowid, "text": text}


@tool(examples=["read my notes", "what's on the shopping list", "list my notes"])
def list_notes(limit: int = 10, *, ctx: ToolContext) -> list[str]:
    """Read back the latest notes and shopping-list items.

    Args:
        limit: How many notes, newest first.
    """
    with _db(ctx) as conn:  # this device's only (the docstring stays: tools are ranked by it)
        rows = conn.execute("SELECT text FROM notes WHERE device = ? ORDER BY id DESC LIMIT ?",
                            (ctx.device, max(1, min(limit, 50)))).fetchall()
    return [r[0] for r in rows]
