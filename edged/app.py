"""Assembly: the collaborators of one edged, built from its config.

``App`` owns no task and no connection: the daemon (``edged.service``) runs it, the tests
and the CLI build one to reach the same parts. Nothing here reads another part's private
fields; each part gets what it needs at construction (a journal, a wake function, an emit).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from .agents import EchoAgent, Stage
from .agents.admin import ModelsAgent
from .agents.assemble import build_agents
from .agents.selector import CentroidIndex
from .agents.tool_agent import ToolAgent
from .bus.topics import Topics
from .config import Config
from .escalation import Escalator
from .governor import Governor, Reader
from .journal import PRIO_EVENT, Journal, OutRow
from .limits import TokenBuckets
from .memory import (
    Consolidator,
    Memory,
    MemoryAccess,
    MemoryStoreError,
    open_embedder,
    schema_generate,
)
from .messages import Event
from .metrics import Metrics
from .models.pool import ModelPool
from .router import Router
from .scheduler import Scheduler
from .spine.state import SpineState
from .tools import registry as tool_registry
from .tools.acl import ACL
from .tools.outlet import PluginOutlet
from .tools.runner import ToolRunner

log = logging.getLogger("edged.app")

Embed = Callable[[list[str]], Awaitable[list[list[float]]]]


class App:
    """One edged's parts. ``stages`` adds processing stages (agents) by name."""

    def __init__(self, cfg: Config, *, stages: dict[str, Stage] | None = None,
                 clock: Callable[[], float] = time.time,
                 sensors: Reader | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.spine = SpineState()
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
        self.metrics = Metrics()
        self.pool = ModelPool(dict(cfg.models), cfg.resources, emit=self.emit)
        self.governor = Governor(cfg.resources, sensors, pool=self.pool, emit=self.emit)
        self.registry = tool_registry.load(list(cfg.plugins.dirs),
                                           import_timeout_s=cfg.plugins.import_timeout_s)
        self.outlet = PluginOutlet(self.journal, wake_outbox=self.spine.wake_outbox,
                                   wake_timers=self.spine.wake_timers)
        self.runner = ToolRunner(self.registry, ACL(list(cfg.acl), prefix=cfg.mqtt.topic_prefix),
                                 self.journal,
                                 default_timeout_s=cfg.plugins.tool_timeout_s, emit=self.emit,
                                 state_dir=cfg.db_path.parent, outlet=self.outlet,
                                 threads=cfg.plugins.tool_threads,
                                 stuck_after_s=cfg.resources.stuck_after_s)
        self.pool.on_timing = self.runner.on_timing = self.metrics.stage
        self.stages.setdefault("models", ModelsAgent(self.pool, lambda: self.runner.acl))
        self.escalator: Escalator | None = Escalator(
            cfg.cloud, self.journal, runner=self.runner, emit=self.emit,
            wake_outbox=self.spine.wake_outbox, clock=clock) if cfg.cloud.enabled else None
        self.scheduler = Scheduler(wall=clock)
        self.scheduler.on_jump(self._clock_jumped)
        self._shifting: asyncio.Future[None] | None = None
        self.agent_index: CentroidIndex | None = None
        self.embed: Embed | None = None  # the embedder's async function once started
        self.embedder: Any = None  # the local embedder (a worker) or its spec
        self._embedder_id = ""
        self.memory: Memory | None = None
        self.consolidator: Consolidator | None = None
        self.memory_status: dict[str, Any] = {}
        self.last_error = ""

    def note_error(self, what: str) -> None:
        """The last problem, for the status topic (``last_error``)."""
        self.last_error = f"{time.strftime('%H:%M:%S')} {what}"[:300]

    async def emit(self, kind: str, data: dict[str, Any]) -> None:
        """An event on ``<prefix>/event/<kind>``, through the outbox (lowest priority)."""
        ev = Event(kind=kind, ts=round(self.clock(), 3), data=data)
        await self.journal.enqueue([OutRow(topic=self.topics.event(kind), kind="event",
                                           priority=PRIO_EVENT, payload=msgspec.json.encode(ev))])
        self.spine.wake_outbox()

    # -- start and stop ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the journal, load the embedder, build the agents, open memory."""
        await self.journal.open()
        if self.cfg.agents:
            self.embed, self._embedder_id, loaded = await open_embedder(self.cfg, self.pool)
            self.embedder = loaded or self.cfg.memory.embedder
            await self.build_agents()
        await self._start_memory()

    async def close(self) -> None:
        await self.pool.close()
        if self.escalator is not None:
            await self.escalator.close()
        if self.memory is not None:
            await self.memory.close()
        if hasattr(self.embedder, "unload"):  # its worker process
            await asyncio.to_thread(self.embedder.unload)
        await self.journal.close()

    async def build_agents(self) -> None:
        """(Re)build every tool agent from the current registry and swap them in at once."""
        assert self.embed is not None
        stages, index = await build_agents(
            self.cfg.agents, runner=self.runner, embed=self.embed, pool=self.pool,
            governor=self.governor, memory=self.memory, escalator=self.escalator,
            consolidator=self.consolidator, models=self.cfg.models)
        self.stages.update(stages)
        self.agent_index = index
        for e in self.registry.errors:
            log.error("plugin %s not loaded: %s", e.plugin, e.error)

    async def _start_memory(self) -> None:
        """Open the memory database, hand it to agents and tools, schedule consolidation. A
        corrupt or unreadable one disables memory with an event; the spine runs without it."""
        mcfg = self.cfg.memory
        if not mcfg.enabled or self.embed is None:
            return
        memory = Memory(mcfg, self.cfg.memory_path, embed=self.embed,
                        embedder_id=self._embedder_id, clock=self.clock)
        try:
            pending = await memory.open()
        except MemoryStoreError as e:
            await memory.close()
            why = str(e)[:500]
            log.error("memory unavailable, agents run without it: %s (move the file aside "
                      "to start a new one)", why)
            self.memory_status = {"unavailable": why}
            self.note_error(f"memory unavailable: {why[:250]}")
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
        self.consolidator = Consolidator(memory, mcfg, generate=generate, model=model,
                                         may_run=lambda: not self.governor.defer,
                                         clock=self.clock)
        self.runner.memory = MemoryAccess(memory, self.consolidator)
        for stage in self.stages.values():
            if isinstance(stage, ToolAgent):
                stage.memory = memory if stage.cfg.memory else None
                stage.consolidator = self.consolidator
        self.scheduler.every("memory-consolidate", mcfg.consolidate_every_s,
                             self.consolidate_memory)
        self.memory_status = await memory.stats()
        log.info("memory: %s (%d memories, %d turns, embedder %s)", self.cfg.memory_path,
                 self.memory_status["memories"], self.memory_status["turns"],
                 memory.embedder_id)

    # -- memory jobs ------------------------------------------------------------------------------

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

    async def reembed(self) -> None:
        """Background: vectors for memories from an older embedder (or none yet)."""
        memory = self.memory
        if memory is None or not await memory.run(memory.store.pending_vectors):
            return
        while await memory.run(memory.store.pending_vectors):
            await memory.reembed(may_run=lambda: not self.governor.defer)
            if await memory.run(memory.store.pending_vectors):
                await asyncio.sleep(30)  # deferred by the governor: try again later
        self.memory_status = await memory.stats()
        await self.emit("memory_reembedded", {"embedder": memory.embedder_id})

    # -- wall-clock jumps -------------------------------------------------------------------------

    def _clock_jumped(self, delta: float) -> None:
        """Keep the journal's pending deadlines (outbox TTLs, retries, timers) in step."""
        async def shift() -> None:
            moved = await self.journal.shift_times(delta)
            log.warning("clock jump: moved pending deadlines by %+.0f s: %s", delta, moved)
            self.spine.timers.set()
            self.spine.work.set()
            await self.emit("clock_jump", {"delta_s": round(delta, 3), "moved": moved})

        self._shifting = asyncio.ensure_future(shift())

    async def clock_settled(self) -> None:
        """Before acting on deadlines (outbox expiry): notice a jump now, not at the next
        watch tick, and let its shift land first."""
        self.scheduler.poll_jump()
        if self._shifting is not None:
            await asyncio.shield(self._shifting)
            self._shifting = None


def subscriptions(cfg: Config, topics: Topics) -> list[str]:
    """What the bus subscribes to: the inbound space and every route (shared when
    ``mqtt.shared_group`` spreads the load over several edged)."""
    subs = [topics.inbound] + [r.topic for r in cfg.routes]
    if cfg.mqtt.shared_group:
        subs = [f"$share/{cfg.mqtt.shared_group}/{t}" for t in subs]
    return list(dict.fromkeys(subs))
