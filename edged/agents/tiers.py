"""Model tiers: ``[agents.x] models = ["small", "lan"]``, cheapest first, the cloud last.

The rules pipeline runs on the cheapest tier (a 135M model only picks between close tools
and fills spans). A request it cannot serve (a question, chat, nothing fits, an unclear or
long plan) climbs to the next tier whose model talks (``models.<alias>.chat``): that model
answers with its working memory and, when the agent has tools, calls them itself (native
function calling through the same runner: visibility, ACL, schema, once, audit). A tier
that fails (a model error, a crash, a timeout) hands over to the next; the governor keeps
only the cheapest local tier under memory, heat or battery pressure; the reply says which
tier answered (``tier``: its index, or "cloud").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..messages import Reply, Request
from ..models import Generation, GenerationRequest, ModelError, ModelUnavailable
from ..models.pool import ModelPool
from ..tools.base import Tool
from . import converse, phrasing
from .base import Context

if TYPE_CHECKING:
    from .tool_agent import ToolAgent

log = logging.getLogger("edged.agents")


@dataclass(frozen=True)
class Tier:
    alias: str
    talks: bool  # answers in its own words and calls tools itself


class Tiers:
    def __init__(self, tiers: Sequence[Tier], pool: ModelPool | None,
                 cap: Callable[[int], int] = lambda n: n) -> None:
        self.tiers = list(tiers)
        self.pool = pool
        self.cap = cap  # the governor's: how many local tiers may run now
        self.stats: dict[str, int] = {}

    @property
    def talking(self) -> bool:
        return any(t.talks for t in self.tiers)

    def allowed(self) -> list[tuple[int, Tier]]:
        """The talking tiers that may run now, cheapest first."""
        return [(i, t) for i, t in enumerate(self.tiers[:self.cap(len(self.tiers))])
                if t.talks]

    async def climb(self, agent: ToolAgent, request: Request, ctx: Context) -> Reply | None:
        """The first talking tier's answer, climbing past the ones that fail; None when no
        tier may run or every one failed (the caller escalates or says so)."""
        if self.pool is None:
            return None
        for index, tier in self.allowed():
            try:
                reply = await self._ask(agent, index, tier, request, ctx)
            except (ModelError, ModelUnavailable) as e:
                log.warning("agent %s: tier %d (%s) failed on %s: %s; climbing", agent.name,
                            index, tier.alias, request.id, e)
                key = f"failed:{tier.alias}"
                self.stats[key] = self.stats.get(key, 0) + 1
                continue
            self.stats[tier.alias] = self.stats.get(tier.alias, 0) + 1
            return reply
        return None

    async def _ask(self, agent: ToolAgent, index: int, tier: Tier, request: Request,
                   ctx: Context) -> Reply:
        assert self.pool is not None
        pool = self.pool
        wm = await agent.working_memory(request)
        acl = agent.runner.acl

        def visible(t: Tool) -> bool:
            return acl.check(t.name, topic=request.topic, device=request.device).allowed

        specs = converse.specs(agent.tools, visible)

        async def generate(messages: list[dict[str, Any]], offered: list[dict[str, Any]]
                           ) -> Generation:
            # the words stream to <reply topic>/partial as the model writes them
            return await pool.generate(tier.alias, GenerationRequest(
                messages=messages, max_tokens=agent.cfg.answer_tokens, temperature=0.2,
                tools=offered or None, tool_choice="auto" if offered else None),
                on_token=ctx.stream if ctx is not None and ctx.streams else None)

        out = await converse.run(
            generate, wm.messages(), specs, tools=agent.tools, runner=agent.runner,
            request=request, ctx=ctx, agent=agent.name, agent_tools=agent.cfg.tools,
            max_steps=agent.cfg.max_steps, plan="multi", label=f"tier{index}")
        text = out.text or (phrasing.render(out.calls, agent.tools) if out.calls else "")
        if not text:
            raise ModelError(f"tier {tier.alias!r} gave no answer")
        reply = Reply(id=request.id, agent=agent.name, text=text, tool_calls=out.calls,
                      model=tier.alias, confidence=0.8, tier=index)
        return reply
