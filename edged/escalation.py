"""Cloud escalation: hard requests go to an OpenAI-compatible LLM when, and only when, it helps.

When (the agent decides, see :class:`edged.agents.tool_agent.ToolAgent`): no local tool fits,
the request is unclear, a tool failed, the plan has more steps than ``max_steps``, the router
or agent confidence is below ``cloud.escalate_below``, the small model picked "escalate", or
the agent says ``escalate = "always"``. Never when ``escalate = "never"``.

How:

- **Redacted first.** The cloud gets the working memory (system prompt, recalled memories
  except private ones, recent turns, the request) and the envelope's ``data`` with the
  ``redact_fields`` blanked; e-mail addresses, phone numbers, card numbers, IBANs, IPs and
  secrets are replaced by placeholders (:mod:`edged.redact`), and a recent exchange that
  holds a secret goes as ``[private turn withheld]`` placeholders, not merely redacted.
  Each request is published as the ``cloud_request`` event: metadata only (id, reason,
  model, message count, token estimate, redaction counts) unless ``event_content =
  "redacted"`` adds the messages as sent (anyone on the bus could read a conversation).
- **Tools under the same ACL.** The cloud sees only the tools that the agent may use and the
  ACL allows for this device, in the OpenAI tool-calling format; every call it makes goes
  through the same runner (visibility, ACL, schema, once, audit). A tool the ACL denies is
  never offered and never run.
- **Connectivity** is learnt from real calls (a connection error, timeout, 5xx or 429 marks
  the cloud offline) and, while escalations wait, from a cheap probe (``GET /models``) with
  exponential back-off between ``retry_min_s`` and ``retry_max_s``: no busy polling. The
  client and that state are :class:`edged.cloudlink.CloudLink`'s.
- **Offline**: with ``offline = "queue"`` the escalation is stored in the journal (it survives
  restarts; it expires after ``queue_ttl_s``), the device gets the local answer at once with a
  note, and the cloud's answer follows as a second reply (same id, ``followup: true``) when the
  cloud is back. Removing the queued row and queuing the follow-up are one transaction: a
  follow-up is sent once. Follow-ups answer in words only: no tool runs hours late.
  ``offline = "local"``: the local answer only.
- **Budget**: ``daily_requests`` and ``daily_tokens`` per local day, kept in the journal; when
  spent, the local answer says so and nothing is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from .agents import converse
from .cloudlink import CloudLink, Emit
from .config import AgentConfig, CloudConfig
from .journal import Escalation, Journal, OutRow
from .memory.store import approx_tokens
from .memory.working import WorkingMemory, private_withheld
from .messages import Reply, Request
from .models import Generation, GenerationRequest, ModelError, Unreachable
from .redact import Redactor

if TYPE_CHECKING:
    from .agents.base import Context
    from .tools.base import Tool
    from .tools.runner import ToolRunner

log = logging.getLogger("edged.cloud")


class CloudAgent(Protocol):
    """What the escalator uses of the agent that escalates
    (:class:`edged.agents.tool_agent.ToolAgent`)."""

    @property
    def name(self) -> str: ...
    @property
    def cfg(self) -> AgentConfig: ...
    @property
    def tools(self) -> Mapping[str, Tool]: ...

    async def working_memory(self, request: Request, *, budget: int | None = None,
                             for_cloud: bool = False) -> WorkingMemory: ...

MAX_QUEUED_ATTEMPTS = 3


tool_wire_name = converse.wire_name  # the name the cloud sees


@dataclass
class Outcome:
    """What an escalation gave: the cloud's reply, or a note for the local reply."""

    reply: Reply | None = None
    note: str | None = None


