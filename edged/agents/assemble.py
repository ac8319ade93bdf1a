"""Tool agents built from ``[agents]`` and the current tools: at start and on every reload."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial

from ..config import AgentConfig, ModelConfig
from ..escalation import Escalator
from ..governor import Governor
from ..memory import Consolidator, Memory
from ..models.pool import ModelPool
from ..tools.base import Tool
from ..tools.runner import ToolRunner
from . import knowledge
from .base import Stage
from .selector import CentroidIndex, tool_leads
from .tiers import Tier, Tiers
from .tool_agent import ToolAgent

log = logging.getLogger("edged.agents")

def _implied(tool: Tool) -> list[str]:
    """The requests a tool's own words imply when its author gave no examples; a plugin
    whose schema the rules cannot read gets none (logged), never a failed start."""
    if tool.example_pairs():
        return []
    try:
        return knowledge.utterances(tool)
    except Exception as e:  # noqa: BLE001 - plugin-provided text must not stop the agents
        log.warning("tool %s: no implied requests: %r", tool.name, e)
        return []


Embed = Callable[[list[str]], Awaitable[list[list[float]]]]


async def tool_index(tools: list[Tool], embed: Embed) -> CentroidIndex:
    """The embeddings index an agent chooses its tools by: each tool's description, its
    examples and, when its author gave none, the requests its own words imply."""
    index = CentroidIndex(embed)
    await index.build({t.name: [t.description] + [u for u, _ in t.example_pairs()]
                       + _implied(t) for t in tools},
                      leads={t.name: tool_leads(t) | knowledge.address_leads(t)
                             for t in tools},
                      negatives={t.name: t.not_examples for t in tools})
    return index


async def build_agents(agents: Mapping[str, AgentConfig], *, runner: ToolRunner, embed: Embed,
                       pool: ModelPool, governor: Governor, memory: Memory | None,
                       escalator: Escalator | None, consolidator: Consolidator | None = None,
                       models: Mapping[str, ModelConfig] | None = None
                       ) -> tuple[dict[str, Stage], CentroidIndex | None]:
    """Every tool agent with its tool index, and the classifier over agents (when there is
    more than one). The caller swaps them in at once: requests already running keep the agent
    (and tools) they started with."""
    models = models or {}
    stages: dict[str, Stage] = {}
    agent_texts: dict[str, list[str]] = {}
    for name, acfg in agents.items():
        tools = runner.visible(acfg.tools)
        index = await tool_index(tools, embed)
        tiers = [Tier(a, models[a].talks) for a in acfg.tiers if a in models]
        agent = ToolAgent(
            name, acfg, runner=runner, index=index, pool=pool,
            model=tiers[0].alias if tiers else None,
            assist=bool(tiers) and models[tiers[0].alias].assists,
            model_for=partial(governor.model_for, low_power_model=acfg.low_power_model),
            memory=memory, escalator=escalator,
            tiers=Tiers(tiers, pool, cap=governor.tier_cap))
        agent.consolidator = consolidator
        stages[name] = agent
        agent_texts[name] = [acfg.description] + [
            u for t in tools for u, _ in t.example_pairs()]
        log.info("agent %s: %d tool(s): %s", name, len(tools),
                 ", ".join(t.name for t in tools) or "none")
    agent_index = None
    if len(agents) > 1:
        agent_index = CentroidIndex(embed)
        await agent_index.build(agent_texts)
    return stages, agent_index
