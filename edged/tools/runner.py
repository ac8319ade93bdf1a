"""Running a tool for a request: visibility, ACL, schema, at-most-once, timeout, audit.

Order of checks, all in code and before the tool runs: the tool exists; the agent may see it
(its ``tools`` patterns); the ACL allows it for this device/topic; the arguments validate
against its schema. Then it runs once per request (``Context.once``) with a timeout; sync
tools run in a thread. Any failure becomes an error result for the agent, never an exception
out of the agent loop. Every call, run or refused, is written to the audit trail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import msgspec

from ..journal import Journal, StepFailed, StepInDoubt
from ..messages import Request, ToolCall
from .acl import ACL
from .base import ArgumentError, Tool, ToolContext
from .registry import Registry

log = logging.getLogger("edged.tools")


class ToolRunner:
    def __init__(self, registry: Registry, acl: ACL, journal: Journal | None = None, *,
                 default_timeout_s: float = 10.0,
                 emit: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
                 state_dir: Path | None = None,
                 publish: Callable[[str, bytes | str], Awaitable[None]] | None = None,
                 scheduler: Any = None) -> None:
        self.state_dir = state_dir or Path(".")
        self.publish = publish
        self.scheduler = scheduler  # .schedule(key, due, topic, payload) and .journal
        self.memory: Any = None  # edged.memory.MemoryAccess once memory is open
        self.registry = registry
        self.acl = acl
        self.journal = journal
        self.default_timeout_s = default_timeout_s
        self._emit = emit
        self.stats = {"calls": 0, "errors": 0, "refused": 0, "timeouts": 0}
        self.on_timing: Callable[[str, float], None] | None = None  # ("tool", seconds)

    def visible(self, patterns: list[str] | None) -> list[Tool]:
        return self.registry.matching(patterns)

    async def call(self, name: str, arguments: dict[str, Any], *, request: Request,
                   agent: str, agent_tools: list[str] | None, ctx: Any = None,
                   step: str | None = None) -> ToolCall:
        """Run one tool call and return it with its result (``{"error": ...}`` on failure)."""
        t0 = time.perf_counter()
        audit: dict[str, Any] = {"inbox_id": getattr(ctx, "inbox_id", None),
                                 "request_id": request.id, "device": request.device,
                                 "topic": request.topic, "agent": agent, "tool": name,
                                 "arguments": _dump(arguments)}

        async def finish(outcome: str, result: Any, detail: str = "") -> ToolCall:
            took = time.perf_counter() - t0
            audit.update(outcome=outcome, detail=detail[:500], duration_ms=round(took * 1000, 2))
            if self.on_timing is not None:
                self.on_timing("tool", took)
            if self.journal is not None:
                try:
                    await self.journal.audit(**audit)
                except Exception as e:  # noqa: BLE001 - auditing must not break the reply
                    log.error("cannot record tool call audit: %s", e)
            return ToolCall(tool=name, arguments=arguments, result=result)

        tool = self.registry.get(name)
        if tool is None:
            self.stats["errors"] += 1
            return await finish("unknown", {"error": f"no tool named {name!r}"})
        if agent_tools is not None and not any(fnmatchcase(name, p) for p in agent_tools):
            self.stats["refused"] += 1
            return await finish("refused", {"error": f"agent {agent!r} may not use {name}"},
                                "not in the agent's tools")
        decision = self.acl.check(name, topic=request.topic, device=request.device)
        if not decision.allowed:
            self.stats["refused"] += 1
            log.warning("ACL refused %s for device %s on %s: %s", name, request.device,
                        request.topic, decision.reason)
            if self._emit is not None:
                await self._emit("tool_refused", {"tool": name, "device": request.device,
                                                  "topic": request.topic, "agent": agent,
                                                  "request_id": request.id,
                                                  "reason": decision.reason})
            return await finish("refused", {"error": f"not allowed: {decision.reason}"},
                                decision.reason)
        try:
            args = tool.validate(arguments)
        except ArgumentError as e:
            self.stats["errors"] += 1
            return await finish("invalid", {"error": str(e)}, str(e))

        timeout = tool.timeout_s or self.default_timeout_s
        if tool.context_param:
            args[tool.context_param] = ToolContext(
                request_id=request.id, device=request.device, topic=request.topic,
                agent=agent, state_dir=self.state_dir / "plugins" / tool.plugin,
                publish=self.publish, scheduler=self.scheduler, memory=self.memory,
                text=request.text)

        async def run() -> Any:
            if tool.is_async:
                coro = tool.func(**args)
            else:
                coro = asyncio.to_thread(tool.func, **args)
            return _jsonable(await asyncio.wait_for(coro, timeout))

        self.stats["calls"] += 1
        try:
            if ctx is not None:
                result = await ctx.once(step or f"tool:{name}", run)
            else:
                result = await run()
        except TimeoutError:
            self.stats["timeouts"] += 1
            return await finish("timeout", {"error": f"{name} timed out after {timeout:g} s"})
        except (StepInDoubt, StepFailed) as e:
            self.stats["errors"] += 1
            return await finish("not_rerun", {"error": str(e)}, str(e))
        except Exception as e:  # noqa: BLE001 - a tool's failure is the agent's error result
            self.stats["errors"] += 1
            log.warning("tool %s failed: %r", name, e)
            return await finish("error", {"error": f"{type(e).__name__}: {e}"}, repr(e))
        if self._emit is not None:
            await self._emit("tool_call", {"tool": name, "device": request.device,
                                           "agent": agent, "request_id": request.id})
        return await finish("ok", result)


def _dump(v: Any) -> str:
    try:
        return msgspec.json.encode(v).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(v)


def _jsonable(v: Any) -> Any:
    """Tool results go into replies and the journal: make them JSON values."""
    try:
        return msgspec.json.decode(msgspec.json.encode(v))
    except (TypeError, msgspec.EncodeError):
        return repr(v)
