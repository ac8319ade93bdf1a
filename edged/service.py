"""The daemon: start/stop order, the delivery spine's tasks, signals, status.

Data flows one way: bus -> ingest (classify, journal, ack) -> dispatcher (claim by priority)
-> stage (agent) -> journal (done + outbox, one transaction) -> sender -> bus.

Start: journal open, crash recovery, bus connect. Stop (SIGTERM/SIGINT): stop taking new
messages, let in-flight work finish until the deadline (then checkpoint it back to the
journal), flush the outbox, publish offline status, disconnect keeping the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from . import __version__
from .agents import Context, EchoAgent, Stage
from .agents.admin import ModelsAgent
from .agents.selector import CentroidIndex, tool_leads
from .agents.tool_agent import ToolAgent
from .bus.client import Inbound, MQTTBus, Will
from .bus.topics import Topics, is_publishable, matches
from .config import MAX_DEVICE_ID, Config, RouteConfig, device_id_error, mqtt_password
from .escalation import Escalator
from .governor import Governor, Reader
from .journal import (
    PRIO_DLQ,
    PRIO_EVENT,
    InboxRow,
    Incoming,
    Journal,
    JournalError,
    Meta,
    OutRow,
    StepFailed,
    StepInDoubt,
    dead_letter_payload,
)
from .limits import TokenBuckets
from .memory import (
    Consolidator,
    Memory,
    MemoryAccess,
    MemoryStoreError,
    open_embedder,
    schema_generate,
)
from .messages import (
    BadRequest,
    ErrorBody,
    ErrorReply,
    Event,
    Request,
    Status,
    content_key,
    message_key,
    parse,
)
from .metrics import Metrics, serve_metrics
from .models.pool import ModelPool, rss_bytes
from .notify import notify, watchdog_interval
from .router import AUTO, Router
from .scheduler import Scheduler
from .tools import registry as tool_registry
from .tools.acl import ACL
from .tools.runner import ToolRunner

log = logging.getLogger("edged.service")

_PROPS_ENC = msgspec.msgpack.Encoder()
_PROPS_DEC = msgspec.msgpack.Decoder(dict[str, Any])
STORED_PREFIX = 1024  # bytes of an over-limit payload kept in the journal (and the DLQ)
SEND_ATTEMPTS = 5  # publishes of one outbox row that fail before it is dead-lettered
RETRYABLE = frozenset({"rate_limited", "overloaded"})  # refused for now, not for this request


class Daemon:
    """One running edged. ``stages`` adds processing stages (agents) by name."""

    def __init__(self, cfg: Config, *, stages: dict[str, Stage] | None = None,
                 clock: Callable[[], float] = time.time,
                 sensors: Reader | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.topics = Topics(cfg.mqtt.topic_prefix)
        self.router = Router(list(cfg.routes), cfg.router.default_agent, self.topics,
                             classify=len(cfg.agents) > 1)
        self.stages: dict[str, Stage] = {"echo": EchoAgent()}
        self.stages.update(stages or {})
        d = cfg.delivery
        self.journal = Journal(
            cfg.db_path, synchronous=cfg.storage.synchronous.upper(),
            dedup_window_s=d.dedup_window_s, correlation_window_s=d.correlation_window_s,
            retention_s=d.retention_s, outbox_max_rows=d.outbox_max_rows,
            outbox_ttl_s=d.outbox_ttl_s, clock=clock,
        )
        self.limits = TokenBuckets(d.rate_per_s, d.rate_burst)
        self.pool = ModelPool(dict(cfg.models), cfg.resources, emit=self.emit)
        self.governor = Governor(cfg.resources, sensors, pool=self.pool, emit=self.emit)
        self.registry = tool_registry.load(list(cfg.plugins.dirs),
                                           import_timeout_s=cfg.plugins.import_timeout_s)
        self.runner = ToolRunner(self.registry, ACL(list(cfg.acl), prefix=cfg.mqtt.topic_prefix),
                                 self.journal,
                                 default_timeout_s=cfg.plugins.tool_timeout_s, emit=self.emit,
                                 state_dir=cfg.db_path.parent, publish=self.publish,
                                 scheduler=self, threads=cfg.plugins.tool_threads,
                                 stuck_after_s=cfg.resources.stuck_after_s)
        self.stages.setdefault("models", ModelsAgent(self.pool, lambda: self.runner.acl))
        self.escalator: Escalator | None = Escalator(
            cfg.cloud, self.journal, runner=self.runner, emit=self.emit,
            wake_outbox=self._wake_sender, clock=clock) if cfg.cloud.enabled else None
        self.agent_index: CentroidIndex | None = None
        self.embedder: Any = None
        self._embed_fn: Any = None
        self._embedder_id = ""
        self.memory: Memory | None = None
        self.consolidator: Consolidator | None = None
        self.memory_status: dict[str, Any] = {}
        self.scheduler = Scheduler(wall=clock)
        self.scheduler.on_jump(self._clock_jumped)
        self._shifting: asyncio.Future[None] | None = None
        self.last_error = ""
        self.config_path: Any = None  # set by the CLI: SIGHUP re-reads it
        self.metrics = Metrics()
        self.pool.on_timing = self.runner.on_timing = self.metrics.stage
        self._accepted_at: dict[int, float] = {}  # inbox id -> when journaled (queue stage)
        self._reload_lock = asyncio.Lock()
        self._timer_wake = asyncio.Event()
        self.ready = asyncio.Event()
        self.stopped = asyncio.Event()
        self.stats: dict[str, int] = {
            "in": 0, "duplicates": 0, "rejected": 0, "processed": 0, "failed": 0, "dead": 0,
            "out": 0, "sink": 0,
        }
        self._stop = asyncio.Event()
        self._work = asyncio.Event()
        self._outbox_wake = asyncio.Event()
        self._open = 0  # journaled and not finished (received + processing)
        self._active: dict[int, asyncio.Task[None]] = {}
        self._stopping = False
        self._sending = 0  # outbox rows published and not yet acknowledged
        self.bus: MQTTBus | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def _wake_sender(self) -> None:
        self._outbox_wake.set()

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stopping")
        self._stop.set()

    async def run(self, *, install_signals: bool = False) -> None:
        cfg = self.cfg
        await self.journal.open()
        try:
            await self._start_agents()
            await self._start_memory()
            await self._recover()
            # From here on a storage fault degrades instead of failing: writes wait it out
            # (at start it fails the start: `edged run` names `edged journal check|recover`).
            self.journal.on_degraded = self._storage_changed
            self.journal.wait_out_faults = True
            subs = [self.topics.inbound] + [r.topic for r in cfg.routes]
            if cfg.mqtt.shared_group:
                subs = [f"$share/{cfg.mqtt.shared_group}/{t}" for t in subs]
            self.bus = bus = MQTTBus(
                cfg.mqtt, subscriptions=list(dict.fromkeys(subs)), password=mqtt_password(cfg),
                will=Will(self.topics.status, self._status_payload("offline")),
                on_ready=self._on_ready,
            )
            if install_signals:
                self._install_signals()
            async with asyncio.TaskGroup() as tg:
                bus_task = tg.create_task(bus.run(), name="bus")
                ingest = tg.create_task(self._ingest(), name="ingest")
                dispatcher = tg.create_task(self._dispatch(tg), name="dispatch")
                sender = tg.create_task(self._send(), name="sender")
                periodic = tg.create_task(self._periodic(), name="periodic")
                reaper = tg.create_task(self.pool.run_reaper(), name="model-reaper")
                timers = tg.create_task(self._scheduled(), name="scheduled")
                governor = tg.create_task(self.governor.run(), name="governor")
                scheduler = tg.create_task(self.scheduler.run(), name="scheduler")
                watchdog = tg.create_task(self._watchdog(), name="watchdog")
                metrics = tg.create_task(self._serve_metrics(), name="metrics") \
                    if cfg.metrics.enabled else None
                reembed = tg.create_task(self._reembed(), name="memory-reembed") \
                    if self.memory is not None else None
                cloud = tg.create_task(self.escalator.run(), name="cloud") \
                    if self.escalator is not None else None
                self.ready.set()
                notify("READY=1\nSTATUS=" + cfg.summary())
                log.info("edged %s running: %s", __version__, cfg.summary())
                await self._stop.wait()
                notify("STOPPING=1")
                await self._shutdown(ingest, dispatcher, sender, periodic)
                reaper.cancel()
                governor.cancel()
                timers.cancel()
                scheduler.cancel()
                watchdog.cancel()
                if metrics is not None:
                    metrics.cancel()
                if reembed is not None:
                    reembed.cancel()
                if cloud is not None:
                    cloud.cancel()
                await self.pool.close()
                await bus.stop()
                bus_task.cancel()
        finally:
            if self.escalator is not None:
                await self.escalator.close()
            if self.memory is not None:
                await self.memory.close()
            if hasattr(self.embedder, "unload"):  # its worker process
                await asyncio.to_thread(self.embedder.unload)
            await self.journal.close()
            self.stopped.set()
            log.info("stopped")

    async def _start_agents(self) -> None:
        """Load the embedder and build the tool agents of ``[agents]``."""
        if not self.cfg.agents:
            return
        self._embed_fn, self._embedder_id, loaded = await open_embedder(self.cfg, self.pool)
        self.embedder = loaded or self.cfg.memory.embedder
        await self._build_agents()

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        return await self._embed_fn(texts)

    async def _start_memory(self) -> None:
        """Open the memory database, hand it to agents and tools, schedule consolidation."""
        mcfg = self.cfg.memory
        if not mcfg.enabled or self._embed_fn is None:
            return
        memory = Memory(mcfg, self.cfg.memory_path, embed=self._embed,
                        embedder_id=self._embedder_id, clock=self.clock)
        try:
            pending = await memory.open()
        except MemoryStoreError as e:  # corrupt or unreadable: the spine runs without it
            await memory.close()
            why = str(e)[:500]
            log.error("memory unavailable, agents run without it: %s (move the file aside "
                      "to start a new one)", why)
            self.memory_status = {"unavailable": why}
            self.last_error = f"{time.strftime('%H:%M:%S')} memory unavailable: {why[:250]}"
            await self.emit("memory_unavailable", {"path": str(self.cfg.memory_path),
                                                   "error": why})
            return
        if pending:
            log.warning("memory: %d memories wait for re-embedding with %s", pending,
                        memory.embedder_id)
        model = self.cfg.memory_model

        generate = schema_generate(
            self.pool, model, model_for=lambda m: self.governor.model_for(m, None)) \
            if model else None
        memory.on_timing = self.metrics.stage
        self.memory = memory
        self.consolidator = Consolidator(memory, mcfg, generate=generate,
                                         model=model, may_run=lambda: not self.governor.defer,
                                         clock=self.clock)
        self.runner.memory = MemoryAccess(memory, self.consolidator)
        for stage in self.stages.values():
            if isinstance(stage, ToolAgent):
                stage.memory = memory if stage.cfg.memory else None
        self.scheduler.every("memory-consolidate", mcfg.consolidate_every_s,
                             self.consolidate_memory)
        self.memory_status = await memory.stats()
        log.info("memory: %s (%d memories, %d turns, embedder %s)", self.cfg.memory_path,
                 self.memory_status["memories"], self.memory_status["turns"],
                 memory.embedder_id)

    async def health(self) -> str | None:
        """Why the daemon is not healthy, or None. The event loop answering this at all is
        the first check; then the journal's writer thread, stuck model calls, every tool
        thread hung, and the MQTT bus down for more than 5 minutes. A disk that refuses
        writes is not here: that is ``degraded`` (status, STATUS=), which a restart would
        not cure."""
        try:
            await asyncio.wait_for(self.journal.ping(), 10.0)
        except Exception as e:  # noqa: BLE001 - any failure is unhealthy
            return f"journal not answering: {e!r}"
        stuck = self.pool.stuck(self.cfg.resources.stuck_after_s)
        if stuck:
            return (f"model {', '.join(stuck)} held for more than "
                    f"{self.cfg.resources.stuck_after_s:g} s")
        if (tools := self.runner.health()) is not None:
            return tools  # every tool thread hung: only a restart frees them
        # a bus that never comes back (e.g. its reconnect starved) must not stay green
        bus = self.bus
        if bus is not None and bus.disconnected_since is not None:
            down_s = time.monotonic() - bus.disconnected_since
            if down_s > 300.0:
                return f"MQTT not connected for {down_s:.0f} s ({bus.state}: {bus.last_error})"
        return None

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
                self.last_error = f"unhealthy: {problem}"
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
            self.last_error = f"{time.strftime('%H:%M:%S')} storage: {fault[:250]}"
            notify(f"STATUS=degraded: journal writes fail: {fault[:200]}")
        else:
            log.warning("journal writable again: resuming")
            notify("STATUS=online: journal writable again")
        if self.bus is not None and self.bus.connected.is_set():
            self.bus.publish(self.topics.status, self._status_payload("online"), retain=True)

    def _clock_jumped(self, delta: float) -> None:
        """Keep the journal's pending deadlines (outbox TTLs, retries, timers) in step."""
        async def shift() -> None:
            moved = await self.journal.shift_times(delta)
            log.warning("clock jump: moved pending deadlines by %+.0f s: %s", delta, moved)
            self._timer_wake.set()
            self._work.set()
            await self.emit("clock_jump", {"delta_s": round(delta, 3), "moved": moved})

        self._shifting = asyncio.ensure_future(shift())

    async def _clock_settled(self) -> None:
        """Before acting on deadlines (outbox expiry): notice a jump now, not at the next
        watch tick, and let its shift land first."""
        self.scheduler.poll_jump()
        if self._shifting is not None:
            await asyncio.shield(self._shifting)
            self._shifting = None

    async def _serve_metrics(self) -> None:
        host, port = self.cfg.metrics.listen.rsplit(":", 1)
        await serve_metrics(host, int(port), self)

    async def consolidate_memory(self) -> dict[str, Any] | None:
        """The scheduled job (also ``edged memory consolidate``): deferred on battery,
        heat or memory pressure; the outcome goes out as an event."""
        if self.memory is None or self.consolidator is None:
            return None
        if self.governor.defer:
            log.info("memory: consolidation deferred (%s)", self.governor.state.name)
            await self.emit("memory_deferred", {"governor": self.governor.state.name})
            return None
        report = (await self.consolidator.run()).to_dict()
        self.memory_status = await self.memory.stats()
        await self.emit("memory_consolidated", report)
        return report

    async def _reembed(self) -> None:
        """Background: vectors for memories from an older embedder (or none yet)."""
        assert self.memory is not None
        if not await self.memory.run(self.memory.store.pending_vectors):
            return
        while await self.memory.run(self.memory.store.pending_vectors):
            await self.memory.reembed(may_run=lambda: not self.governor.defer)
            if await self.memory.run(self.memory.store.pending_vectors):
                await asyncio.sleep(30)  # deferred by the governor: try again later
        self.memory_status = await self.memory.stats()
        await self.emit("memory_reembedded", {"embedder": self.memory.embedder_id})

    async def _build_agents(self) -> None:
        """(Re)build every tool agent from the current registry, then swap them in at once:
        requests already running keep the agent (and tools) they started with."""
        stages: dict[str, Stage] = {}
        agent_texts: dict[str, list[str]] = {}
        for name, acfg in self.cfg.agents.items():
            index = CentroidIndex(self._embed)
            tools = self.runner.visible(acfg.tools or None)
            await index.build({t.name: [t.description] + [u for u, _ in t.example_pairs()]
                               for t in tools}, leads={t.name: tool_leads(t) for t in tools},
                              negatives={t.name: t.not_examples for t in tools})
            stages[name] = ToolAgent(
                name, acfg, runner=self.runner, index=index, pool=self.pool,
                model=acfg.model or None,
                model_for=lambda m, lp=acfg.low_power_model: self.governor.model_for(m, lp),
                memory=self.memory, escalator=self.escalator)
            agent_texts[name] = [acfg.description] + [
                u for t in tools for u, _ in t.example_pairs()]
            log.info("agent %s: %d tool(s): %s", name, len(tools),
                     ", ".join(t.name for t in tools) or "none")
        agent_index = None
        if len(self.cfg.agents) > 1:
            agent_index = CentroidIndex(self._embed)
            await agent_index.build(agent_texts)
        self.stages.update(stages)
        self.agent_index = agent_index
        for e in self.registry.errors:
            log.error("plugin %s not loaded: %s", e.plugin, e.error)

    # sections a reload applies at once; the others need a restart (connections, files,
    # loaded models, running tasks) and keep their running values until then
    HOT_SECTIONS = ("log", "agents", "routes", "router", "plugins", "acl")

    async def reload(self) -> dict[str, Any]:
        """SIGHUP: re-read the config file; if it is valid, apply agents, routes, router,
        plugins and ACL at once (no message is touched: the journal and the bus keep running,
        in-flight requests finish with what they started with). An invalid file is rejected
        with its error and the running config stays."""
        if self.config_path is None:
            return await self.reload_plugins()
        from . import config as config_mod

        try:
            new = await asyncio.to_thread(config_mod.load, self.config_path)
        except config_mod.ConfigError as e:
            self.last_error = f"reload rejected: {e}"
            log.error("reload rejected, the running config stays: %s", e)
            notify(f"STATUS=online (reload rejected: {str(e).splitlines()[0][:200]})")
            await self.emit("reload_failed", {"error": str(e)[:2000]})
            return {"ok": False, "error": str(e)}
        async with self._reload_lock:
            old = self.cfg
            restart = [f for f in new.__struct_fields__
                       if f not in self.HOT_SECTIONS and getattr(new, f) != getattr(old, f)]
            cfg = msgspec.structs.replace(new, **{f: getattr(old, f) for f in restart})
            self.cfg = cfg
            self.router = Router(list(cfg.routes), cfg.router.default_agent, self.topics,
                                 classify=len(cfg.agents) > 1)
            self.runner.acl = ACL(list(cfg.acl), prefix=cfg.mqtt.topic_prefix)
            self.runner.default_timeout_s = cfg.plugins.tool_timeout_s
            for name in [n for n in old.agents if n not in cfg.agents]:
                self.stages.pop(name, None)  # removed agents stop taking requests
            if self.bus is not None:
                subs = [self.topics.inbound] + [r.topic for r in cfg.routes]
                if cfg.mqtt.shared_group:
                    subs = [f"$share/{cfg.mqtt.shared_group}/{t}" for t in subs]
                self.bus.resubscribe(subs)
            logging.getLogger("edged").setLevel(cfg.log.level.upper())
        summary = await self.reload_plugins()
        summary.update(ok=True, restart_needed=restart)
        if restart:
            log.warning("config reloaded; these sections change only after a restart: %s",
                        ", ".join(restart))
        else:
            log.info("config reloaded")
        await self.emit("config_reloaded", {"restart_needed": restart,
                                            "agents": sorted(cfg.agents),
                                            "routes": [r.topic for r in cfg.routes]})
        return summary

    async def reload_plugins(self) -> dict[str, Any]:
        """Re-import the plugins and rebuild the agents; no message is touched (the journal
        and the bus keep running, in-flight requests finish with the old tools)."""
        async with self._reload_lock:
            registry = await asyncio.to_thread(
                tool_registry.load, list(self.cfg.plugins.dirs),
                import_timeout_s=self.cfg.plugins.import_timeout_s)
            self.registry = registry
            self.runner.registry = registry
            if self.embedder is not None:
                await self._build_agents()
            summary = {"tools": len(registry.tools),
                       "errors": [f"{e.plugin}: {e.error}" for e in registry.errors]}
            log.info("plugins reloaded: %d tool(s), %d error(s)", summary["tools"],
                     len(summary["errors"]))
            await self.emit("plugins_reloaded", summary)
            return summary

    async def publish(self, topic: str, payload: bytes | str) -> None:
        """For plugins: publish through the durable outbox (e.g. a reminder that is due)."""
        if not is_publishable(topic):  # validated before it is journaled
            raise ValueError(f"cannot publish on {topic[:200]!r}: not a valid MQTT topic")
        data = payload.encode() if isinstance(payload, str) else payload
        await self.journal.enqueue([OutRow(topic=topic, payload=data, priority=5,
                                           kind="plugin")])
        self._outbox_wake.set()

    async def schedule(self, key: str, due: float, topic: str, payload: bytes | str) -> None:
        """For plugins: publish later (a reminder), durably; the same key replaces."""
        if not is_publishable(topic):
            raise ValueError(f"cannot publish on {topic[:200]!r}: not a valid MQTT topic")
        data = payload.encode() if isinstance(payload, str) else payload
        await self.journal.schedule(key, due, topic, data)
        self._timer_wake.set()

    async def _scheduled(self) -> None:
        """Move due scheduled messages to the outbox; sleep until the next one is due."""
        while True:
            self._timer_wake.clear()
            moved, nxt = await self.journal.release_due()
            if moved:
                self._outbox_wake.set()
            timeout = None if nxt is None else max(0.0, nxt - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), timeout)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(
            signal.SIGHUP, lambda: asyncio.ensure_future(self._reload_logged()))

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except Exception:  # noqa: BLE001 - a failed reload must not take the daemon down
            log.exception("reload failed; the running config stays")

    async def _recover(self) -> None:
        requeued, poisoned = await self.journal.recover(self.cfg.delivery.max_attempts)
        for row in poisoned:
            await self._quarantine(row, "crashed", "processing was interrupted "
                                   f"{row.attempts} times; quarantined")
        counts = await self.journal.counts()
        self._open = counts["received"] + counts["processing"]
        if requeued or poisoned or self._open:
            log.info("recovered journal: %d requeued, %d quarantined, %d pending",
                     requeued, len(poisoned), self._open)
        if self._open:
            self._work.set()
        if counts["outbox"]:
            self._outbox_wake.set()

    async def _shutdown(self, ingest: asyncio.Task[None], dispatcher: asyncio.Task[None],
                        sender: asyncio.Task[None], periodic: asyncio.Task[None]) -> None:
        assert self.bus is not None
        deadline = time.monotonic() + self.cfg.delivery.shutdown_timeout_s
        self._stopping = True
        # 1. Stop taking messages: unjournaled ones are not acked; the broker keeps them.
        self.bus.inbox.put_nowait(None)  # type: ignore[arg-type]
        await _wait(ingest, deadline)
        dispatcher.cancel()
        periodic.cancel()
        # 2. Let in-flight work finish; checkpoint the rest back to the journal.
        if self._active:
            done, pending = await asyncio.wait(
                list(self._active.values()), timeout=max(0.0, deadline - time.monotonic())
            )
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)
                log.warning("shutdown: %d request(s) checkpointed unfinished", len(pending))
        # 3. Flush the outbox while the broker is reachable.
        self._outbox_wake.set()
        while self.bus.connected.is_set() and time.monotonic() < deadline:
            if self.journal.outbox_rows <= 0 and not self._sending:
                break
            await asyncio.sleep(0.05)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        # 4. Offline status (the will covers a crash; a clean disconnect needs it explicitly).
        if self.bus.connected.is_set():
            fut = self.bus.publish(self.topics.status, self._status_payload("offline"),
                                   retain=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(fut, 2.0)

    # -- ingest: classify, journal, ack ---------------------------------------------------------

    async def _ingest(self) -> None:
        assert self.bus is not None
        bus = self.bus
        batch_max = self.cfg.delivery.batch_max
        while True:
            first = await bus.inbox.get()
            if first is None:
                return
            batch: list[Inbound] = [first]
            end = False
            while len(batch) < batch_max and not bus.inbox.empty():
                m = bus.inbox.get_nowait()
                if m is None:
                    end = True
                    break
                batch.append(m)
            items = [_delivered(self._classify(m), m) for m in batch]
            delay = 0.05
            while True:
                try:
                    ids = await self.journal.accept(items)
                    break
                except JournalError as e:
                    # Not acked, so nothing is lost; retry the same batch (disk full, I/O).
                    log.error("cannot journal %d message(s): %s; retrying", len(items), e)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            for m in batch:
                bus.ack(m)
            now, journaled = time.time(), time.perf_counter()
            for m in batch:
                self.metrics.stage("ingest", now - m.received)
            for it, inbox_id in zip(items, ids, strict=True):
                self.stats["in"] += 1
                if inbox_id is None:
                    self.stats["duplicates"] += 1
                    outcome = "duplicate"
                elif it.outcome is None:
                    if len(self._accepted_at) < 2 * self.cfg.delivery.max_pending:  # bounded
                        self._accepted_at[inbox_id] = journaled
                    self._open += 1
                    self._work.set()
                    outcome = "accepted"
                elif it.outcome == "sink":
                    self.stats["sink"] += 1
                    outcome = "sink"
                else:
                    self.stats["rejected"] += 1
                    outcome = it.error_code or "rejected"
                self.metrics.inc("edged_ingest_total", {"route": it.route, "outcome": outcome},
                                 help_="messages received, by route and outcome")
                if it.outbox and inbox_id is not None:
                    self._outbox_wake.set()
            if end:
                return

    def _classify(self, m: Inbound) -> Incoming:
        """Everything decided before the journal: identity, limits, parse, the ACL on what the
        payload asks (agent, priority, reply topic), routing. The device comes from the
        topic only; limits come before anything is stored, for bad input too."""
        d = self.cfg.delivery
        route = self.router.route_for(m.topic)
        device = self.router.device_for(m.topic, route)
        payload = m.payload
        env = None
        text = ""
        try:
            env, text = parse(m.payload, max_bytes=d.max_payload_bytes)
        except BadRequest as e:
            err: BadRequest | None = e
        else:
            err = None
        key, content = message_key(env.id if env else None, m.correlation, device=device,
                                   topic=m.topic, payload=m.payload, mid=m.mid)
        msg_id = (env.id if env and env.id else None) or _correlation_id(m.correlation) or \
            key.split(":", 1)[1][-16:]
        acl = self.runner.acl
        sink_route = route is not None and route.agent == "sink"
        if (dev_err := device_id_error(device)) is not None:
            meta = Meta(device=device[:MAX_DEVICE_ID], correlation=m.correlation, qos=m.qos)
            inc = Incoming(key=key, key_is_content=content, topic=m.topic, payload=payload,
                           meta=meta, route=route.topic if route else self.topics.inbound)
            return self._reject(inc, msg_id, "bad_device", f"the topic names no valid "
                                f"device: {dev_err}", dlq=True, reply=False)
        reply_topic, rt_err = self._reply_topic(m, env, device, route)
        meta = Meta(device=device, reply_topic=reply_topic, correlation=m.correlation, qos=m.qos)
        inc = Incoming(key=key, key_is_content=content, topic=m.topic, payload=payload,
                       meta=meta, route=route.topic if route else self.topics.inbound)
        if not sink_route and not self.limits.allow(device):
            return self._reject(inc, msg_id, "rate_limited",
                                f"device {device!r} exceeds {d.rate_per_s:g} requests/s "
                                f"(burst {d.rate_burst}); request dropped", dlq=False)
        if err is None and rt_err is not None:
            err = BadRequest("bad_reply_to", rt_err)
        if err is not None and sink_route:
            inc.outcome = "sink"  # telemetry is journaled as it is: no request format needed
            inc.payload = inc.payload[:max(d.max_payload_bytes, 0)]  # but bounded
            return inc
        if err is not None:
            return self._reject(inc, msg_id, err.code, err.message, dlq=True)
        assert env is not None or text
        asked = env.agent if env else None
        if asked and not (ok := acl.agent(asked, topic=m.topic, device=device)).allowed:
            return self._reject(inc, msg_id, "forbidden", ok.reason, dlq=True)
        decision = self.router.decide(route, asked)
        inc.priority = decision.priority
        if env and env.priority is not None:
            inc.priority = min(env.priority, acl.max_priority(decision.priority, topic=m.topic,
                                                              device=device))
        meta.agent = decision.agent
        meta.confidence = decision.confidence
        if decision.agent not in ("sink", AUTO) and decision.agent not in self.stages \
                and decision.agent not in self.cfg.agents:
            return self._reject(inc, msg_id, "unknown_agent",
                                f"no agent named {decision.agent!r}; known: "
                                f"{', '.join(sorted(self.stages))}", dlq=True)
        if decision.agent == "sink":
            inc.outcome = "sink"
            return inc
        if not self.governor.admit(inc.priority):
            return self._reject(inc, msg_id, "overloaded",
                                f"memory pressure: only priority >= 5 is taken "
                                f"(priority {inc.priority})", dlq=False)
        if self._open >= d.max_pending or (inc.priority < 5 and self._open >= d.max_pending // 2):
            return self._reject(inc, msg_id, "overloaded",
                                f"{self._open} requests pending; shed (priority "
                                f"{inc.priority})", dlq=False)
        return inc

    def _reply_topic(self, m: Inbound, env: Any, device: str,
                     route: RouteConfig | None) -> tuple[str, str | None]:
        """Response topic (v5), else reply_to, else <prefix>/out/<device>. A requested topic
        must stay in the device's reply space (<prefix>/out/<device>[/...], or filters the
        route's ``reply_topics`` or the device's ACL ``reply_to`` allow) and never loop back
        into edged; anything else makes the request invalid, and its error goes to the
        device's own topic."""
        own = self.topics.out(device)
        allowed = [*(route.reply_topics if route else []),
                   *self.runner.acl.reply_filters(topic=m.topic, device=device)]
        routes = [r.topic for r in self.cfg.routes]
        chosen, problem = None, None
        for candidate in (m.response_topic, env.reply_to if env else None):
            if not candidate:
                continue
            err = self.topics.reply_to_error(candidate, routes)
            if err is None and candidate != own and not candidate.startswith(own + "/") \
                    and not any(matches(f, candidate) for f in allowed):
                err = (f"reply topic {candidate[:200]!r} is outside this device's reply space "
                       f"({own}[/...]); allow it with a route's reply_topics or an [[acl]] "
                       f"reply_to")
            if err:
                problem = problem or err
            elif chosen is None:
                chosen = candidate
        return chosen or own, problem

    def _reject(self, inc: Incoming, msg_id: str | None, code: str, message: str,
                *, dlq: bool, reply: bool = True) -> Incoming:
        inc.outcome = "error"
        inc.error_code, inc.error_message = code, message
        inc.consumes_key = code not in RETRYABLE  # the same id may come again later
        if reply:
            inc.outbox.append(self._error_row(inc.meta, msg_id, code, message, inc.priority))
        if dlq:
            inc.outbox.append(OutRow(
                topic=self.topics.dlq, priority=PRIO_DLQ, kind="dlq",
                payload=dead_letter_payload(inc.topic, inc.payload, message, code, msg_id, 0),
            ))
        # a refused message is kept for dedup and the record, never whole when oversized
        inc.payload = inc.payload[:STORED_PREFIX] if len(inc.payload) > \
            self.cfg.delivery.max_payload_bytes else inc.payload
        log.info("rejected %s from %s: %s: %s", msg_id, inc.topic, code, message)
        return inc

    def _error_row(self, meta: Meta, msg_id: str | None, code: str, message: str,
                   priority: int) -> OutRow:
        body = msgspec.json.encode(ErrorReply(id=msg_id, error=ErrorBody(code, message)))
        return OutRow(topic=meta.reply_topic, payload=body, priority=priority, kind="error",
                      props=_props(meta))

    # -- dispatch: claim by priority, run stages ------------------------------------------------

    async def _dispatch(self, tg: asyncio.TaskGroup) -> None:
        workers = self.cfg.delivery.workers
        while True:
            self._work.clear()
            free = workers - len(self._active)
            timeout: float | None = None
            if free > 0:
                rows = await self.journal.claim(free)
                for row in rows:
                    self._active[row.id] = tg.create_task(self._process(row))
                if rows:
                    continue
                nxt = await self.journal.next_ready_at()
                if nxt is not None:
                    timeout = max(0.01, nxt - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work.wait(), timeout)

    async def _process(self, row: InboxRow) -> None:
        t0 = time.perf_counter()
        stage_time = self.metrics.stage
        accepted = self._accepted_at.pop(row.id, None)
        if accepted is not None:  # not after a restart or for a retry
            stage_time("queue", t0 - accepted)
        meta = row.meta
        try:
            req = self._request(row)
        except BadRequest as e:  # stored payload no longer parses (should not happen)
            await self._quarantine(row, e.code, e.message)
            self._finish(row.id)
            return
        agent = meta.agent
        if agent == AUTO:
            t_route = time.perf_counter()
            agent, meta.confidence = await self._choose_agent(req.text)
            stage_time("route", time.perf_counter() - t_route)
            req.agent = agent
            req.route_confidence = meta.confidence
        stage = self.stages.get(agent)
        try:
            if stage is None:
                raise BadRequest("unknown_agent", f"agent {agent!r} is not available")
            ctx = Context(self.journal, row.id, self.emit)
            t_agent = time.perf_counter()
            reply = await stage.handle(req, ctx)
            stage_time("agent", time.perf_counter() - t_agent)
        except asyncio.CancelledError:
            with contextlib.suppress(JournalError):  # else recovery at start requeues it
                await asyncio.shield(self.journal.release([row.id]))
            self._finish(row.id, open_=False)
            raise
        except (StepInDoubt, StepFailed, BadRequest) as e:
            code = e.code if isinstance(e, BadRequest) else (
                "in_doubt" if isinstance(e, StepInDoubt) else "failed")
            await self._quarantine(row, code, str(e))
        except Exception as e:  # noqa: BLE001 - a stage failure must not take the daemon down
            log.warning("agent %s failed on %s (attempt %d): %r", meta.agent, req.id,
                        row.attempts, e)
            self.stats["failed"] += 1
            self.metrics.inc("edged_requests_total", {"agent": agent, "outcome": "failed"})
            if row.attempts >= self.cfg.delivery.max_attempts:
                await self._quarantine(row, "failed", f"failed {row.attempts} times: {e!r}")
            else:
                await self.journal.retry_later(row.id, repr(e), min(30.0, 0.5 * 2**row.attempts))
                self._finish(row.id, open_=False)
                self._work.set()
                return
        else:
            reply.latency_ms = round((time.perf_counter() - t0) * 1000, 2)
            if reply.confidence is None:
                reply.confidence = meta.confidence
            out = OutRow(topic=meta.reply_topic, payload=msgspec.json.encode(reply),
                         priority=row.priority, kind="reply", props=_props(meta))
            t_commit = time.perf_counter()
            await self.journal.complete(row.id, [out])
            stage_time("commit", time.perf_counter() - t_commit)
            self.stats["processed"] += 1
            self.metrics.inc("edged_requests_total", {"agent": agent, "outcome": "ok"},
                             help_="requests processed, by agent and outcome")
            self.metrics.observe("edged_request_seconds", time.perf_counter() - t0,
                                 {"agent": agent, "escalated": reply.escalated},
                                 help_="time from claim to reply, by agent")
        self._finish(row.id)
        self._outbox_wake.set()

    def _finish(self, inbox_id: int, *, open_: bool = True) -> None:
        self._active.pop(inbox_id, None)
        if open_:
            self._open = max(0, self._open - 1)
        self._work.set()

    def _request(self, row: InboxRow) -> Request:
        env, text = parse(row.payload,
                          max_bytes=max(len(row.payload), self.cfg.delivery.max_payload_bytes))
        req_id = (env.id if env and env.id else None) or \
            _correlation_id(row.meta.correlation) or row.key.split(":", 1)[1][-16:]
        return Request(
            id=req_id, topic=row.topic, device=row.meta.device, text=text,
            data=env.data if env else None, agent=row.meta.agent,
            # a session never crosses devices: the same name from two devices is two sessions
            session=f"{row.meta.device}:{env.session}" if env and env.session else None,
            reply_topic=row.meta.reply_topic,
            correlation=row.meta.correlation, priority=row.priority, attempt=row.attempts,
        )

    async def _choose_agent(self, text: str) -> tuple[str, float]:
        """The classifier over agent descriptions; the default agent below the threshold."""
        if self.agent_index is None:
            return self.cfg.router.default_agent, 0.0
        ranking = await self.agent_index.rank(text)
        best = ranking.best
        if best is None or best.score < self.cfg.router.min_confidence:
            return self.cfg.router.default_agent, ranking.confidence
        return best.name, ranking.confidence

    async def _quarantine(self, row: InboxRow, code: str, message: str) -> None:
        try:
            req_id: str | None = self._request(row).id
        except BadRequest:
            req_id = None
        rows = [
            self._error_row(row.meta, req_id, code, message, row.priority),
            OutRow(topic=self.topics.dlq, priority=PRIO_DLQ, kind="dlq",
                   payload=dead_letter_payload(row.topic, row.payload, message, code, req_id,
                                               row.attempts)),
        ]
        await self.journal.kill(row.id, f"{code}: {message}", rows)
        self.stats["dead"] += 1
        self._outbox_wake.set()
        log.warning("dead-lettered %s from %s: %s: %s", req_id, row.topic, code, message)
        self.last_error = f"{time.strftime('%H:%M:%S')} dead-lettered {req_id}: {code}: " \
            f"{message[:200]}"

    async def emit(self, kind: str, data: dict[str, Any]) -> None:
        ev = Event(kind=kind, ts=round(self.clock(), 3), data=data)
        await self.journal.enqueue([OutRow(topic=self.topics.event(kind), kind="event",
                                           priority=PRIO_EVENT, payload=msgspec.json.encode(ev))])
        self._outbox_wake.set()

    # -- sender: the outbox drains in priority order ----------------------------------------------

    async def _send(self) -> None:
        assert self.bus is not None
        bus = self.bus
        window = self.cfg.delivery.outbox_max_inflight
        inflight: dict[int, asyncio.Future[None]] = {}
        finished: asyncio.Queue[tuple[int, bool]] = asyncio.Queue()
        failures: dict[int, int] = {}  # outbox row -> publishes that failed (this run)
        refused: set[int] = set()  # rows to dead-letter at the next fetch

        def on_done(row_id: int, sent: float, fut: asyncio.Future[None]) -> None:
            ok = not fut.cancelled() and fut.exception() is None
            if ok:
                self.metrics.stage("publish", time.perf_counter() - sent)
            finished.put_nowait((row_id, ok))

        while True:
            if not bus.connected.is_set():
                await bus.connected.wait()
            self._outbox_wake.clear()
            await self._clock_settled()
            room = window - len(inflight)
            rows = await self.journal.outbox_fetch(room, list(inflight)) if room > 0 else []
            for r in [r for r in rows if r.id in refused]:
                refused.discard(r.id)
                failures.pop(r.id, None)
                await self._unsendable(r, f"publish failed {SEND_ATTEMPTS} times")
            rows = [r for r in rows if r.id in inflight or r.id not in failures
                    or failures[r.id] < SEND_ATTEMPTS]
            for r in rows:
                props = _PROPS_DEC.decode(r.props) if r.props else {}
                try:
                    if not is_publishable(r.topic):
                        raise ValueError("not a valid MQTT topic to publish on")
                    fut = bus.publish(r.topic, r.payload, qos=r.qos, retain=r.retain,
                                      correlation=props.get("c"))
                except (ValueError, TypeError, OverflowError) as e:
                    # paho refuses it (wildcards, too long...): it can never be sent, and
                    # must never stop the sender or block the rows behind it
                    await self._unsendable(r, str(e))
                    continue
                inflight[r.id] = fut
                sent_at = time.perf_counter()
                fut.add_done_callback(lambda f, i=r.id, t=sent_at: on_done(i, t, f))
            self._sending = len(inflight)
            if not rows or len(inflight) >= window:
                waiter = asyncio.ensure_future(self._outbox_wake.wait())
                getter = asyncio.ensure_future(finished.get())
                try:
                    await asyncio.wait({waiter, getter}, return_when=asyncio.FIRST_COMPLETED,
                                       timeout=5.0 if inflight else None)
                finally:
                    waiter.cancel()
                    if not getter.done():
                        getter.cancel()
                    elif not getter.cancelled():
                        finished.put_nowait(getter.result())
            done_ids: list[int] = []
            while not finished.empty():
                row_id, ok = finished.get_nowait()
                inflight.pop(row_id, None)
                if ok:
                    done_ids.append(row_id)
                    failures.pop(row_id, None)
                else:
                    failures[row_id] = failures.get(row_id, 0) + 1
                    if failures[row_id] >= SEND_ATTEMPTS:
                        refused.add(row_id)
            if done_ids:
                await self.journal.outbox_done(done_ids)
                self.stats["out"] += len(done_ids)
            self._sending = len(inflight)

    async def _unsendable(self, row: Any, why: str) -> None:
        """An outbox row that can never be published: a bounded dead-letter copy (never of a
        dead letter: no loops), then gone from the outbox."""
        log.warning("outbox row %d to %.80r cannot be published: %s", row.id, row.topic, why)
        self.last_error = f"{time.strftime('%H:%M:%S')} unsendable {row.kind}: {why[:200]}"
        if row.kind != "dlq":
            await self.journal.enqueue([OutRow(
                topic=self.topics.dlq, priority=PRIO_DLQ, kind="dlq",
                payload=dead_letter_payload(row.topic[:1024], row.payload[:4096],
                                            f"cannot publish the {row.kind}: {why}",
                                            "unpublishable", None, 0))])
        await self.journal.outbox_done([row.id])
        self.stats["dead"] += 1

    # -- status and housekeeping ----------------------------------------------------------------

    def _status_payload(self, state: str) -> bytes:
        models = [{"alias": m["alias"], "loaded": m["loaded"], "busy": m["busy"],
                   "rss_delta_mb": m["rss_delta_mb"], "tokens_per_s": m["tokens_per_s"],
                   "pid": m.get("pid"), "crashes": m["crashes"], "failed": m["failed"]}
                  for m in self.pool.describe()]
        failed = self.pool.failed()
        st = Status(state=state, client_id=self.cfg.mqtt.client_id, pid=os.getpid(),
                    ts=round(self.clock(), 3), version=__version__,
                    health="degraded" if failed or self.governor.state.name != "normal"
                    or self.journal.degraded or "unavailable" in self.memory_status
                    else "ok",
                    pending=self._open, outbox=self.journal.outbox_rows,
                    models_loaded=self.pool.loaded(),
                    detail={"active": len(self._active), **self.stats,
                            "rss_mb": round(rss_bytes() / 2**20, 1),
                            "governor": self.governor.status(), "models": models,
                            "tools": len(self.registry.tools),
                            "plugin_errors": [f"{e.plugin}: {e.error}"[:200]
                                              for e in self.registry.errors],
                            "bus": self.bus.state if self.bus else "idle",
                            "bus_error": self.bus.last_error[:200] if self.bus else "",
                            "last_error": self.last_error[:300],
                            "storage": self.journal.degraded[:300] or "ok",
                            "memory": {k: v for k, v in self.memory_status.items()
                                       if k != "by_kind"},
                            "scheduler": self.scheduler.describe(),
                            "latency_ms": {
                                stage: [round(q["p50"] * 1e3, 2), round(q["p95"] * 1e3, 2)]
                                for stage, q in self.metrics.stage_quantiles().items()},
                            **({"cloud": self.escalator.describe()}
                               if self.escalator is not None else {})})
        return msgspec.json.encode(st)

    def _on_ready(self, session_present: bool) -> None:
        assert self.bus is not None
        if not session_present:
            log.info("broker has no session for us: subscriptions re-created")
        self.bus.publish(self.topics.status, self._status_payload("online"), retain=True)
        notify(f"STATUS=online: subscribed on {self.bus.server_address()}, "
               f"{self._open} pending, {self.journal.outbox_rows} in outbox")
        self._outbox_wake.set()

    async def _periodic(self) -> None:
        assert self.bus is not None
        interval = self.cfg.delivery.status_interval_s
        last_cleanup = 0.0
        while True:
            await asyncio.sleep(interval)
            if self.bus.connected.is_set():
                self.bus.publish(self.topics.status, self._status_payload("online"), retain=True)
            if time.monotonic() - last_cleanup > 600:
                last_cleanup = time.monotonic()
                removed = await self.journal.cleanup()
                if any(removed.values()):
                    log.info("journal clean-up: %s", removed)


def _delivered(inc: Incoming, m: Inbound) -> Incoming:
    """What the journal needs to recognise the broker's redelivery of this very packet: the
    DUP flag, and the fingerprint beside a request key (without one, the key is the
    fingerprint). See Journal._accept."""
    inc.redelivered = m.dup
    if not inc.key_is_content:
        inc.fingerprint = content_key(m.topic, m.payload, m.mid)
    return inc


def _props(meta: Meta) -> bytes | None:
    return _PROPS_ENC.encode({"c": meta.correlation}) if meta.correlation else None


def _correlation_id(c: bytes | None) -> str | None:
    if not c:
        return None
    try:
        s = c.decode("utf-8")
        if s.isprintable() and 0 < len(s) <= 256:
            return s
    except UnicodeDecodeError:
        pass
    return c.hex()


async def _wait(task: asyncio.Task[Any], deadline: float) -> None:
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), max(0.01, deadline - time.monotonic()))
    if not task.done():
        task.cancel()


def new_id() -> str:
    return uuid.uuid4().hex[:16]
