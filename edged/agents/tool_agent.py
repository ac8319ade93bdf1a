"""The tool agent: a pipeline that makes a 135M model reliable by asking it little.

The planner (``planner``) picks the tool(s) and fills arguments by rule, asking the model only
narrow questions; context (``recollect``) fills what is left from the session's last call or
a recalled memory; the runner (visibility, ACL, schema, once, timeout, audit) runs the calls;
the reply is phrased from the tool's template or its result (``phrasing``). A request the
pipeline cannot answer well goes to the cloud when the agent may escalate. Every exchange is
recorded as two turns of the session.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import AgentConfig
from ..memory.consolidate import Consolidator
from ..memory.recall import Memory
from ..memory.working import WorkingMemory
from ..memory.working import build as build_working_memory
from ..messages import BadRequest, Reply, Request, ToolCall
from ..models import ModelUnavailable
from ..models.pool import ModelPool
from ..tools.base import Tool
from ..tools.runner import ToolRunner
from . import phrasing, remember
from .base import Context
from .planner import SPLIT_MIN_SCORE, Planner, WantsCloud
from .recollect import _REFERS_BACK, Recollection, session_of
from .selector import CentroidIndex, Ranking
from .tiers import Tiers

if TYPE_CHECKING:
    from ..escalation import Escalator

log = logging.getLogger("edged.agents")

_SMALL_TALK = [
    (re.compile(r"\b(hi|hello|hey|good (morning|evening|afternoon))\b", re.I),
     "Hello! How can I help?"),
    (re.compile(r"\b(thanks|thank you|cheers)\b", re.I), "You're welcome."),
    (re.compile(r"\b(bye|goodbye|good night)\b", re.I), "Goodbye!"),
    (re.compile(r"\b(who|what) are you\b", re.I),
     "I'm the assistant on this gateway."),
]


# Longer requests are not read by the rules (a talking tier or the cloud may answer them).
COMMAND_MAX_CHARS = 600


class ToolAgent:
    """An agent from ``[agents.<name>]`` that answers by calling tools."""

    def __init__(self, name: str, cfg: AgentConfig, *, runner: ToolRunner, index: CentroidIndex,
                 pool: ModelPool | None, model: str | None,
                 model_for: Callable[[str], str] | None = None,
                 escalator: Escalator | None = None,
                 memory: Memory | None = None, tiers: Tiers | None = None,
                 assist: bool = True) -> None:
        self.name = name
        self.cfg = cfg
        self.runner = runner
        self.index = index
        self.pool = pool
        self.model = model
        self._model_for = model_for
        # edged.escalation.Escalator (None: no cloud): asked when the local pipeline has no
        # good answer; a reply it returns replaces the local one
        self.escalator = escalator
        self.tools: dict[str, Tool] = {t.name: t for t in runner.visible(cfg.tools)}
        # the model tiers (see tiers.py): the rules pipeline runs on the cheapest
        self.tiers = tiers or Tiers([], pool)
        self.planner = Planner(
            self.tools, index, pool=pool, model=model, model_for=model_for, assist=assist,
            cloud_pick=escalator is not None and escalator.cfg.enabled
            and cfg.escalate != "never")
        self.recollect = Recollection(self.planner, memory if cfg.memory else None)
        self.consolidator: Consolidator | None = None  # memory's, for "remember that ..."

    @property
    def talks(self) -> bool:
        """A tier answers in its own words (see ModelConfig.chat)."""
        return self.tiers.talking

    @property
    def memory(self) -> Memory | None:
        """The agent's memory (None: off for this agent); set when memory opens."""
        return self.recollect.memory

    @memory.setter
    def memory(self, memory: Memory | None) -> None:
        self.recollect.memory = memory if self.cfg.memory else None

    async def handle(self, request: Request, ctx: Context) -> Reply:
        try:
            reply = await self._handle(request, ctx)
        except ModelUnavailable as e:
            # the model's worker crashed or is failed: the cloud, else a clear error (no
            # tool has run: a model call always comes before the tool it decides)
            notes: list[str] = []
            cloud = await self._escalate(request, ctx, "model_unavailable", notes)
            if cloud is None:
                raise BadRequest("model_unavailable",
                                 f"the local model is unavailable: {e}") from None
            reply = cloud
        if self.memory is not None and request.text.strip():
            # a retry of the same request records nothing twice (keyed by request id)
            await self.memory.record(
                request.device, session_of(request), request.id, request.text.strip(),
                reply.text, [{"tool": c.tool, "arguments": c.arguments}
                             for c in reply.tool_calls])
        return reply

    async def working_memory(self, request: Request, *, budget: int | None = None,
                             for_cloud: bool = False) -> WorkingMemory:
        """System prompt + recalled memories + recent turns + request, within the budget:
        what a model that answers freely (the cloud) gets; private memories never go to
        the cloud, and exchanges with a secret go as placeholders."""
        system = self.cfg.system_prompt or (
            f"You are the assistant on a home gateway. {self.cfg.description} Answer "
            f"briefly.".strip())
        memories, turns = [], []
        if self.memory is not None:
            memories = await self.memory.recall(request.text, request.device, touch=False)
            if for_cloud:
                memories = [m for m in memories if not m.private]
            turns = await self.memory.recent(session_of(request))
        return build_working_memory(system, request.text, memories=memories, turns=turns,
                                    budget=budget or (self.memory.cfg.context_tokens
                                                      if self.memory else 768),
                                    withhold_private=for_cloud)

    async def _handle(self, request: Request, ctx: Context) -> Reply:
        t0 = time.perf_counter()
        text = request.text.strip()
        token = (request.data or {}).get("confirm")
        if isinstance(token, str) and token:  # the device confirms a sensitive call
            call = await self.runner.confirm(token, request=request, ctx=ctx)
            if call is None:
                return self._reply(request, "There is nothing to confirm with that code (it "
                                   "was used, has expired, or is another device's).", [], 1.0)
            return self._reply(request, phrasing.render([call], self.tools), [call], 1.0)
        if not text:
            return self._reply(request, "Say what you would like me to do.", [], 0.0)
        if len(text) > COMMAND_MAX_CHARS:
            # the rules read a command, not a page: a long text would only cost seconds of
            # CPU on the loop (a hostile device's easiest stall); a model that talks, or the
            # cloud, may take it
            if self.talks:
                return await self._answer(request, ctx, [])
            local = self._reply(request, "That is too long for a command; please say it in "
                                         "a sentence.", [], 0.0)
            return await self._maybe_escalate(request, ctx, local, "too_long", [])
        if self.memory is not None and (told := remember.told(
                text, note_tool=any("note" in n for n in self.tools))) is not None:
            # a statement to remember (or a question about memory), never a command
            said = await remember.act(told, request.device, self.memory, self.consolidator,
                                      source=request.id)
            return self._reply(request, said, [], 1.0)
        notes: list[str] = []
        if self.cfg.escalate == "always":
            cloud = await self._escalate(request, ctx, "always", notes)
            if cloud is not None:
                return cloud
        talk = _small_talk(text)
        if not self.tools:  # an agent that only talks ("tools = []")
            return self._reply(request, talk, [], 1.0) if talk and not self.talks else \
                await self._answer(request, ctx, notes)
        try:
            plan = await self.planner.plan(text)
        except WantsCloud:
            local = self._reply(request, "Sorry, I'm not sure what you mean.", [], 0.0)
            return await self._maybe_escalate(request, ctx, local, "model_chose", notes)
        if talk and (not plan or plan[0][3].choices[0].score < 0.5):
            return self._reply(request, talk, [], 1.0)
        follow = await self.recollect.followup_plan(text, request)
        if follow and (not plan or plan[0][3].choices[0].score < SPLIT_MIN_SCORE or (
                _REFERS_BACK.search(text) and follow[0][1].name in
                [c.name for c in plan[0][3].choices[:3]])):
            # "and the bedroom too", "set it to 40 percent": the last call again with what
            # this request changes, unless another tool clearly fits on its own
            plan = follow
        if not plan:
            if self.talks:  # a question, an explanation, chat: the model's own words
                return await self._answer(request, ctx, notes)
            ranking = await self.index.rank(text, list(self.tools))
            local = self._reply(request, self._no_tool(text, ranking), [], ranking.confidence)
            return await self._maybe_escalate(request, ctx, local, "no_tool", notes)
        confidence = min([p[3].confidence for p in plan] + (
            [request.route_confidence] if request.route_confidence is not None else []))
        # before any tool runs: more steps than allowed, or too unsure of the plan
        reason = "too_many_steps" if len(plan) > self.cfg.max_steps else (
            "low_confidence" if self.escalator is not None and
            confidence < self.escalator.cfg.escalate_below else None)
        if reason is not None and (tiered := await self.tiers.climb(self, request, ctx)):
            return tiered  # a larger local model plans it before the cloud is asked
        if reason is not None and self.cfg.escalate != "always":
            cloud = await self._escalate(request, ctx, reason, notes)
            if cloud is not None:
                return cloud
        calls: list[ToolCall] = []
        for i, (part, tool, planned, _ranking) in enumerate(plan[: self.cfg.max_steps]):
            args: dict[str, Any] | str | None = planned
            if args is None:
                args = await self.recollect.context_args(part, tool, request, notes)
            if args is None:
                args = await self.planner.model_args(part, tool)
            if isinstance(args, dict) and self.planner.meaning is not None:
                args = await self.planner.meaning.complete(part, tool, args)
            if isinstance(args, str):  # could not decide: a larger tier, else ask
                if not calls and (tiered := await self.tiers.climb(self, request, ctx)):
                    return tiered
                local = self._reply(request, args, calls, confidence)
                return await self._maybe_escalate(request, ctx, local, "unclear", notes) \
                    if not calls else local
            call = await self.runner.call(
                tool.name, args, request=request, agent=self.name,
                agent_tools=self.cfg.tools, ctx=ctx, step=f"{i}:{tool.name}",
                plan="multi" if len(plan) > 1 else "local")
            calls.append(call)
            if _failed(call) and self.cfg.escalate != "always":
                local = self._reply(request, self._said(calls, notes), calls, confidence)
                return await self._maybe_escalate(request, ctx, local, "tool_failed", [],
                                                  keep=calls)
        reply = self._reply(request, self._said(calls, notes), calls, confidence)
        reply.latency_ms = round((time.perf_counter() - t0) * 1000, 2)
        return reply

    async def _escalate(self, request: Request, ctx: Context, reason: str,
                        notes: list[str]) -> Reply | None:
        """The cloud's reply, or None (its note, if any, goes to the local reply)."""
        if self.escalator is None or self.cfg.escalate == "never":
            return None
        out = await self.escalator.escalate(self, request, ctx, reason)
        if out.reply is not None:
            out.reply.tier = "cloud"
            return out.reply
        if out.note and out.note not in notes:
            notes.append(out.note)
        return None

    async def _maybe_escalate(self, request: Request, ctx: Context, local: Reply,
                              reason: str, notes: list[str],
                              keep: list[ToolCall] | None = None) -> Reply:
        """The local reply, unless the cloud answers better (``keep``: local calls that
        already ran stay in the reply)."""
        cloud = await self._escalate(request, ctx, reason, notes)
        if cloud is not None:
            if keep:
                cloud.tool_calls = [*keep, *cloud.tool_calls]
            return cloud
        if notes:
            local.text = " ".join([local.text, *[n for n in notes if n not in local.text]])
        return local

    # -- replies -------------------------------------------------------------------------

    async def _answer(self, request: Request, ctx: Context, notes: list[str]) -> Reply:
        """A request the rules cannot serve (a question, chat, nothing fits): the cheapest
        talking tier answers with the working memory (and calls tools itself); without one
        (the bundled 135M only fills arguments) it says so, or the cloud answers."""
        reply = await self.tiers.climb(self, request, ctx)
        if reply is not None:
            return reply
        what = "I can't answer that here" if not self.tools else \
            "Sorry, I can't help with that"
        local = self._reply(request, f"{what}: this gateway's model only runs commands.",
                            [], 0.0)
        return await self._maybe_escalate(request, ctx, local, "no_tool", notes)

    def _no_tool(self, text: str, ranking: Ranking) -> str:
        if ranking.choices and ranking.choices[0].score >= ranking.threshold * 0.75:
            t = self.tools[ranking.choices[0].name]
            return f"Did you mean: {t.description[0].lower()}{t.description[1:]}"
        what = self.cfg.description or "use my tools"
        return f"Sorry, I can't help with that. I can: {what[0].lower()}{what[1:]}"

    def _said(self, calls: list[ToolCall], notes: list[str]) -> str:
        return " ".join([phrasing.render(calls, self.tools), *notes])

    def _reply(self, request: Request, text: str, calls: list[ToolCall], confidence: float
               ) -> Reply:
        return Reply(id=request.id, agent=self.name, text=text, tool_calls=calls,
                     model=self.model, confidence=round(confidence, 3),
                     tier=0 if self.tiers.tiers else None)



def _failed(call: ToolCall) -> bool:
    r = call.result
    return isinstance(r, dict) and set(r) == {"error"}




def _small_talk(text: str) -> str | None:
    """A short, safe answer to greetings and thanks: the 135M model's free chat is poor."""
    if len(text.split()) > 8:
        return None
    for pattern, answer in _SMALL_TALK:
        if pattern.search(text):
            return answer
    return None


