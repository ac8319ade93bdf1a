"""Dispatch: claim journaled requests by priority, run each through its stage (agent), and
commit the reply with the request's completion in one transaction.

A stage that fails is retried with back-off up to ``delivery.max_attempts``, then
quarantined (error reply + dead letter). A cancelled request (shutdown) is handed back to the
journal unfinished; the next start takes it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from ..agents import Context
from ..journal import InboxRow, JournalError, Meta, OutRow, StepFailed, StepInDoubt
from ..messages import BadRequest, Request, parse
from ..router import AUTO
from .replies import correlation_id, dead_letter, error_row, props

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("edged.spine")


# publish at once, QoS 0 (topic, payload, correlation data): set by the daemon with its bus
Live = Callable[[str, bytes, bytes | None], object]


class Dispatcher:
    def __init__(self, app: App) -> None:
        self.app = app
        self.live: Live | None = None  # the answer's words as they come; None: not streamed

    async def recover(self) -> None:
        """At start: requeue what a crash interrupted, quarantine what keeps crashing."""
        app, state = self.app, self.app.spine
        requeued, poisoned = await app.journal.recover(app.cfg.delivery.max_attempts)
        for row in poisoned:
            await self.quarantine(row, "crashed", "processing was interrupted "
                                  f"{row.attempts} times; quarantined")
        counts = await app.journal.counts()
        state.open = counts["received"] + counts["processing"]
        if requeued or poisoned or state.open:
            log.info("recovered journal: %d requeued, %d quarantined, %d pending",
                     requeued, len(poisoned), state.open)
        if state.open:
            state.work.set()
        if counts["outbox"]:
            state.wake_outbox()

    async def run(self, tg: asyncio.TaskGroup) -> None:
        """Keep up to ``delivery.workers`` requests running; sleep until there is work or a
        retry falls due."""
        app, state = self.app, self.app.spine
        workers = app.cfg.delivery.workers
        while True:
            state.work.clear()
            free = workers - len(state.active)
            timeout: float | None = None
            if free > 0:
                rows = await app.journal.claim(free)
                for row in rows:
                    state.active[row.id] = tg.create_task(self.process(row))
                if rows:
                    continue
                nxt = await app.journal.next_ready_at()
                if nxt is not None:
                    timeout = max(0.01, nxt - app.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.work.wait(), timeout)

    async def drain(self, deadline: float) -> None:
        """Shutdown: let requests in flight finish until ``deadline``; cancel the rest (they
        go back to the journal)."""
        active = list(self.app.spine.active.values())
        if not active:
            return
        _, pending = await asyncio.wait(active, timeout=max(0.0, deadline - time.monotonic()))
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)
            log.warning("shutdown: %d request(s) checkpointed unfinished", len(pending))

    def _partials(self, req: Request, meta: Meta) -> Callable[[str], None] | None:
        """A sink for the answer's words as they come, on ``<reply topic>/partial`` (QoS 0:
        a device that wants them subscribes there; the final reply stays the durable one)."""
        live = self.live
        topic = meta.reply_topic
        if live is None or not topic or not req.stream:
            return None  # only when asked for: streaming costs a tier-1 answer ~10%
        seq = 0
        correlation = meta.correlation

        def send(delta: str) -> None:
            nonlocal seq
            seq += 1
            body = msgspec.json.encode({"id": req.id, "seq": seq, "delta": delta})
            try:
                live(f"{topic}/partial", body, correlation)
            except Exception as e:  # noqa: BLE001 - a lost piece never fails the request
                log.debug("partial for %s not sent: %r", req.id, e)

        return send

    async def process(self, row: InboxRow) -> None:
        app, state = self.app, self.app.spine
        t0 = time.perf_counter()
        stage_time = app.metrics.stage
        accepted = state.accepted_at.pop(row.id, None)
        if accepted is not None:  # not after a restart or for a retry
            stage_time("queue", t0 - accepted)
        meta = row.meta
        try:
            req = self.request(row)
        except BadRequest as e:  # stored payload no longer parses (should not happen)
            await self.quarantine(row, e.code, e.message)
            state.finished(row.id)
            return
        agent = meta.agent
        if agent == AUTO:
            t_route = time.perf_counter()
            agent, meta.confidence = await self.choose_agent(req.text)
            stage_time("route", time.perf_counter() - t_route)
            req.agent = agent
            req.route_confidence = meta.confidence
        stage = app.stages.get(agent)
        try:
            if stage is None:
                raise BadRequest("unknown_agent", f"agent {agent!r} is not available")
            ctx = Context(app.journal, row.id, app.emit, partial=self._partials(req, meta))
            t_agent = time.perf_counter()
            reply = await stage.handle(req, ctx)
            stage_time("agent", time.perf_counter() - t_agent)
        except asyncio.CancelledError:
            with contextlib.suppress(JournalError):  # else recovery at start requeues it
                await asyncio.shield(app.journal.release([row.id]))
            state.finished(row.id, open_=False)
            raise
        except (StepInDoubt, StepFailed, BadRequest) as e:
            code = e.code if isinstance(e, BadRequest) else (
                "in_doubt" if isinstance(e, StepInDoubt) else "failed")
            await self.quarantine(row, code, str(e))
        except Exception as e:  # noqa: BLE001 - a stage failure must not take the daemon down
            log.warning("agent %s failed on %s (attempt %d): %r", meta.agent, req.id,
                        row.attempts, e)
            state.stats["failed"] += 1
            app.metrics.inc("edged_requests_total", {"agent": agent, "outcome": "failed"})
            if row.attempts >= app.cfg.delivery.max_attempts:
                await self.quarantine(row, "failed", f"failed {row.attempts} times: {e!r}")
            else:
                await app.journal.retry_later(row.id, repr(e), min(30.0, 0.5 * 2**row.attempts))
                state.finished(row.id, open_=False)
                return
        else:
            reply.latency_ms = round((time.perf_counter() - t0) * 1000, 2)
            if reply.confidence is None:
                reply.confidence = meta.confidence
            out = OutRow(topic=meta.reply_topic, payload=msgspec.json.encode(reply),
                         priority=row.priority, kind="reply", props=props(meta))
            t_commit = time.perf_counter()
            await app.journal.complete(row.id, [out])
            stage_time("commit", time.perf_counter() - t_commit)
            state.stats["processed"] += 1
            app.metrics.inc("edged_requests_total", {"agent": agent, "outcome": "ok"},
                            help_="requests processed, by agent and outcome")
            app.metrics.observe("edged_request_seconds", time.perf_counter() - t0,
                                {"agent": agent, "escalated": reply.escalated},
                                help_="time from claim to reply, by agent")
        state.finished(row.id)
        state.wake_outbox()

    def request(self, row: InboxRow) -> Request:
        """The stage's view of a journaled request; a session never crosses devices."""
        env, text = parse(row.payload, max_bytes=max(len(row.payload),
                                                      self.app.cfg.delivery.max_payload_bytes))
        req_id = (env.id if env and env.id else None) or \
            correlation_id(row.meta.correlation) or row.key.split(":", 1)[1][-16:]
        return Request(
            id=req_id, topic=row.topic, device=row.meta.device, text=text,
            data=env.data if env else None, agent=row.meta.agent,
            # the same session name from two devices is two sessions
            session=f"{row.meta.device}:{env.session}" if env and env.session else None,
            reply_topic=row.meta.reply_topic,
            correlation=row.meta.correlation, priority=row.priority, attempt=row.attempts,
            stream=bool(env and env.stream),
        )

    async def choose_agent(self, text: str) -> tuple[str, float]:
        """The classifier over agent descriptions; the default agent below the threshold."""
        router_cfg = self.app.cfg.router
        if self.app.agent_index is None:
            return router_cfg.default_agent, 0.0
        ranking = await self.app.agent_index.rank(text)
        best = ranking.best
        if best is None or best.score < router_cfg.min_confidence:
            return router_cfg.default_agent, ranking.confidence
        return best.name, ranking.confidence

    async def quarantine(self, row: InboxRow, code: str, message: str) -> None:
        """Dead: an error reply to the device and a dead-letter copy, in one commit."""
        app = self.app
        try:
            req_id: str | None = self.request(row).id
        except BadRequest:
            req_id = None
        rows = [error_row(row.meta, req_id, code, message, row.priority),
                dead_letter(app.topics, row.topic, row.payload, message, code, req_id,
                            row.attempts)]
        await app.journal.kill(row.id, f"{code}: {message}", rows)
        app.spine.stats["dead"] += 1
        app.spine.wake_outbox()
        log.warning("dead-lettered %s from %s: %s: %s", req_id, row.topic, code, message)
        app.note_error(f"dead-lettered {req_id}: {code}: {message[:200]}")
