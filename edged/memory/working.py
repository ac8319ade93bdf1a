"""Working memory: the token-budgeted context a model call gets.

System prompt + recalled memories + recent turns + the request, in that order, within
``budget`` tokens. The system prompt and the request always go in (the request is cut from
its start if it alone is too long); then the best memories, up to a third of what is left;
then the newest turns that fit; then further memories if room remains. Turns are dropped
oldest first, memories worst first, never half a turn.

For the cloud (``withhold_private``), an exchange in which either turn holds a secret (as
:func:`edged.redact.is_sensitive` sees it, the test that marks memories private) is replaced
whole by placeholders: pattern redaction alone misses phrasings, and a reply can echo what
the request said.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..redact import is_sensitive
from .store import MemoryRow, Turn, approx_tokens

PRIVATE_TURN = "[private turn withheld]"


@dataclass
class WorkingMemory:
    system: str
    memories: list[MemoryRow] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    request: str = ""
    tokens: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    withheld: int = 0  # kept turns that are PRIVATE_TURN placeholders

    def memory_block(self) -> str:
        if not self.memories:
            return ""
        return "What you know about this user and place:\n" + "\n".join(
            f"- ({m.kind}) {m.text}" for m in self.memories)

    def messages(self) -> list[dict[str, Any]]:
        """OpenAI-style chat messages."""
        system = "\n\n".join(x for x in (self.system, self.memory_block()) if x)
        out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        out += [{"role": t.role, "content": t.text} for t in self.turns]
        out.append({"role": "user", "content": self.request})
        return out

    def prompt(self) -> str:
        """The same as one plain-text prompt (completion models)."""
        parts = [x for x in (self.system, self.memory_block()) if x]
        parts += [f"{'User' if t.role == 'user' else 'Assistant'}: {t.text}" for t in self.turns]
        parts.append(f"User: {self.request}\nAssistant:")
        return "\n\n".join(parts)


def private_withheld(turns: Sequence[Turn], sensitive: Callable[[str], bool] = is_sensitive
                     ) -> tuple[list[Turn], int]:
    """``turns`` with both turns of every exchange that holds a secret replaced by
    :data:`PRIVATE_TURN` (roles kept, so the conversation keeps its shape); and how many."""
    private = {t.request_id for t in turns if t.text != PRIVATE_TURN and sensitive(t.text)}
    out: list[Turn] = []
    n = 0
    for t in turns:
        if t.request_id in private and t.text != PRIVATE_TURN:
            t = dataclasses.replace(t, text=PRIVATE_TURN, tokens=approx_tokens(PRIVATE_TURN),
                                    tools=[])
            n += 1
        out.append(t)
    return out, n


def build(system: str, request: str, *, memories: Sequence[MemoryRow] = (),
          turns: Sequence[Turn] = (), budget: int,
          count: Callable[[str], int] = approx_tokens,
          withhold_private: bool = False) -> WorkingMemory:
    wm = WorkingMemory(system=system, request=request)
    if withhold_private:  # before budgeting: the placeholders are what is counted
        turns = private_withheld(turns)[0]
    used = count(system) if system else 0
    req_tokens = count(request)
    room = budget - used
    if req_tokens > room:
        # keep the end of an over-long request (its question is usually last)
        words = request.split()
        while words and count(" ".join(words)) > max(room, 1):
            words = words[max(1, len(words) // 8):]
        wm.request = " ".join(words)
        req_tokens = count(wm.request)
    used += req_tokens
    ranked = list(memories)
    mem_cost = [count(f"- ({m.kind}) {m.text}") for m in ranked]
    chosen: list[int] = []
    mem_room = (budget - used) // 3
    for i, c in enumerate(mem_cost):
        if c <= mem_room:
            chosen.append(i)
            mem_room -= c
            used += c
    kept: list[Turn] = []
    for t in reversed(list(turns)):
        c = count(t.text) + 2
        if used + c > budget:
            break
        kept.append(t)
        used += c
    kept.reverse()
    for i, c in enumerate(mem_cost):  # leftover room: more memories
        if i not in chosen and used + c <= budget:
            chosen.append(i)
            used += c
    wm.memories = [ranked[i] for i in sorted(chosen)]
    wm.turns = kept
    wm.withheld = sum(t.text == PRIVATE_TURN for t in kept) if withhold_private else 0
    wm.tokens = used
    wm.dropped = {"memories": len(ranked) - len(chosen), "turns": len(turns) - len(kept)}
    return wm
