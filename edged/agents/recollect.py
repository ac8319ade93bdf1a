"""Context for what the rules leave open: the session's last call (a follow-up: "and the
bedroom too", "set it to 40 percent") and recalled memories ("heat the bedroom" after "I like
the bedroom at 19 degrees")."""

from __future__ import annotations

import re
from typing import Any

from ..memory.recall import Memory
from ..messages import Request
from ..tools.base import ArgumentError, Tool
from . import fill, knowledge, slots
from .arguments import valid
from .planner import Planner, Step

# A recalled memory may fill an argument only when it is this close to the request.
RECALL_FILL_MIN_SIMILARITY = 0.45

# "it", "that", "too": the request continues the last one
_FOLLOWUP = re.compile(r"\b(it(?!'s)|them|that(?!'s)|those|the same|same|again|too|also|"
                       r"as well)\b",
                       re.I)
_ADDS_TO_LAST = re.compile(r"\b(too|also|as well|the same|same for)\b", re.I)
_REFERS_BACK = re.compile(r"\b(it(?!')|them|that one|those)\b", re.I)
# the request asks for the last call's words again ("send that again", "the same message")
_REPEATS = re.compile(r"\b(again|the same|same)\b", re.I)
_PREFERENCE_CUE = re.compile(r"\b(usual|usually|like|prefer|favou?rite|always)\b", re.I)


def session_of(request: Request) -> str:
    return request.session or request.device


class Recollection:
    """Reads the agent's memory (None: memory is off for the agent)."""

    def __init__(self, planner: Planner, memory: Memory | None) -> None:
        self.planner = planner
        self.tools = planner.tools
        self.index = planner.index
        self.memory = memory

    async def last_call(self, request: Request) -> dict[str, Any] | None:
        """The newest tool call of this session within ``memory.followup_s``."""
        if self.memory is None:
            return None
        turns = await self.memory.recent(session_of(request), within_s=self.memory.cfg.followup_s)
        for t in reversed(turns):
            if t.role == "assistant" and t.tools:
                call = t.tools[-1]
                if call.get("tool") in self.tools:
                    return call
        return None

    async def followup_plan(self, text: str, request: Request) -> list[Step]:
        """The request adds to the last call ("and the bedroom too") or refers back to its
        subject ("set it to 40 percent"): the last call again, with what this request
        changes (nothing when it changes nothing of that tool)."""
        if self.memory is None or slots.is_question(text) or not (
                _ADDS_TO_LAST.search(text) or _REFERS_BACK.search(text)):
            return []
        last = await self.last_call(request)
        if last is None:
            return []
        tool = self.tools[last["tool"]]
        changed = self.planner.filled(text, tool)
        if not changed:
            return []
        if not _ADDS_TO_LAST.search(text) and any(
                _free_text(tool, k) for k in last.get("arguments", {}) if k not in changed):
            return []  # "cancel it" after a booking: never the booking's names again
        args = {**last.get("arguments", {}), **changed}
        try:
            tool.validate(args)
        except ArgumentError:
            return []
        ranking = await self.index.rank(text, [tool.name])
        return [(text, tool, args, ranking)]

    async def context_args(self, text: str, tool: Tool, request: Request,
                            notes: list[str]) -> dict[str, Any] | None:
        """Fill what the rules left open from the last call (a follow-up: "set it to 40
        percent") or from a recalled memory ("heat the bedroom" + "I like the bedroom at 19
        degrees"); None when context does not complete the arguments."""
        if self.memory is None:
            return None
        known = self.planner.filled(text, tool)
        required = tool.parameters.get("required", [])
        missing = [r for r in required if r not in known]
        if not missing:
            return None
        free = {m for m in missing if _free_text(tool, m)}
        if _FOLLOWUP.search(text):
            last = await self.last_call(request)
            if last is not None and last.get("tool") == tool.name and (
                    not free or (_REPEATS.search(text) and len(text.split()) <= 5)):
                # a name or a message is never carried over unless asked for again
                prior = last.get("arguments", {})
                if all(m in prior for m in missing):
                    args = {**known, **{m: prior[m] for m in missing}}
                    if valid(tool, args):
                        return args
        if free:
            return None  # a memory tells a preference, not who to page or what to say
        memories = await self.memory.recall(text, request.device,
                                            kinds=("preference", "fact", "decision"),
                                            min_similarity=RECALL_FILL_MIN_SIMILARITY)
        for m in memories:
            found = fill.fill(m.text, tool)  # the same rules as a request
            shared = [k for k in known if k in found]
            if any(found[k] != known[k] for k in shared):
                continue  # about something else (another room)
            if not shared and not _PREFERENCE_CUE.search(text):
                continue  # nothing ties the memory to this request
            if all(x in found for x in missing):
                args = {**known, **{x: found[x] for x in missing}}
                if valid(tool, args):
                    notes.append(f"(From memory: {m.text}.)")
                    return args
        return None



def _free_text(tool: Tool, name: str) -> bool:
    """A string without choices or a time format (a name, a title, a message, an account
    number), or an amount of money: never carried over from the last call by "it" or
    "them" alone."""
    p = knowledge.of(tool).params.get(name)
    return p is not None and ((p.kind == "string" and not p.choices and not p.time_of_day)
                              or p.currency)
