"""The processing-stage interface: what the bus-and-journal spine calls for each request.

A stage gets a parsed :class:`~edged.messages.Request` and a :class:`Context`, and returns a
:class:`~edged.messages.Reply`. It never touches MQTT or the journal directly: side effects go
through :meth:`Context.once` (at most once per request, across crashes) and events through
:meth:`Context.emit`. Raising an exception fails the attempt; the spine retries up to
``delivery.max_attempts`` and then dead-letters the request with an error reply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import msgspec

from ..journal import Journal, StepFailed, StepInDoubt
from ..messages import Reply, Request

T = TypeVar("T")


class Stage(Protocol):
    name: str

    async def handle(self, request: Request, ctx: Context) -> Reply: ...


class Context:
    """Per-request services a stage may use."""

    def __init__(self, journal: Journal, inbox_id: int,
                 emit: Callable[[str, dict[str, Any]], Awaitable[None]],
                 partial: Callable[[str], None] | None = None) -> None:
        self._journal = journal
        self.inbox_id = inbox_id
        self._emit = emit
        self._partial = partial

    @property
    def streams(self) -> bool:
        """The reply's words can be streamed as they come (the request has a reply topic
        and the bus is up)."""
        return self._partial is not None

    def stream(self, delta: str) -> None:
        """Pass on a piece of the answer as the model writes it: best effort (QoS 0, not
        journaled; a retry streams again); the final reply is the one that counts."""
        if self._partial is not None and delta:
            self._partial(delta)

    async def once(self, key: str, fn: Callable[[], Awaitable[T]], type_: type[T] | Any = Any) -> T:
        """Run a side effect at most once for this request, even across crashes.

        The start is committed before ``fn`` runs and the (JSON-encodable) result after; a
        rerun returns the recorded result. A step that started but never finished (the daemon
        died inside it) raises :class:`~edged.journal.StepInDoubt` instead of running again;
        one that raised is recorded as failed and raises :class:`~edged.journal.StepFailed` on
        a later attempt: a side effect never runs twice for one request.
        """
        state, stored = await self._journal.step_begin(self.inbox_id, key)
        if state == "done":
            return msgspec.json.decode(stored or b"null", type=type_)
        try:
            result = await fn()
        except Exception as e:
            await self._journal.step_fail(self.inbox_id, key, repr(e))
            raise
        await self._journal.step_end(self.inbox_id, key, msgspec.json.encode(result))
        return result

    async def emit(self, kind: str, data: dict[str, Any]) -> None:
        """Publish an event on <prefix>/events/<kind> (through the durable outbox)."""
        await self._emit(kind, data)


__all__ = ["Context", "Stage", "StepFailed", "StepInDoubt"]
