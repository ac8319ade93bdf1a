"""The public plugin API: everything a plugin imports from edged, and nothing else.

```python
import time

from edged.plugin import ToolContext, tool

@tool(examples=[("set a timer for 10 minutes", {"minutes": 10})])
async def set_timer(minutes: float, *, ctx: ToolContext) -> dict:
    '''Start a countdown timer.'''
    await ctx.schedule(f"timers:{ctx.device}:timer", time.time() + minutes * 60,
                       ctx.reply_topic, "time is up")
    return {"minutes": minutes}
```

A plugin sees the request it serves (:class:`ToolContext`) and, through it, small typed
interfaces: ``publish`` (through the durable outbox), :class:`Timers` (durable delayed
publishes) and :class:`Memories` (the device's long-term memory). It never sees the daemon;
the core implements these (:class:`edged.tools.outlet.PluginOutlet`,
:class:`edged.memory.MemoryAccess`) and tests can hand in their own.

This module is a leaf: it imports nothing from edged, so importing it is cheap.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, overload

__all__ = ["Memories", "MemoryItem", "Publish", "Remembered", "Timers", "ToolContext",
           "ToolError", "tool"]

TOOL_ATTR = "__edged_tool__"

Publish = Callable[[str, bytes | str], Awaitable[None]]
"""``await publish(topic, payload)``: publish through the durable outbox (at-least-once)."""


class ToolError(Exception):
    """A tool problem the agent sees as an error result (its message, without a traceback)."""


class Timers(Protocol):
    """Durable delayed publishes: they survive a restart of edged.

    Keys are shared by every plugin: start yours with the plugin's name (and the device,
    for per-device timers), e.g. ``timers:<device>:<label>``; the same key replaces.
    """

    async def schedule(self, key: str, due: float, topic: str, payload: bytes | str) -> None:
        """Publish ``payload`` on ``topic`` at ``due`` (epoch seconds); the same key replaces.
        ValueError for a topic that cannot be published on."""
        ...

    async def unschedule(self, key: str) -> bool:
        """Cancel a scheduled publish; False when there was none."""
        ...

    async def scheduled(self, prefix: str = "") -> list[tuple[str, float]]:
        """``(key, due)`` of the scheduled publishes whose key starts with ``prefix``,
        soonest first."""
        ...


class MemoryItem(Protocol):
    """One long-term memory, as a tool sees it."""

    @property
    def kind(self) -> str: ...  # fact | preference | decision | ...

    @property
    def text(self) -> str: ...

    @property
    def importance(self) -> float: ...

    @property
    def private(self) -> bool: ...  # sensitive: never sent to the cloud


class Remembered(Protocol):
    """What remembering did: ``op`` is ADD, UPDATE, DELETE or NOOP (already known)."""

    @property
    def op(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def text(self) -> str: ...


class Memories(Protocol):
    """Long-term memory, always in one scope (a tool passes ``ctx.device``)."""

    async def remember(self, scope: str, text: str, kind: str | None, source: str
                       ) -> Remembered | None:
        """Remember ``text`` (``kind`` found from the words when None), deciding ADD /
        UPDATE / NOOP against what is known; ``source`` is the request id. None when there
        is nothing to remember."""
        ...

    async def search(self, scope: str, query: str, k: int | None = None,
                     kinds: Sequence[str] | None = None) -> Sequence[MemoryItem]:
        """The ``k`` memories nearest to ``query``, best first."""
        ...

    async def important(self, scope: str, k: int | None = None) -> Sequence[MemoryItem]:
        """The scope's facts, preferences and decisions, most important first."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolContext:
    """The request a tool serves and what it may use; handed to a tool that declares a
    parameter of this type (that parameter is not part of the tool's schema).

    ``publish``, ``timers`` and ``memory`` are None where the service is not available
    (memory off, or a tool run outside the daemon)."""

    request_id: str
    device: str
    topic: str  # the topic the request came in on
    agent: str
    text: str = ""  # the request's own words
    state_dir: Path  # this plugin's own folder for its files (may not exist yet)
    reply_topic: str = ""  # where the request's reply goes ("" when it has none)
    publish: Publish | None = None
    timers: Timers | None = None
    memory: Memories | None = None

    async def schedule(self, key: str, due: float, topic: str, payload: bytes | str) -> None:
        """Publish later, durably (see :class:`Timers`); the same key replaces."""
        if self.timers is None:
            raise RuntimeError("no scheduler: this tool runs outside the daemon")
        await self.timers.schedule(key, due, topic, payload)

    async def unschedule(self, key: str) -> bool:
        if self.timers is None:
            return False
        return bool(await self.timers.unschedule(key))

    async def scheduled(self, prefix: str = "") -> list[tuple[str, float]]:
        if self.timers is None:
            return []
        return list(await self.timers.scheduled(prefix))


@overload
def tool(func: Callable[..., Any]) -> Callable[..., Any]: ...
@overload
def tool(*, name: str | None = None, timeout_s: float | None = None,
         examples: list[Any] | None = None,
         aliases: dict[str, dict[str, str]] | None = None,
         not_examples: list[str] | None = None, confirm: bool = False,
         reply: str | None = None,
         ) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...


def tool(func: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Mark a function as a tool: ``@tool`` or ``@tool(examples=[...], aliases={...})``.

    The function stays callable as before; the loader finds it by the attribute this sets.
    ``examples`` are utterances, or ``(utterance, {arguments})`` pairs; ``aliases`` map an
    argument's spoken words to its values, e.g. ``{"room": {"lounge": "living room"}}``;
    ``not_examples`` are requests that sound alike but are for another tool; ``confirm``
    marks a sensitive tool: a cloud or multi-step plan cannot run it without a confirmation
    from the device (``{"data": {"confirm": "<token>"}}``, single use, 5 minutes);
    ``reply`` is the sentence the device hears after a call, formatted with the arguments
    and the result's keys: ``"The {room} lights are {on:on|off}."`` (``{flag:yes|no}``
    picks by truth); without one, a sentence is built from the tool and its result.
    """
    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        setattr(f, TOOL_ATTR, options)
        return f

    return mark(func) if func is not None else mark
