"""The agent's rules alone, in seconds: the planner and the argument rules over a request set,
without the daemon, MQTT or the 135M model.

``bench/agent_eval.py`` is the measure (the whole daemon over MQTT, the model included); this
is the development loop: it runs the same planner with the bundled MiniLM embedder, asks no
model (required choices are still taken by meaning, as the daemon does before it would ask
the model), and counts what the rules decide. Its figures track the daemon's within a few
requests (the model's constrained fills and picks are the difference).

    .venv/bin/python bench/rules_eval.py dev gym helpdesk [-v]   # -v lists every miss
    .venv/bin/python bench/rules_eval.py public public
    .venv/bin/python bench/rules_eval.py blind shop              # totals only, never misses

A blind set prints its totals and per-tool totals only: its requests are never looked at one
by one, so that they stay blind.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.agent_eval import ROOT, same  # noqa: E402
from edged.agents import slots  # noqa: E402
from edged.agents.arguments import Arguments  # noqa: E402
from edged.agents.assemble import tool_index  # noqa: E402
from edged.agents.planner import Planner  # noqa: E402
from edged.models.embed import create_embedder  # noqa: E402
from edged.tools import registry  # noqa: E402

PUBLIC = ("home.", "notes.", "locks.", "clock.", "system.", "gateway.", "memory.")
_rules_only = Arguments.model_args


async def _without_model(self: Arguments, text: str, tool: Any) -> dict[str, Any] | str:
    """What the daemon does before it asks the model: required choices by meaning."""
    known = self.filled(text, tool)
    props = tool.parameters.get("properties", {})
    for m in tool.parameters.get("required", []):
        if m in known or m not in props:
            continue
        _, choices = slots._kind(props[m], tool.parameters.get("$defs", {}))
        if choices and self.meaning is not None and \
                (v := await self.meaning.choose(text, tool, m, known)) is not None:
            known[m] = v
    filled = self.filled
    self.filled = lambda t, tl: dict(known) if tl is tool else filled(t, tl)  # type: ignore[method-assign]
    try:
        return await _rules_only(self, text, tool)
    finally:
        self.filled = filled  # type: ignore[method-assign]


Arguments.model_args = _without_model  # type: ignore[method-assign]


def _matches(case: dict[str, Any], got: dict[str, Any]) -> bool:
    return any(all(k in got and same(v, got[k]) for k, v in expected.items())
               for expected in [case["arguments"], *case.get("alternatives", [])])


async def run(where: str, name: str, embed: Any, verbose: bool) -> None:
    dirs = [ROOT / "plugins"] if where == "public" else [ROOT / "tests" / "data" / where /
                                                         "plugins"]
    every = registry.load(dirs).tools
    prefix = PUBLIC if where == "public" else (name + ".",)
    tools = {n: t for n, t in every.items() if n.startswith(prefix)}
    planner = Planner(tools, await tool_index(list(tools.values()), embed), pool=None,
                      model=None)
    cases = ROOT / "tests" / "data" / ("agent_eval.jsonl" if where == "public" else
                                       f"{where}/{name}.jsonl")
    totals: collections.Counter[str] = collections.Counter()
    per_tool: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in cases.read_text().splitlines():
        case = json.loads(line)
        steps = await planner.plan(case["text"])
        got: Any = None
        if not steps:
            kind = "ok" if case["tool"] is None else "none"
        else:
            _, tool, args, _ = steps[0]
            if args is None:
                args = await planner.model_args(case["text"], tool)
            if isinstance(args, dict) and planner.meaning is not None:
                args = await planner.meaning.complete(case["text"], tool, args)
            got = (tool.name, args)
            if isinstance(args, str):
                kind = "ok" if case["tool"] is None else "asked"
            elif case["tool"] is None:
                kind = "wrong"  # a call where none is right
            elif tool.name != case["tool"] or not _matches(case, args):
                kind = "wrong"
            else:
                kind = "ok"
        totals[kind] += 1
        per_tool[case["tool"] or "(none)"][kind] += 1
        if verbose and where != "blind" and kind != "ok":
            print(f"  {kind:6} {case['text']!r}\n         expected {case['tool']} "
                  f"{case['arguments']}\n         got      {got}")
    n = sum(totals.values())
    print(f"{name}: exact {totals['ok']}/{n} ({100 * totals['ok'] / n:.1f}%), a wrong call "
          f"{totals['wrong']} ({100 * totals['wrong'] / n:.1f}%), asked {totals['asked']}, "
          f"no tool {totals['none']}")
    if where == "blind" or verbose:
        for tool_name, kinds in sorted(per_tool.items()):
            print(f"    {tool_name:36} {dict(kinds)}")


async def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    if len(args) < 2 or args[0] not in ("public", "dev", "blind"):
        raise SystemExit(__doc__)
    emb = create_embedder("bundled:minilm-l6-int8")
    emb.load()

    async def embed(texts: list[str]) -> list[list[float]]:
        return emb.embed(texts)

    for name in args[1:]:
        await run(args[0], name, embed, "-v" in sys.argv)


if __name__ == "__main__":
    asyncio.run(main())
