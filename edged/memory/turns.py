"""Short-term memory: the turns of each session and how far consolidation has read them.

One part of :class:`edged.memory.store.MemoryStore`, on the store's connection: the store
delegates its turn methods here (``add_turns``, ``recent_turns``, ...).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .db import Shared


@dataclass(slots=True)
class Turn:
    id: int
    scope: str
    session: str
    role: str
    text: str
    tokens: int
    request_id: str
    ts: float
    tools: list[dict[str, Any]] = field(default_factory=list)


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate (~4 bytes a token for English, at least a token a word):
    budgets stay model-independent and cost nothing to compute."""
    return max(len(text.encode()) // 4, len(text.split())) + 1


def _turn(r: Sequence[Any]) -> Turn:
    """A turn from ``SELECT id, scope, session, role, text, tokens, request_id, ts, tools``."""
    return Turn(id=r[0], scope=r[1], session=r[2], role=r[3], text=r[4], tokens=r[5],
                request_id=r[6], ts=r[7], tools=json.loads(r[8]) if r[8] else [])


class TurnLog:
    """The ``turns`` and ``checkpoints`` tables."""

    def __init__(self, db: Shared) -> None:
        self.db = db

    def add(self, scope: str, session: str, request_id: str, user: str, assistant: str,
            tools: list[dict[str, Any]] | None = None) -> None:
        """Record one exchange; recording the same request twice (a retry) changes nothing."""
        now = self.db.clock()
        rows = [(scope, session, "user", user, approx_tokens(user), request_id, None, now),
                (scope, session, "assistant", assistant, approx_tokens(assistant), request_id,
                 json.dumps(tools) if tools else None, now)]
        with self.db.tx():
            self.db.conn.executemany(
                "INSERT OR IGNORE INTO turns(scope, session, role, text, tokens, request_id, "
                "tools, ts) VALUES (?,?,?,?,?,?,?,?)", rows)

    def recent(self, session: str, *, max_turns: int, max_tokens: int,
               since: float | None = None) -> list[Turn]:
        """The newest turns of a session, oldest first, within both bounds."""
        cur = self.db.conn.execute(
            "SELECT id, scope, session, role, text, tokens, request_id, ts, tools FROM turns "
            "WHERE session = ? AND ts >= ? ORDER BY id DESC LIMIT ?",
            (session, since if since is not None else float("-inf"), max_turns))
        out: list[Turn] = []
        used = 0
        for r in cur:
            if used + r[5] > max_tokens and out:
                break
            used += r[5]
            out.append(_turn(r))
        out.reverse()
        return out

    def after(self, session: str, turn_id: int, limit: int) -> list[Turn]:
        cur = self.db.conn.execute(
            "SELECT id, scope, session, role, text, tokens, request_id, ts, tools FROM turns "
            "WHERE session = ? AND id > ? ORDER BY id LIMIT ?", (session, turn_id, limit))
        return [_turn(r) for r in cur]

    def sessions_with_new(self) -> list[tuple[str, str, int]]:
        """(session, scope, checkpoint) for every session with turns past its checkpoint."""
        return [(r[0], r[1], r[2]) for r in self.db.conn.execute(
            "SELECT t.session, MIN(t.scope), COALESCE(c.turn_id, 0) FROM turns t "
            "LEFT JOIN checkpoints c ON c.session = t.session "
            "WHERE t.id > COALESCE(c.turn_id, 0) GROUP BY t.session ORDER BY t.session")]

    def checkpoint(self, session: str) -> int:
        r = self.db.conn.execute("SELECT turn_id FROM checkpoints WHERE session = ?",
                                 (session,)).fetchone()
        return r[0] if r else 0

    def set_checkpoint(self, session: str, scope: str, turn_id: int) -> None:
        self.db.conn.execute(
            "INSERT INTO checkpoints VALUES (?,?,?,?) ON CONFLICT(session) DO UPDATE "
            "SET turn_id = MAX(turn_id, excluded.turn_id), ts = excluded.ts",
            (session, scope, turn_id, self.db.clock()))

    def old(self, session: str, *, before_id: int, keep_last: int, older_than: float
            ) -> list[Turn]:
        """Consolidated turns that are old enough to be folded into an episode, except the
        newest ``keep_last`` of the session (the short-term window)."""
        cur = self.db.conn.execute(
            "SELECT id, scope, session, role, text, tokens, request_id, ts, tools FROM turns "
            "WHERE session = ? AND id <= ? AND ts < ? AND id NOT IN "
            "(SELECT id FROM turns WHERE session = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
            (session, before_id, older_than, session, keep_last))
        return [_turn(r) for r in cur]

    def delete(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        n = 0
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            n += self.db.conn.execute(
                f"DELETE FROM turns WHERE id IN ({','.join('?' * len(chunk))})", chunk).rowcount
        return n

    def prune(self, older_than: float) -> int:
        with self.db.tx():
            return int(self.db.conn.execute("DELETE FROM turns WHERE ts < ?",
                                            (older_than,)).rowcount)

    def forget(self, scope: str) -> int:
        """The turns and checkpoints of one scope (inside the caller's transaction): how
        many turns went."""
        n: int = self.db.conn.execute("DELETE FROM turns WHERE scope = ?", (scope,)).rowcount
        self.db.conn.execute("DELETE FROM checkpoints WHERE scope = ?", (scope,))
        return n
