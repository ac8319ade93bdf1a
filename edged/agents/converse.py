"""Native function calling: a capable model (a LAN tier, the cloud) plans and calls tools
itself, turn by turn, and every call goes through the same runner as a local one
(visibility, ACL, schema, at most once, audit). Used by the tool agent for its talking
tiers and by the escalator for the cloud."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..messages import Request, ToolCall
from ..models import Generation
from ..tools.base import Tool
from ..tools.runner import ToolRunner
from .base import Context

_WIRE = re.compile(r"[^A-Za-z0-9_-]")

Generate = Callable[[list[dict[str, Any]], list[dict[str, Any]]], Awaitable[Generation]]


def wire_name(name: str) -> str:
    """OpenAI function names allow [A-Za-z0-9_-] only: ``home.set_light`` ->
    ``home__set_light``."""
    return _WIRE.sub("_", name.replace(".", "__"))[:64]


def specs(tools: Mapping[str, Tool], allowed: Callable[[Tool], bool]) -> list[dict[str, Any]]:
    """OpenAI tool specs for the tools ``allowed`` lets this request see."""
    out = []
    for t in tools.values():
        if not allowed(t):
            continue
        spec = t.spec()
        spec["function"]["name"] = wire_name(t.name)
        out.append(spec)
    return out


@dataclass
class Outcome:
    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    steps: int = 0


async def run(generate: Generate, messages: list[dict[str, Any]],
              tool_specs: list[dict[str, Any]], *, tools: Mapping[str, Tool],
              runner: ToolRunner, request: Request, ctx: Context, agent: str,
              agent_tools: list[str] | None, max_steps: int, plan: str, label: str,
              scrub: Callable[[str], str] = lambda s: s,
              before_step: Callable[[int], Awaitable[str | None]] | None = None) -> Outcome:
    """Generate, run the tool calls the model asks for, feed their results back, until it
    answers in words or ``max_steps`` turns are used. ``scrub`` cleans a tool result before
    the model sees it (the cloud's redaction); ``before_step`` may stop the loop with a
    text (a budget used up); ``plan`` is the runner's ("cloud", "multi": a sensitive tool
    needs the device's confirmation), ``label`` names the steps ("cloud:0:1:home.x")."""
    by_wire = {wire_name(n): n for n in tools}
    out = Outcome()
    convo = list(messages)
    for step in range(max(1, max_steps)):
        if step and before_step is not None and (stop := await before_step(step)):
            out.text = out.text or stop
            break
        gen = await generate(convo, tool_specs)
        out.steps = step + 1
        out.text = gen.text.strip()
        if not gen.tool_calls:
            break
        # "" rather than null: llama-cpp-python's server rejects a null content
        convo.append({"role": "assistant", "content": gen.text or "", "tool_calls": [
            {"id": c["id"], "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in gen.tool_calls]})
        for i, c in enumerate(gen.tool_calls):
            name = by_wire.get(c["name"], c["name"])
            try:
                args = json.loads(c["arguments"] or "{}")
            except ValueError:
                args = None
            if not isinstance(args, dict):
                result: Any = {"error": "arguments must be a JSON object"}
                out.calls.append(ToolCall(tool=name, arguments={}, result=result))
            else:
                call = await runner.call(name, args, request=request, agent=agent,
                                         agent_tools=agent_tools, ctx=ctx,
                                         step=f"{label}:{step}:{i}:{name}", plan=plan)
                out.calls.append(call)
                result = call.result
            content = scrub(json.dumps(result, default=str))[:4000]
            convo.append({"role": "tool", "tool_call_id": c["id"], "content": content})
    return out
