"""At-most-once side effects: each tool step is journaled before it runs and after, so a
crash never makes it run twice; and the audit trail of every tool call, run or refused."""

from __future__ import annotations

from typing import Any

import sqlean as sqlite3

from .errors import StepFailed, StepInDoubt
from .rows import Settings


def begin(conn: sqlite3.Connection, cfg: Settings, inbox_id: int, key: str) -> tuple[str, Any]:
    row = conn.execute(
        "SELECT state, result FROM steps WHERE inbox_id = ? AND key = ?", (inbox_id, key)
    ).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO steps(inbox_id, key, state, started_at) VALUES(?,?,'started',?)",
            (inbox_id, key, cfg.clock()),
        )
        return "new", None
    if row[0] == "done":
        return "done", row[1]
    if row[0] == "failed":
        raise StepFailed(f"step {key!r} failed on an earlier attempt: "
                         f"{(row[1] or b'').decode(errors='replace')}")
    raise StepInDoubt(f"step {key!r} was interrupted; its outcome is unknown")


def end(conn: sqlite3.Connection, cfg: Settings, inbox_id: int, key: str,
        result: bytes) -> None:
    conn.execute(
        "UPDATE steps SET state = 'done', result = ?, finished_at = ? "
        "WHERE inbox_id = ? AND key = ?",
        (result, cfg.clock(), inbox_id, key),
    )


def fail(conn: sqlite3.Connection, cfg: Settings, inbox_id: int, key: str, error: str) -> None:
    conn.execute(
        "UPDATE steps SET state = 'failed', result = ?, finished_at = ? "
        "WHERE inbox_id = ? AND key = ?",
        (error.encode(), cfg.clock(), inbox_id, key),
    )


def audit(conn: sqlite3.Connection, cfg: Settings, row: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO tool_calls(ts, inbox_id, request_id, device, topic, agent, tool, "
        "arguments, outcome, detail, duration_ms) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
        (cfg.clock(), row.get("inbox_id"), row.get("request_id"), row.get("device"),
         row.get("topic"), row.get("agent"), row["tool"], row.get("arguments"),
         row["outcome"], row.get("detail"), row.get("duration_ms")),
    )
