"""Memory when told: "remember that ...", "I like/prefer ...", "my X is ...", "note that ..."
store a memory of the asking device at once (durable before the reply) and never run a
tool; "what do you remember about ...", "forget that ..." read and delete. Consolidation
still refines memories later (it merges, updates and prunes).

Recognised by the form of the sentence, before any tool is chosen: a statement about the
user is not a command, however close its words are to a tool's ("remember that I like the
study blinds at 30 percent" must not move the blinds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..memory.consolidate import Consolidator, clean, subject
from ..memory.recall import Memory

_TOLD = re.compile(
    r"^(?:(?:oh|and|also|okay|ok|so|hey)[, ]+)*(?:please\s+)?(?:(?:can|could) you\s+)?"
    r"(?:remember|don't forget|do not forget|keep in mind|bear in mind|(?:make a )?note(?= that)|"
    r"for the record|fyi|just so you know)\b(?!\s+to\b)[, :]*(?:that\s+)?(?P<what>.+)$",
    re.I)
_STATEMENT = re.compile(
    r"^(?:(?:oh|and|also|okay|ok|so|hey)[, ]+)*(?P<what>(?:i\s+(?:really\s+)?(?:like|love|"
    r"prefer|hate|dislike|can't stand|cannot stand|don't like|do not like|always|usually|"
    r"never)\b|i'm allergic|i am allergic|i'm vegetarian|i am vegetarian|my\s+(?:\w+\s+){0,3}"
    r"(?:is|are|was|were)\b|my name is|call me)\s*.+)$", re.I)
_ASKED = re.compile(
    r"^(?:what|what else)\s+do\s+you\s+(?:remember|know)\s+(?:about\s+)?(?P<what>.*)$|"
    r"^do\s+you\s+remember\s+(?:anything\s+about\s+|what\s+)?(?P<what2>.*)$|"
    r"^what\s+did\s+i\s+(?:tell|say to)\s+you\s+about\s+(?P<what3>.*)$", re.I)
_FORGET = re.compile(r"^(?:please\s+)?forget\s+(?:that\s+|about\s+|what i said about\s+)?"
                     r"(?P<what>.+)$", re.I)
_YOU = [(re.compile(r"\bI'm\b", re.I), "you're"), (re.compile(r"\bI am\b", re.I), "you are"),
        (re.compile(r"\bI\b"), "you"), (re.compile(r"\bmy\b", re.I), "your"),
        (re.compile(r"\bme\b", re.I), "you"), (re.compile(r"\bmine\b", re.I), "yours")]
FORGET_MIN_SIMILARITY = 0.5


@dataclass(frozen=True)
class Told:
    """What a request does to memory: ``op`` is remember, recall or forget."""

    op: str
    what: str


def told(text: str, *, note_tool: bool = False) -> Told | None:
    """The memory operation a request asks for, or None for everything else. With a
    note-taking tool among the agent's, "note that ..." is the tool's."""
    t = text.strip().rstrip(".!")
    if (m := _FORGET.match(t)) and not re.match(r"forget\s+(it|that)\s*$", t, re.I):
        return Told("forget", m.group("what").strip())
    if m := _ASKED.match(t):
        what = next((g for g in m.groups() if g is not None), "")
        return Told("recall", what.strip(" ?"))
    if t.endswith("?"):
        return None
    if (m := _TOLD.match(t)) and not (note_tool and re.match(r"^\W*(make a )?note", t, re.I)):
        return Told("remember", m.group("what").strip())
    if m := _STATEMENT.match(t):
        return Told("remember", m.group("what").strip())
    return None


def as_said_to_you(text: str) -> str:
    """"I like the bedroom at 19" -> "you like the bedroom at 19": the reply's words."""
    out = text
    for rx, rep in _YOU:
        out = rx.sub(rep, out)
    return out[:1].lower() + out[1:] if out[:2] != "I " else out


async def act(told_: Told, device: str, memory: Memory, consolidator: Consolidator | None,
              *, source: str) -> str:
    """Do it, durably, and say what was done."""
    if told_.op == "remember":
        statement = clean(told_.what) or told_.what
        if consolidator is not None:
            decision = await consolidator.absorb(device, statement, None, [source])
            if decision is None:
                return "There was nothing there for me to remember."
            if decision.op == "NOOP":
                return f"I already know that {as_said_to_you(decision.text)}."
            said = decision.text
        else:
            await memory.remember(device, statement, "fact", sources=[source])
            said = statement
        return f"OK, I'll remember that {as_said_to_you(said)}."
    if told_.op == "recall":
        rows = await memory.recall(told_.what or "me", device, min_similarity=0.0
                                   if not subject(told_.what) else None)
        if not rows:
            return "I don't remember anything about that."
        return "You told me: " + "; ".join(as_said_to_you(r.text) for r in rows) + "."
    rows = await memory.recall(told_.what, device, k=1, min_similarity=FORGET_MIN_SIMILARITY,
                               touch=False)
    if not rows:
        return "I don't remember anything like that."
    await memory.run(memory.store.delete, [rows[0].id])
    return f"OK, I've forgotten that {as_said_to_you(rows[0].text)}."
