"""The daemon's lifecycle: start/stop order, signals, sd_notify, the watchdog.

Data flows one way (see ``edged.spine``): bus -> ingest (classify, journal, ack) ->
dispatch (claim by priority) -> stage (agent) -> journal (done + outbox, one transaction)
-> sender -> bus.

Start: journal open, agents and memory, crash recovery, bus connect. Stop (SIGTERM/SIGINT):
stop taking new messages, let in-flight work finish until the deadline (then checkpoint it
back to the journal), flush the outbox, publish offline status, disconnect keeping the
session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from . import __version__, status
from .agents import Stage
from .app import App, subscriptions
from .bus.client import MQTTBus, Will
from .config import Config, mqtt_password
from .governor import Reader
from .metrics import serve_metrics
from .notify import notify, watchdog_interval
from .reload import Reloader
from .spine import Dispatcher, Ingest, Sender, release_timers

log = logging.getLogger("edged.service")


def _publish_now(bus: MQTTBus, topic: str, body: bytes, correlation: bytes | None) -> None:
    """QoS 0, not journaled: the streamed words of an answer (a lost piece is only lost)."""
    fut = bus.publish(topic, body, qos=0, correlation=correlation)
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())


class Daemon:
    """One running edged: an :class:`~edged.app.App`, its bus and the spine's tasks."""

    def __init__(self, cfg: Config, *, stages: dict[str, Stage] | None = None,
                 clock: Callable[[], float] = time.time,
                 sensors: Reader | None = None) -> None:
        self.app = App(cfg, stages=stages, clock=clock, sensors=sensors)
        self.reloader = Reloader(self.app)
        self.dispatcher = Dispatcher(self.app)
        self.bus: MQTTBus | None = None
        self.ready = asyncio.Event()
        self.stopped = asyncio.Event()
        self._stop = asyncio.Event()

    @property
    def config_path(self) -> Path | None:
        """The file SIGHUP re-reads (set by the CLI); None reloads the plugins only."""
        return self.reloader.config_path

    @config_path.setter
    def config_path(self, path: Path | None) -> None:
        self.reloader.config_path = path

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stopping")
        self._stop.set()

    async def run(self, *, install_signals: bool = False) -> None:
        app, cfg = self.app, self.app.cfg
        try:
            await app.start()
            await self.dispatcher.recover()
            # From here on a storage fault degrades instead of failing: writes wait it out
            # (at start it fails the start: `edged run` names `edged journal check|recover`).
            app.journal.on_degraded = self._storage_changed
            app.journal.wait_out_faults = True
            self.bus = bus = MQTTBus(
                cfg.mqtt, subscriptions=subscriptions(cfg, app.topics),
                password=mqtt_password(cfg), on_ready=self._on_ready,
                will=Will(app.topics.status, self.status_payload("offline")))
            self.reloader.resubscribe = bus.resubscribe
            self.dispatcher.live = partial(_publish_now, bus)
            if install_signals:
                self._install_signals()
            ingest, sender = Ingest(app, bus), Sender(app, bus)
            async with asyncio.TaskGroup() as tg:
                spine = {name: tg.create_task(coro, name=name) for name, coro in [
                    ("ingest", ingest.run()), ("dispatch", self.dispatcher.run(tg)),
                    ("sender", sender.run()), ("periodic", self._periodic())]}
                helpers = [tg.create_task(coro, name=name) for name, coro in [
                    ("model-reaper", app.pool.run_reaper()), ("timers", release_timers(app)),
                    ("governor", app.governor.run()), ("scheduler", app.scheduler.run()),
                    ("watchdog", self._watchdog()),
                    *([("metrics", self._serve_metrics())] if cfg.metrics.enabled else []),
                    *([("memory-reembed", app.reembed())] if app.memory else []),
                    *([("cloud", app.escalator.run())] if app.escalator else [])]]
                bus_task = tg.create_task(bus.run(), name="bus")
                self.ready.set()
                notify("READY=1\nSTATUS=" + cfg.summary())
                log.info("edged %s running: %s", __version__, cfg.summary())
                await self._stop.wait()
                notify("STOPPING=1")
                await self._shutdown(spine, sender)
                for t in helpers:
                    t.cancel()
                await app.pool.close()
                await bus.stop()
                bus_task.cancel()
        finally:
            await app.close()
            self.stopped.set()
            log.info("stopped")

    async def _shutdown(self, spine: dict[str, asyncio.Task[None]], sender: Sender) -> None:
        assert self.bus is not None
        deadline = time.monotonic() + self.app.cfg.delivery.shutdown_timeout_s
        self.app.spine.stopping = True
        # 1. Stop taking messages: unjournaled ones are not acked; the broker keeps them.
        self.bus.inbox.put_nowait(None)  # type: ignore[arg-type]
        await _wait(spine["ingest"], deadline)
        spine["dispatch"].cancel()
        spine["periodic"].cancel()
        # 2. Let in-flight work finish; checkpoint the rest back to the journal.
        await self.dispatcher.drain(deadline)
        # 3. Flush the outbox while the broker is reachable.
        await sender.flush(deadline)
        spine["sender"].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await spine["sender"]
        # 4. Offline status (the will covers a crash; a clean disconnect needs it explicitly).
        if self.bus.connected.is_set():
            fut = self.bus.publish(self.app.topics.status, self.status_payload("offline"),
                                   retain=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(fut, 2.0)

    # -- health and status ----------------------------------------------------------------------

    def status_payload(self, state: str) -> bytes:
        return status.payload(self.app, self.bus, state)

    async def health(self) -> str | None:
        return await status.health(self.app, self.bus)

    async def _watchdog(self) -> None:
        """WATCHDOG=1 every WatchdogSec/2 while healthy; when not, the pings stop and systemd
        restarts the service (a hung loop stops them by itself)."""
        interval = watchdog_interval()
        if interval is None:
            return
        sick = False
        while True:
            problem = await self.health()
            if problem is None:
                notify("WATCHDOG=1")
                if sick:
                    log.warning("healthy again: watchdog pings resume")
                    notify("STATUS=online: healthy again")
                sick = False
            elif not sick:
                sick = True
                self.app.last_error = f"unhealthy: {problem}"
                log.error("unhealthy: %s: watchdog pings stop (systemd will restart edged)",
                          problem)
                notify(f"STATUS=unhealthy: {problem}")
            await asyncio.sleep(interval)

    def _storage_changed(self, fault: str) -> None:
        """The journal began (``fault``) or ended waiting out a storage fault: say so in the
        log, sd_notify STATUS and the status topic. Meanwhile nothing new is acked (the
        broker keeps it) and nothing claimed is lost: its writes are retried."""
        if fault:
            log.error("journal writes fail: %s; new messages are not acked (the broker keeps "
                      "them) and writes are retried with back-off", fault)
            self.app.note_error(f"storage: {fault[:250]}")
            notify(f"STATUS=degraded: journal writes fail: {fault[:200]}")
        else:
            log.warning("journal writable again: resuming")
            notify("STATUS=online: journal writable again")
        self._publish_status()

    def _publish_status(self) -> None:
        if self.bus is not None and self.bus.connected.is_set():
            self.bus.publish(self.app.topics.status, self.status_payload("online"), retain=True)

    def _on_ready(self, session_present: bool) -> None:
        assert self.bus is not None
        if not session_present:
            log.info("broker has no session for us: subscriptions re-created")
        self._publish_status()
        notify(f"STATUS=online: subscribed on {self.bus.server_address()}, "
               f"{self.app.spine.open} pending, {self.app.journal.outbox_rows} in outbox")
        self.app.spine.wake_outbox()

    async def _periodic(self) -> None:
        """Status every ``delivery.status_interval_s``; journal clean-up every 10 minutes."""
        interval = self.app.cfg.delivery.status_interval_s
        last_cleanup = 0.0
        while True:
            await asyncio.sleep(interval)
            self._publish_status()
            if time.monotonic() - last_cleanup > 600:
                last_cleanup = time.monotonic()
                removed = await self.app.journal.cleanup()
                if any(removed.values()):
                    log.info("journal clean-up: %s", removed)

    async def _serve_metrics(self) -> None:
        host, port = self.app.cfg.metrics.listen.rsplit(":", 1)
        await serve_metrics(host, int(port), lambda: self.app.metrics.render(self.app, self.bus))

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(
            signal.SIGHUP, lambda: asyncio.ensure_future(self.reloader.reload_logged()))


async def _wait(task: asyncio.Task[Any], deadline: float) -> None:
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), max(0.01, deadline - time.monotonic()))
    if not task.done():
        task.cancel()
