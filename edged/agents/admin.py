"""The built-in ``models`` agent: load, unload or list the daemon's models on request.

``edged models load|unload|list`` send ``{"agent": "models", "data": {"action": "load",
"model": "small"}}`` to ``edged/in/<device>`` like any request, so the command is journaled,
deduplicated and answered like the rest. Which device may do it is the ACL's business, in
code: each action is checked as the tool name ``models.<action>`` (``deny = ["models.*"]``
keeps a device away from it); a refusal is an error reply and a dead-letter copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..messages import BadRequest, Reply, Request
from ..models import ModelError
from ..tools.acl import ACL
from .base import Context

if TYPE_CHECKING:
    from ..models.pool import ModelPool

ACTIONS = ("load", "unload", "list")


class ModelsAgent:
    name = "models"

    def __init__(self, pool: ModelPool, acl: Callable[[], ACL]) -> None:
        self.pool = pool
        self.acl = acl  # the current ACL (SIGHUP replaces it)

    async def handle(self, request: Request, ctx: Context) -> Reply:
        data = request.data if isinstance(request.data, dict) else {}
        words = request.text.split()
        action = str(data.get("action") or (words[0] if words else "list"))
        alias = data.get("model") or (words[1] if len(words) > 1 else None)
        if action not in ACTIONS:
            raise BadRequest("bad_request", f"models: unknown action {action!r}; "
                             f"expected one of {', '.join(ACTIONS)}")
        decision = self.acl().check(f"models.{action}", topic=request.topic,
                                  device=request.device)
        if not decision.allowed:
            raise BadRequest("forbidden", f"models.{action} is not allowed for device "
                             f"{request.device!r}: {decision.reason}")
        if action == "list":
            return self._reply(request, "\n".join(_line(m) for m in self.pool.describe())
                               or "no models configured")
        if not isinstance(alias, str) or alias not in self.pool.aliases:
            raise BadRequest("bad_request", f"models {action}: no model named {alias!r}; "
                             f"configured: {', '.join(self.pool.aliases) or 'none'}")
        if action == "load":
            try:
                await self.pool.load(alias, reset=True)
            except ModelError as e:
                raise BadRequest("model_error", str(e)) from None
            m = next(m for m in self.pool.describe() if m["alias"] == alias)
            return self._reply(request, f"loaded {alias} in {m['load_seconds']:.2f} s, "
                               f"+{m['rss_delta_mb']:.0f} MB RSS")
        if await self.pool.unload(alias, "request"):
            return self._reply(request, f"unloaded {alias}")
        loaded = alias in self.pool.loaded()
        return self._reply(request, f"{alias} is busy generating; it unloads when idle"
                           if loaded else f"{alias} was not loaded")

    def _reply(self, request: Request, text: str) -> Reply:
        return Reply(id=request.id, agent=self.name, text=text)


def _line(m: dict[str, Any]) -> str:
    state = (f"loaded (+{m['rss_delta_mb']:.0f} MB, {m['generations']} generations, "
             f"{m['tokens_per_s']:g} tokens/s)" if m["loaded"] else "not loaded")
    if m.get("failed"):
        state = f"FAILED: {m['failed']}"
    elif m.get("crashes"):
        state += f"; {m['crashes']} crash(es), last: {m['last_crash']}"
    return f"{m['alias']} ({m['backend']}): {state}"
