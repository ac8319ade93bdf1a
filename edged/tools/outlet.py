"""What plugins get to reach the outside, decoupled from the daemon.

:class:`PluginOutlet` implements the plugin API's ``publish`` and :class:`~edged.plugin.Timers`
on the journal alone: a publish is a row in the durable outbox, a timer a durable scheduled
row. The owner (the daemon) hands in two wake functions: one for the sender, so that a
published row goes out now, one for the timer loop, so that it sees a timer sooner than the
one it sleeps for. Topics are checked before anything is journaled: a topic that cannot be
published on is the plugin's ValueError, never a poisoned outbox row.
"""

from __future__ import annotations

from collections.abc import Callable

from ..bus.topics import is_publishable
from ..journal import Journal, OutRow

PLUGIN_PRIORITY = 5


class PluginOutlet:
    """``publish`` and the :class:`~edged.plugin.Timers` methods for every plugin's
    :class:`~edged.plugin.ToolContext` (one instance per daemon, shared)."""

    def __init__(self, journal: Journal, *, wake_outbox: Callable[[], None],
                 wake_timers: Callable[[], None]) -> None:
        self.journal = journal
        self._wake_outbox = wake_outbox
        self._wake_timers = wake_timers

    async def publish(self, topic: str, payload: bytes | str) -> None:
        """Publish through the durable outbox (e.g. a reminder that is due)."""
        data = _checked(topic, payload)
        await self.journal.enqueue([OutRow(topic=topic, payload=data,
                                           priority=PLUGIN_PRIORITY, kind="plugin")])
        self._wake_outbox()

    async def schedule(self, key: str, due: float, topic: str, payload: bytes | str) -> None:
        """Publish later (a reminder), durably; the same key replaces."""
        data = _checked(topic, payload)
        await self.journal.schedule(key, due, topic, data)
        self._wake_timers()

    async def unschedule(self, key: str) -> bool:
        return bool(await self.journal.unschedule(key))

    async def scheduled(self, prefix: str = "") -> list[tuple[str, float]]:
        return list(await self.journal.scheduled(prefix))


def _checked(topic: str, payload: bytes | str) -> bytes:
    if not is_publishable(topic):  # validated before it is journaled
        raise ValueError(f"cannot publish on {topic[:200]!r}: not a valid MQTT topic")
    return payload.encode() if isinstance(payload, str) else payload
