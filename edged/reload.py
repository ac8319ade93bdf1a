"""SIGHUP: re-read the config file and the plugins, applying what can change while running.

No message is touched: the journal and the bus keep running, and requests in flight finish
with the agent (and tools) they started with. An invalid file is rejected with its error and
the running config stays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from . import config as config_mod
from .app import App, subscriptions
from .notify import notify
from .router import Router
from .tools import registry as tool_registry
from .tools.acl import ACL

log = logging.getLogger("edged.reload")

# sections a reload applies at once; the others need a restart (connections, files, loaded
# models, running tasks) and keep their running values until then
HOT_SECTIONS = ("log", "agents", "routes", "router", "plugins", "acl")


class Reloader:
    def __init__(self, app: App, *, resubscribe: Callable[[list[str]], object] | None = None
                 ) -> None:
        self.app = app
        self.config_path: Path | None = None  # None: plugins only (no file to re-read)
        self.resubscribe = resubscribe  # the bus's, once connected
        self._lock = asyncio.Lock()

    async def reload(self) -> dict[str, Any]:
        """Apply agents, routes, router, plugins and ACL from the file at once; name the
        sections that wait for a restart."""
        if self.config_path is None:
            return await self.reload_plugins()
        app = self.app
        try:
            new = await asyncio.to_thread(config_mod.load, self.config_path)
        except config_mod.ConfigError as e:
            app.last_error = f"reload rejected: {e}"
            log.error("reload rejected, the running config stays: %s", e)
            notify(f"STATUS=online (reload rejected: {str(e).splitlines()[0][:200]})")
            await app.emit("reload_failed", {"error": str(e)[:2000]})
            return {"ok": False, "error": str(e)}
        async with self._lock:
            old = app.cfg
            restart = [f for f in new.__struct_fields__
                       if f not in HOT_SECTIONS and getattr(new, f) != getattr(old, f)]
            cfg = msgspec.structs.replace(new, **{f: getattr(old, f) for f in restart})
            app.cfg = cfg
            app.router = Router(list(cfg.routes), cfg.router.default_agent, app.topics,
                                classify=len(cfg.agents) > 1)
            app.runner.acl = ACL(list(cfg.acl), prefix=cfg.mqtt.topic_prefix)
            app.runner.default_timeout_s = cfg.plugins.tool_timeout_s
            for name in [n for n in old.agents if n not in cfg.agents]:
                app.stages.pop(name, None)  # removed agents stop taking requests
            if self.resubscribe is not None:
                self.resubscribe(subscriptions(cfg, app.topics))
            logging.getLogger("edged").setLevel(cfg.log.level.upper())
        summary = await self.reload_plugins()
        summary.update(ok=True, restart_needed=restart)
        if restart:
            log.warning("config reloaded; these sections change only after a restart: %s",
                        ", ".join(restart))
        else:
            log.info("config reloaded")
        await app.emit("config_reloaded", {"restart_needed": restart,
                                           "agents": sorted(cfg.agents),
                                           "routes": [r.topic for r in cfg.routes]})
        return summary

    async def reload_plugins(self) -> dict[str, Any]:
        """Re-import the plugins (each import under its timeout) and rebuild the agents."""
        app = self.app
        async with self._lock:
            registry = await asyncio.to_thread(
                tool_registry.load, list(app.cfg.plugins.dirs),
                import_timeout_s=app.cfg.plugins.import_timeout_s)
            app.registry = registry
            app.runner.registry = registry
            if app.embedder is not None:
                await app.build_agents()
            summary: dict[str, Any] = {
                "tools": len(registry.tools),
                "errors": [f"{e.plugin}: {e.error}" for e in registry.errors]}
            log.info("plugins reloaded: %d tool(s), %d error(s)", summary["tools"],
                     len(summary["errors"]))
            await app.emit("plugins_reloaded", summary)
            return summary

    async def reload_logged(self) -> None:
        try:
            await self.reload()
        except Exception:  # noqa: BLE001 - a failed reload must not take the daemon down
            log.exception("reload failed; the running config stays")
