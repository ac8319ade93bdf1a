"""Long-term memory as tools: the agent (or a device) asks edged to remember or recall.

``remember`` goes through the same ADD / UPDATE / NOOP decision as consolidation, so
"remember that I like the bedroom at 21 degrees" replaces the 19 degrees said before instead
of keeping both. Both tools work in the requesting device's scope only.
"""

from __future__ import annotations

from typing import Literal

from edged.tools.base import ToolContext, ToolError, tool


def _memory(ctx: ToolContext):  # noqa: ANN202 - edged.memory.MemoryAccess
    if ctx.memory is None:
        raise ToolError("memory is off on this gateway ([memory] enabled = false)")
    return ctx.memory


@tool(examples=[
    ("remember that I like the bedroom at 19 degrees",
     {"text": "I like the bedroom at 19 degrees"}),
    ("please remember my daughter is called Emma", {"text": "my daughter is called Emma"}),
    ("don't forget that the spare key is under the mat",
     {"text": "the spare key is under the mat"}),
    ("keep in mind that we're away next week", {"text": "we're away next week"}),
])
async def remember(text: str, ctx: ToolContext,
                   kind: Literal["fact", "preference", "decision"] | None = None) -> dict:
    """Remember something about the user or the home for later.

    Args:
        text: what to remember, in the user's words
        kind: fact, preference or decision (found from the words when not given)
    """
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
    ("what did I tell you about the spare key", {"query": "the spare key"}),
])
async def search(query: str, ctx: ToolContext) -> list[str]:
    """Look up what I remember about something.

    Args:
        query: what to look for
    """
    rows = await _memory(ctx).search(ctx.device, query)
    return [r.text for r in rows]
