"""Long-term memory as tools: the agent (or a device) asks edged to remember or recall.

``remember`` goes through the same ADD / UPDATE / NOOP decision as consolidation, so
"remember that I like the bedroom at 21 degrees" replaces the 19 degrees said before instead
of keeping both. Both tools work in the requesting device's scope only.
"""

from __future__ import annotations

from typing import Literal

from edged.memory.consolidate import clean, subject
from edged.plugin import Memories, ToolContext, ToolError, tool


def _memory(ctx: ToolContext) -> Memories:
    if ctx.memory is None:
        raise ToolError("memory is off on this gateway ([memory] enabled = false)")
    return ctx.memory


@tool(examples=[
    ("remember that I like the bedroom at 19 degrees",
     {"text": "I like the bedroom at 19 degrees"}),
    ("remember that my daughter is called Emma", {"text": "my daughter is called Emma"}),
    ("keep in mind that I'm allergic to cats", {"text": "I'm allergic to cats"}),
    ("remember I prefer the lights dim in the evening",
     {"text": "I prefer the lights dim in the evening"}),
], not_examples=["remember to buy milk", "remind me to take the bins out",
                 "what's the temperature in the kitchen"])
async def remember(text: str, ctx: ToolContext,
                   kind: Literal["fact", "preference", "decision"] | None = None) -> dict:
    """Remember a fact or a preference about the user or the home (not a task).

    Args:
        text: what to remember, in the user's words
        kind: fact, preference or decision (found from the words when not given)
    """
    said = clean(ctx.text)
    if text.strip() and text.strip().lower() in said.lower():
        # the agent cut the text out of the request: keep the user's whole statement ("I'm
        # allergic to cats", not "allergic to cats"), minus "remember that"
        text = said
    d = await _memory(ctx).remember(ctx.device, text, kind, ctx.request_id)
    if d is None:
        return {"remembered": False, "why": "nothing to remember"}
    verb = {"ADD": "remembered", "UPDATE": "updated", "NOOP": "already known",
            "DELETE": "forgotten"}[d.op]
    return {verb: d.text}


@tool(examples=[
    ("what do you remember about me", {"query": "about me"}),
    ("what do you know about the bedroom", {"query": "the bedroom"}),
    ("do you remember what my daughter is called", {"query": "what my daughter is called"}),
    ("what do you remember about my allergies", {"query": "my allergies"}),
], not_examples=["read my notes", "what's on my list", "what have I noted down",
                 "remind me to call the dentist"])
async def search(query: str, ctx: ToolContext) -> list[str]:
    """Recall what you told me about yourself or the home.

    Args:
        query: what to look for
    """
    mem = _memory(ctx)
    if not subject(query):  # "what do you remember about me": everything, best first
        rows = await mem.important(ctx.device)
    else:
        rows = await mem.search(ctx.device, query)
    return [r.text for r in rows]