class Escalator:
    def __init__(self, cfg: CloudConfig, journal: Journal, *, runner: ToolRunner, emit: Emit,
                 wake_outbox: Callable[[], None], clock: Callable[[], float] = time.time
                 ) -> None:
        self.cfg = cfg
        self.journal = journal
        self.runner = runner
        self._emit = emit
        self._wake_outbox = wake_outbox
        self.clock = clock
        self.redactor = Redactor(fields=list(cfg.redact_fields), patterns=cfg.redact_patterns)
        self.stats = {"sent": 0, "answered": 0, "queued": 0, "followups": 0, "expired": 0,
                      "failed": 0, "over_budget": 0, "waiting": 0}
        self.link = CloudLink(cfg, emit=emit)  # the client, its threads, online or not
        self._wake = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """unknown | online | offline"""
        return self.link.state

    @property
    def last_error(self) -> str:
        return self.link.last_error

    async def close(self) -> None:
        await self.link.close()

    def describe(self) -> dict[str, Any]:
        return {"state": self.state, "last_error": self.last_error[:200], **self.stats}

    # -- budget --------------------------------------------------------------------------------

    def _day(self) -> str:
        return time.strftime("%Y-%m-%d", time.localtime(self.clock()))

    async def _budget_left(self) -> str | None:
        """None when a request may go; else why not."""
        requests, tokens = await self.journal.cloud_usage(self._day())
        if requests >= self.cfg.daily_requests:
            return f"{requests} of {self.cfg.daily_requests} cloud requests today"
        if tokens >= self.cfg.daily_tokens:
            return f"{tokens} of {self.cfg.daily_tokens} cloud tokens today"
        return None

    # -- the agent's hook ----------------------------------------------------------------------

    async def escalate(self, agent: CloudAgent, request: Request, ctx: Context, reason: str,
                       *, tools: bool = True) -> Outcome:
        """Try the cloud for ``request``; see the module doc for what happens when."""
        if not self.cfg.enabled or agent.cfg.escalate == "never":
            return Outcome()
        over = await self._budget_left()
        if over is not None:
            self.stats["over_budget"] += 1
            await self._emit("cloud_budget", {"request_id": request.id, "why": over})
            return Outcome(note=f"(The cloud budget for today is used up: {over}; "
                                f"answered locally.)")
        messages, counts = await self._messages(agent, request)
        specs = self._tool_specs(agent, request) if tools and self.cfg.tools else []
        if self.state == "offline":
            return await self._offline(agent, request, messages, reason)
        try:
            reply = await self._converse(agent, request, ctx, messages, specs, reason, counts)
        except Unreachable as e:
            await self.link.mark("offline", str(e))
            return await self._offline(agent, request, messages, reason)
        except ModelError as e:
            self.stats["failed"] += 1
            log.warning("cloud escalation of %s failed: %s", request.id, e)
            await self._emit("cloud_failed", {"request_id": request.id, "error": str(e)[:300]})
            return Outcome(note="(The cloud could not answer; this is the local answer.)")
        return Outcome(reply=reply)

    async def _offline(self, agent: CloudAgent, request: Request, messages: list[dict[str, Any]],
                       reason: str) -> Outcome:
        if self.cfg.offline == "local":
            return Outcome(note="(The cloud is unreachable; answered locally.)")
        now = self.clock()
        body = msgspec.json.encode({"messages": messages, "reason": reason,
                                    "model": self.cfg.model, "agent": agent.name})
        props = msgspec.msgpack.encode({"c": request.correlation}) if request.correlation \
            else None
        row = Escalation(request_id=request.id, agent=agent.name, device=request.device,
                         reply_topic=request.reply_topic or "", props=props, body=body,
                         priority=request.priority, created=now,
                         expires=now + self.cfg.queue_ttl_s)
        if await self.journal.escalation_add(row) is not None:
            self.stats["queued"] += 1
            await self._emit("cloud_queued", {"request_id": request.id, "reason": reason})
        self._wake.set()
        return Outcome(note="(The cloud is unreachable: I'll send a better answer when it "
                            "is back.)")

    # -- building what is sent -----------------------------------------------------------------

    async def _messages(self, agent: CloudAgent, request: Request
                        ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        wm = await agent.working_memory(request, for_cloud=True)
        wm.turns, n = private_withheld(wm.turns)  # again: whatever agent built them
        messages = wm.messages()
        counts: dict[str, int] = {}
        if wm.withheld + n:
            counts["private_turn"] = wm.withheld + n
        if request.data:
            data, c = self.redactor.data(request.data)
            counts.update(c)
            messages[-1]["content"] += "\nData: " + json.dumps(data, ensure_ascii=False)
        messages, c = self.redactor.messages(messages)
        for k, v in c.items():
            counts[k] = counts.get(k, 0) + v
        return messages, counts

    def _tool_specs(self, agent: CloudAgent, request: Request) -> list[dict[str, Any]]:
        """The agent's tools that the ACL allows for this device and topic."""
        def allowed(t: Tool) -> bool:
            if agent.cfg.tools and not any(fnmatchcase(t.name, p) for p in agent.cfg.tools):
                return False
            return self.runner.acl.check(t.name, topic=request.topic,
                                         device=request.device).allowed

        return converse.specs(agent.tools, allowed)

    def _request_event(self, request: Request, reason: str, messages: list[dict[str, Any]],
                       specs: list[dict[str, Any]], counts: dict[str, int]) -> dict[str, Any]:
        """The ``cloud_request`` event: metadata, the messages only if configured."""
        event: dict[str, Any] = {
            "request_id": request.id, "reason": reason, "model": self.cfg.model,
            "message_count": len(messages),
            "tokens": sum(approx_tokens(json.dumps(m, ensure_ascii=False)) for m in messages),
            "tools": [s["function"]["name"] for s in specs], "redacted": counts}
        if self.cfg.event_content == "redacted":
            event["messages"] = messages
        return event

    # -- talking to the cloud ------------------------------------------------------------------

    async def _generate(self, messages: list[dict[str, Any]],
                        specs: list[dict[str, Any]]) -> Generation:
        gen = await self.link.generate(GenerationRequest(
            messages=messages, max_tokens=self.cfg.max_tokens, temperature=0.0,
            # "auto" explicitly: OpenAI's default with tools, but some servers
            # (llama-cpp-python) only call tools when asked so
            tools=specs or None, tool_choice="auto" if specs else None))
        await self.journal.cloud_spend(self._day(), 1,
                                       gen.prompt_tokens + gen.completion_tokens)
        self.stats["sent"] += 1
        await self.link.mark("online")
        return gen

    async def _converse(self, agent: CloudAgent, request: Request, ctx: Context,
                        messages: list[dict[str, Any]], specs: list[dict[str, Any]],
                        reason: str, counts: dict[str, int]) -> Reply:
        t0 = time.perf_counter()
        await self._emit("cloud_request", self._request_event(request, reason, messages,
                                                              specs, counts))

        async def stop_if_over(_step: int) -> str | None:
            over = await self._budget_left()
            return f"(Stopped: the cloud budget is used up: {over}.)" if over else None

        out = await converse.run(
            self._generate, messages, specs, tools=agent.tools, runner=self.runner,
            request=request, ctx=ctx, agent=agent.name, agent_tools=agent.cfg.tools,
            max_steps=agent.cfg.max_steps, plan="cloud", label="cloud",
            scrub=lambda s: self.redactor.text(s)[0], before_step=stop_if_over)
        self.stats["answered"] += 1
        text, calls = out.text, out.calls
        if not text and calls:  # it acted and said nothing more: say what was done
            text = "; ".join(f"{c.tool}: {json.dumps(c.result, default=str)}" for c in calls)
        return Reply(id=request.id, agent=agent.name, text=text or "(no answer)",
                     tool_calls=calls, escalated=True, model=self.cfg.model or "cloud",
                     latency_ms=round((time.perf_counter() - t0) * 1000, 2))

    # -- the background task: follow-ups for queued escalations --------------------------------

    async def run(self) -> None:
        """Deliver queued escalations when the cloud is reachable; expire old ones."""
        if not self.cfg.enabled:
            return
        backoff = self.cfg.retry_min_s
        while True:
            for request_id, device in await self.journal.escalations_expire():
                self.stats["expired"] += 1
                log.info("cloud escalation of %s expired undelivered", request_id)
                await self._emit("cloud_expired", {"request_id": request_id,
                                                   "device": device})
            queued = await self.journal.escalations(20)
            self.stats["waiting"] = len(queued)
            if not queued:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.state != "online":
                if not await self._probe():
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, self.cfg.retry_max_s)
                    continue
            backoff = self.cfg.retry_min_s
            if await self._budget_left() is not None:
                await self._sleep(self.cfg.retry_max_s)  # tomorrow's budget, or the TTL
                continue
            for esc in queued:
                if not await self._follow_up(esc):
                    break

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early for new work or at the earliest expiry."""
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    async def _probe(self) -> bool:
        return await self.link.probe()

    async def _follow_up(self, esc: Escalation) -> bool:
        """One queued escalation: ask, then queue the follow-up reply and drop the row in
        one transaction. False when the cloud went away again."""
        body = msgspec.json.decode(esc.body)
        try:
            gen = await self._generate(body["messages"], [])
        except Unreachable as e:
            await self.link.mark("offline", str(e))
            return False
        except ModelError as e:
            dropped = await self.journal.escalation_failed(esc.id, MAX_QUEUED_ATTEMPTS)
            log.warning("cloud follow-up for %s failed%s: %s", esc.request_id,
                        " (dropped)" if dropped else "", e)
            return True
        reply = Reply(id=esc.request_id, agent=esc.agent, text=gen.text.strip() or
                      "(no answer)", escalated=True, model=self.cfg.model or "cloud",
                      followup=True)
        out = OutRow(topic=esc.reply_topic, payload=msgspec.json.encode(reply),
                     priority=esc.priority, kind="reply", props=esc.props)
        if await self.journal.escalation_done(esc.id, [out]):
            self.stats["followups"] += 1
            self._wake_outbox()
            await self._emit("cloud_followup", {"request_id": esc.request_id,
                                                "device": esc.device})
        return True
