"""Ingest: classify each inbound message, journal a batch in one commit, then ack it.

Everything about a message is decided before it is stored: identity (from the topic only),
limits (before parsing, for bad input too), the ACL on what the payload asks (agent,
priority, reply topic), routing and admission. A message is acked only once journaled, so a
crash or a storage fault before that leaves it with the broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..bus.client import Inbound, MQTTBus
from ..bus.topics import matches
from ..config import MAX_DEVICE_ID, RouteConfig, device_id_error
from ..journal import Incoming, JournalError, Meta
from ..messages import BadRequest, Envelope, content_key, message_key, parse
from ..router import AUTO
from .replies import correlation_id, dead_letter, error_row

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("edged.spine")

STORED_PREFIX = 1024  # bytes of an over-limit payload kept in the journal (and the DLQ)
RETRYABLE = frozenset({"rate_limited", "overloaded"})  # refused for now, not for this request


class Ingest:
    def __init__(self, app: App, bus: MQTTBus) -> None:
        self.app = app
        self.bus = bus

    async def run(self) -> None:
        """Until the bus inbox yields None (shutdown): batches of what is waiting."""
        bus, state = self.bus, self.app.spine
        batch_max = self.app.cfg.delivery.batch_max
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
            items = [_delivered(self.classify(m), m) for m in batch]
            ids = await self._journal(items)
            for m in batch:
                bus.ack(m)
            now, journaled = time.time(), time.perf_counter()
            metrics = self.app.metrics
            for m in batch:
                metrics.stage("ingest", now - m.received)
            for it, inbox_id in zip(items, ids, strict=True):
                state.stats["in"] += 1
                if inbox_id is None:
                    state.stats["duplicates"] += 1
                    outcome = "duplicate"
                elif it.outcome is None:
                    if len(state.accepted_at) < 2 * self.app.cfg.delivery.max_pending:
                        state.accepted_at[inbox_id] = journaled  # for the queue-time metric
                    state.open += 1
                    state.work.set()
                    outcome = "accepted"
                elif it.outcome == "sink":
                    state.stats["sink"] += 1
                    outcome = "sink"
                else:
                    state.stats["rejected"] += 1
                    outcome = it.error_code or "rejected"
                metrics.inc("edged_ingest_total", {"route": it.route, "outcome": outcome},
                            help_="messages received, by route and outcome")
                if it.outbox and inbox_id is not None:
                    state.wake_outbox()
            if end:
                return

    async def _journal(self, items: list[Incoming]) -> list[int | None]:
        delay = 0.05
        while True:
            try:
                return await self.app.journal.accept(items)
            except JournalError as e:
                # Not acked, so nothing is lost; retry the same batch (disk full, I/O).
                log.error("cannot journal %d message(s): %s; retrying", len(items), e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def classify(self, m: Inbound) -> Incoming:
        """The message as the journal stores it: accepted, sink, or refused with its error
        reply and dead letter."""
        app = self.app
        d = app.cfg.delivery
        route = app.router.route_for(m.topic)
        device = app.router.device_for(m.topic, route)
        env: Envelope | None = None
        text = ""
        err: BadRequest | None = None
        try:
            env, text = parse(m.payload, max_bytes=d.max_payload_bytes)
        except BadRequest as e:
            err = e
        key, content = message_key(env.id if env else None, m.correlation, device=device,
                                   topic=m.topic, payload=m.payload, mid=m.mid)
        msg_id = (env.id if env and env.id else None) or correlation_id(m.correlation) or \
            key.split(":", 1)[1][-16:]
        acl = app.runner.acl
        sink_route = route is not None and route.agent == "sink"
        route_topic = route.topic if route else app.topics.inbound
        if (dev_err := device_id_error(device)) is not None:
            meta = Meta(device=device[:MAX_DEVICE_ID], correlation=m.correlation, qos=m.qos)
            inc = Incoming(key=key, key_is_content=content, topic=m.topic, payload=m.payload,
                           meta=meta, route=route_topic)
            return self.reject(inc, msg_id, "bad_device", f"the topic names no valid "
                               f"device: {dev_err}", dlq=True, reply=False)
        reply_topic, rt_err = self.reply_topic(m, env, device, route)
        meta = Meta(device=device, reply_topic=reply_topic, correlation=m.correlation, qos=m.qos)
        inc = Incoming(key=key, key_is_content=content, topic=m.topic, payload=m.payload,
                       meta=meta, route=route_topic)
        if not sink_route and not app.limits.allow(device):
            return self.reject(inc, msg_id, "rate_limited",
                               f"device {device!r} exceeds {d.rate_per_s:g} requests/s "
                               f"(burst {d.rate_burst}); request dropped", dlq=False)
        if err is None and rt_err is not None:
            err = BadRequest("bad_reply_to", rt_err)
        if err is not None and sink_route:
            inc.outcome = "sink"  # telemetry is journaled as it is: no request format needed
            inc.payload = inc.payload[:max(d.max_payload_bytes, 0)]  # but bounded
            return inc
        if err is not None:
            return self.reject(inc, msg_id, err.code, err.message, dlq=True)
        assert env is not None or text
        asked = env.agent if env else None
        if asked and not (ok := acl.agent(asked, topic=m.topic, device=device)).allowed:
            return self.reject(inc, msg_id, "forbidden", ok.reason, dlq=True)
        decision = app.router.decide(route, asked)
        inc.priority = decision.priority
        if env and env.priority is not None:
            inc.priority = min(env.priority, acl.max_priority(decision.priority, topic=m.topic,
                                                              device=device))
        meta.agent = decision.agent
        meta.confidence = decision.confidence
        if decision.agent not in ("sink", AUTO) and decision.agent not in app.stages \
                and decision.agent not in app.cfg.agents:
            return self.reject(inc, msg_id, "unknown_agent",
                               f"no agent named {decision.agent!r}; known: "
                               f"{', '.join(sorted(app.stages))}", dlq=True)
        if decision.agent == "sink":
            inc.outcome = "sink"
            return inc
        return self._admit(inc, msg_id)

    def _admit(self, inc: Incoming, msg_id: str | None) -> Incoming:
        """Load shedding: memory pressure takes only urgent work; a full queue sheds low
        priority first (at half of ``max_pending``), then everything."""
        pending, limit = self.app.spine.open, self.app.cfg.delivery.max_pending
        if not self.app.governor.admit(inc.priority):
            return self.reject(inc, msg_id, "overloaded",
                               f"memory pressure: only priority >= 5 is taken "
                               f"(priority {inc.priority})", dlq=False)
        if pending >= limit or (inc.priority < 5 and pending >= limit // 2):
            return self.reject(inc, msg_id, "overloaded",
                               f"{pending} requests pending; shed (priority "
                               f"{inc.priority})", dlq=False)
        return inc

    def reply_topic(self, m: Inbound, env: Envelope | None, device: str,
                    route: RouteConfig | None) -> tuple[str, str | None]:
        """Response topic (v5), else reply_to, else <prefix>/out/<device>. A requested topic
        must stay in the device's reply space (<prefix>/out/<device>[/...], or filters the
        route's ``reply_topics`` or the device's ACL ``reply_to`` allow) and never loop back
        into edged; anything else makes the request invalid, and its error goes to the
        device's own topic."""
        app = self.app
        own = app.topics.out(device)
        allowed = [*(route.reply_topics if route else []),
                   *app.runner.acl.reply_filters(topic=m.topic, device=device)]
        routes = [r.topic for r in app.cfg.routes]
        chosen, problem = None, None
        for candidate in (m.response_topic, env.reply_to if env else None):
            if not candidate:
                continue
            err = app.topics.reply_to_error(candidate, routes)
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

    def reject(self, inc: Incoming, msg_id: str | None, code: str, message: str,
               *, dlq: bool, reply: bool = True) -> Incoming:
        inc.outcome = "error"
        inc.error_code, inc.error_message = code, message
        inc.consumes_key = code not in RETRYABLE  # the same id may come again later
        if reply:
            inc.outbox.append(error_row(inc.meta, msg_id, code, message, inc.priority))
        if dlq:
            inc.outbox.append(dead_letter(self.app.topics, inc.topic, inc.payload, message,
                                          code, msg_id, 0))
        # a refused message is kept for dedup and the record, never whole when oversized
        if len(inc.payload) > self.app.cfg.delivery.max_payload_bytes:
            inc.payload = inc.payload[:STORED_PREFIX]
        log.info("rejected %s from %s: %s: %s", msg_id, inc.topic, code, message)
        return inc


def _delivered(inc: Incoming, m: Inbound) -> Incoming:
    """What the journal needs to recognise the broker's redelivery of this very packet: the
    DUP flag, and the fingerprint beside a request key (without one, the key is the
    fingerprint). See the journal's accept."""
    inc.redelivered = m.dup
    if not inc.key_is_content:
        inc.fingerprint = content_key(m.topic, m.payload, m.mid)
    return inc
