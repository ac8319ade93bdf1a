"""Planning: which tool(s) a request asks for, and their arguments by rule or by a narrow
model question.

1. Split a compound request ("lights on and heating to 21") where each part stands alone.
2. Choose the tool by embeddings (centroids of each tool's description + examples); below a
   threshold there is no tool; when the best two are close, the candidate whose arguments the
   rules can fill wins, else the model picks among them (a constrained choice).
3. Fill arguments by rules (``fill``: choices, numbers with units, yes/no from the tool's own
   verbs, range ends and fractions, free text); ask the model only for what is left, under a
   JSON schema whose strings can only be spans of the request and whose numbers can only be
   the numbers said; a choice or a yes/no the user did not say is asked, never guessed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from ..models import GenerationRequest, ModelError, ModelUnavailable
from ..models.pool import ModelPool
from ..tools.base import Tool
from . import fill, knowledge, slots
from .arguments import Arguments
from .meaning import ChoiceMeaning
from .selector import CentroidIndex, Ranking, lead_word, tool_leads
from .words import COMMON_VERBS, ToolWords, said_stems, stem, vocabulary

log = logging.getLogger("edged.agents")

# one step of a plan: (the request's part, its tool, the arguments or None when the model
# must fill some, the ranking that chose the tool)
Step = tuple[str, Tool, dict[str, Any] | None, Ranking]

_SPLIT = re.compile(r"\s*(?:,?\s+and then\s+|,?\s+then\s+|,?\s+and also\s+|"
                    r",?\s+and\s+(?!a half|a quarter|an? \w+ and)|;\s*)", re.I)
# A tool without required arguments has nothing to confirm the choice: it needs a closer
# match ("ignore your instructions" must not cancel a timer).
NO_ARGS_MIN_SCORE = 0.38
# Below this score a tool must be named by the request: one of its own words (name,
# description) or a value of one of its choices; a wrong call is worse than a question.
GROUNDED_BELOW = 0.4
# Candidates this close to the best are told apart by what the request fills.
EVIDENCE_MARGIN = 0.12
# Splitting a request into several commands needs every part to be a clear command.
SPLIT_MIN_SCORE = 0.5
# A tool whose every argument the request says may be called this far below the best one
# (which it cannot fill), and never below FULLY_SAID_MIN.
FULLY_SAID_MARGIN = 0.2
FULLY_SAID_MIN = 0.14


class WantsCloud(Exception):
    """The small model chose "escalate" among close candidates."""


class Planner:
    """The rules pipeline of one agent over its visible tools."""

    def __init__(self, tools: dict[str, Tool], index: CentroidIndex, *,
                 pool: ModelPool | None, model: str | None,
                 model_for: Callable[[str], str] | None = None,
                 cloud_pick: bool = False, assist: bool = True) -> None:
        self.tools = tools
        self.assist = assist  # the model may pick among close tools (ModelConfig.assist)
        self.index = index
        self.pool = pool
        self.model = model
        self._model_for = model_for
        self.cloud_pick = cloud_pick  # the model may answer "escalate" among close tools
        self.words = ToolWords(tools)  # the words each tool is known by
        # the arguments' side: rules, free text, choices by meaning, the model's question
        self.args = Arguments(tools, pool=pool, model=model, model_for=model_for,
                              assist=assist,
                              meaning=ChoiceMeaning(index.embed) if index is not None
                              else None)
        self.meaning = self.args.meaning
        self.filled = self.args.filled
        self.rule_args = self.args.rule_args
        self.rules_contradict = self.args.rules_contradict
        self.complete_args = self.args.complete_args
        self.model_args = self.args.model_args

    async def plan(self, text: str) -> list[Step]:
        """One step per independent command; None args: the model must fill some."""
        parts = [p for p in _SPLIT.split(text) if p.strip()]
        if len(parts) > 1:
            steps: list[Step] = []
            for p in parts:
                step = await self.step(p)
                if step is None or step[2] is None or \
                        step[3].choices[0].score < SPLIT_MIN_SCORE:
                    steps = []
                    break  # not separable ("kitchen and bedroom lights"): one command
                steps.append(step)
            if steps:
                return steps
        step = await self.step(text)
        return [step] if step else []

    async def step(self, text: str) -> Step | None:
        ranking = await self.index.rank(text, list(self.tools))
        if boost := self.words.boost(text):
            ranking = ranking.boost(boost)
        if slots.is_question(text):
            ranking = ranking.penalise({n for n, t in self.tools.items() if _changes_state(t)},
                                       0.25)
        if ranking.best is None:
            # nothing is close: names and prices drown the sentence ("lip balm is one
            # fifty now"); a tool whose every argument is said may still be meant
            return self._fully_said(text, ranking, FULLY_SAID_MIN)
        question = slots.is_question(text)
        if (picked_step := self._by_evidence(text, ranking)) is not None:
            return picked_step
        candidates = ranking.choices[:3] if ranking.ambiguous else ranking.choices[:1]
        if ranking.ambiguous:
            names = [c.name for c in candidates if c.score >= ranking.threshold]
            lead = lead_word(text)
            by_verb = [n for n in names if lead in tool_leads(self.tools[n])]
            # the request's verb names exactly one candidate: trust it over the model
            picked = by_verb[0] if len(by_verb) == 1 else await self.model_pick(text, names)
            score = next((c.score for c in candidates if c.name == picked), 0.0)
            if picked is not None and (score >= GROUNDED_BELOW or self.grounded(
                    text, self.tools[picked])) and not (
                    question and _changes_state(self.tools[picked])) and \
                    not self.rules_contradict(text, self.tools[picked]):
                tool = self.tools[picked]
                return text, tool, self.rule_args(text, tool), ranking
        first: Step | None = None
        if not ranking.ambiguous and self.rules_contradict(text, self.tools[candidates[0].name]):
            # what was said does not fit the best tool at all ("4471 degrees"): the next
            # candidates get their chance
            candidates = ranking.choices[:3]
        off = _switches_off(text)
        for c in candidates:
            tool = self.tools[c.name]
            args = self.rule_args(text, tool)
            if c.score < ranking.threshold:
                break
            if question and _changes_state(tool):
                continue  # a question never changes anything ("is the back door locked")
            if c.score < GROUNDED_BELOW and not self.grounded(text, tool):
                continue  # a weak match that names nothing of the tool's: no call
            if self.rules_contradict(text, tool):
                continue
            if off and not _can_switch_off(tool):
                continue  # "kill the irrigation" never starts a watering
            if not tool.parameters.get("required") and c.score < NO_ARGS_MIN_SCORE:
                continue  # nothing in the request confirms a tool without arguments
            if args is not None:
                return text, tool, args, ranking
            first = first or (text, tool, None, ranking)
        if first is None or first[2] is None:
            # nothing matched well, or the best cannot be filled: a close tool whose every
            # argument the request says ("Oven off please" beside a temperature setter)
            floor = first[3].choices[0].score - FULLY_SAID_MARGIN if first else 0.0
            said = self._fully_said(text, ranking, max(floor, FULLY_SAID_MIN))
            if said is not None:
                return said
        return first

    def _fully_said(self, text: str, ranking: Ranking, floor: float) -> Step | None:
        """The one candidate above ``floor`` that the request names and whose every
        required argument it says (by rule, free text included); None unless exactly one."""
        question = slots.is_question(text)
        said = said_stems(text)
        hits: list[Step] = []
        for c in ranking.choices[:4]:
            if c.score < floor:
                break
            tool = self.tools[c.name]
            if (question and _changes_state(tool)) or self.rules_contradict(text, tool) or \
                    not self.grounded(text, tool) or \
                    (_switches_off(text) and not _can_switch_off(tool)):
                continue
            required = tool.parameters.get("required", [])
            if not required:
                continue  # nothing said confirms a tool without arguments
            if any(knowledge.of(tool).params[r].kind == "string" and r in
                   knowledge.of(tool).params for r in required) and \
                    not self.words.own()[tool.name] & said and \
                    not self._measured(text, tool) and \
                    not (question and self._only_lookup(tool, ranking)):
                # free text fits any request: the tool must be named by its own word, by a
                # price or measure only it takes, or be the one lookup a question can mean
                continue
            args = self.complete_args(text, tool)
            if args is not None and self._says_all(text, tool, args):
                hits.append((text, tool, args, ranking))
        if len(hits) > 1:  # several fit: the one the request's verb leads to, if only one
            lead = lead_word(text)
            leads = getattr(self.index, "leads", {})
            led = [h for h in hits if lead and lead in leads.get(h[1].name, ())]
            hits = led
        return hits[0] if len(hits) == 1 else None

    def _measured(self, text: str, tool: Tool) -> bool:
        """The rules found a price, a percentage or a measure for one of the tool's
        numbers ("lip balm is one fifty now")."""
        info = knowledge.of(tool).params
        found = self.filled(text, tool)
        return any(n in info and info[n].kind in ("integer", "number") and
                   (info[n].currency or info[n].percent_like or info[n].unit)
                   for n in found)

    def _only_lookup(self, tool: Tool, ranking: Ranking) -> bool:
        """``tool`` is the only one among the close candidates that reads instead of
        changing something."""
        near = [self.tools[c.name] for c in ranking.choices[:3]]
        lookups = [t for t in near if not _changes_state(t)]
        return lookups == [tool]

    def _says_all(self, text: str, tool: Tool, args: dict[str, Any]) -> bool:
        """Every required yes/no was said, not implied ("on" with a level)."""
        info = knowledge.of(tool)
        said = fill.mend(text)
        return all(fill.polarity(said, info.params[r], info.nouns) is not None
                   for r in tool.parameters.get("required", [])
                   if r in info.params and info.params[r].kind == "boolean")


    def _by_evidence(self, text: str, ranking: Ranking) -> Step | None:
        """Tools that sound alike (a valve and a watering zone; a preheat and a fridge) are
        told apart by what the request fills: among the candidates close to the best, one
        that takes more of what was said wins."""
        best = ranking.choices[0].score
        close = [c for c in ranking.choices[:3] if best - c.score < EVIDENCE_MARGIN and (
            c.score >= ranking.threshold or (c.score >= 0.8 * ranking.threshold
                                             and self.grounded(text, self.tools[c.name])))]
        if len(close) < 2:
            return None
        tools = [self.tools[c.name] for c in close]
        ev = {t.name: self.evidence(text, t, [r for r in tools if r is not t]) for t in tools}
        top = max(ev.values())
        leaders = [c for c in close if ev[c.name] == top]
        if len(leaders) != 1 or top <= ev[close[0].name]:
            return None
        tool = self.tools[leaders[0].name]
        if self.rules_contradict(text, tool) or (
                leaders[0].score < GROUNDED_BELOW and not self.grounded(text, tool)) or (
                slots.is_question(text) and _changes_state(tool)) or (
                _switches_off(text) and not _can_switch_off(tool)):
            return None
        args = self.rule_args(text, tool)
        return (text, tool, args, ranking) if args is not None else None

    def evidence(self, text: str, tool: Tool, rivals: list[Tool] | None = None) -> int:
        """How much of the request ``tool`` takes: each argument the rules found said in it
        (not one only implied, like "on" with a level), a unit said that one of its
        parameters is in (less each unit none of them takes), and each word of its own
        (name, description) that the request uses and its rivals do not have."""
        said = fill.mend(text)
        found = self.filled(text, tool)
        info = knowledge.of(tool)
        score = 0
        words = set(slots.words(said))
        for name, value in found.items():
            p = info.params.get(name)
            if p is None:
                continue
            if p.kind == "boolean" and fill.polarity(said, p, info.nouns) is None:
                continue  # implied, not said
            if p.choices and not set(slots.words(str(value))) & words and not any(
                    v == value and set(slots.words(a)) & words
                    for a, v in tool.aliases.get(name, {}).items()):
                continue  # a choice taken for what was said otherwise ("pieces")
            score += 1
        units_ = {p.unit for p in info.params.values() if p.unit and p.unit != "percent"}
        for q in fill.quantities(said):
            if q.unit == "percent":
                score += 1 if any(p.percent_like for p in info.params.values()) else -1
                continue
            if q.unit is None:
                continue
            if any(fill.units.convert(1.0, q.unit, u) is not None for u in units_):
                score += 1
            else:
                score -= 1
        if rivals:
            own = vocabulary(tool) - set().union(*(vocabulary(r) for r in rivals))
            score += len(own & set(slots.words(said)))
        return score

    def grounded(self, text: str, tool: Tool) -> bool:
        """The request names something of the tool's: a word of its name or description
        (not a common verb), or a choice value or alias it fills."""
        said = {stem(w) for w in slots.words(fill.mend(text))}
        if ({stem(w) for w in vocabulary(tool) - COMMON_VERBS} - self.words.domain()) & said:
            return True
        if self.words.own().get(tool.name, set()) & said_stems(text):
            return True  # a word only this tool is known by ("check" for a check-in)
        info = knowledge.of(tool)
        found = self.filled(text, tool)
        if any(info.params[k].choices or info.params[k].currency
               for k in found if k in info.params):
            return True  # a choice it offers, or a price, was said
        if any(info.params[k].unit == "percent" for k in found if k in info.params) and any(
                q.unit == "percent" or q.fraction for q in fill.quantities(fill.mend(text))):
            return True  # a percentage or a share for its percentage ("a third off")
        units_ = {p.unit for p in info.params.values() if p.unit and p.unit != "percent"}
        return any(q.unit is not None and q.unit != "percent" and any(
            fill.units.convert(1.0, q.unit, u) is not None for u in units_)
            for q in fill.quantities(fill.mend(text)))

    async def model_pick(self, text: str, names: list[str]) -> str | None:
        """The best two are close: let the model choose among them (a constrained choice).
        (Offered "none of these", the 135M model took it for right answers too: the choice
        is checked against the request's words instead, see ``grounded``.)"""
        if len(names) < 2 or self.pool is None or self.model is None or not self.assist:
            return None
        cloud = self.cloud_pick
        options = "\n".join(f"- {n}: {self.tools[n].description}" for n in names)
        if cloud:
            options += "\n- escalate: none of these; ask a bigger model"
        prompt = (f"Pick the action that does what the request asks.\n{options}\n"
                  f"Request: {text}\nAction: ")
        model = self._model_for(self.model) if self._model_for else self.model
        try:
            gen = await self.pool.generate(model, GenerationRequest(
                prompt=prompt, json_schema={"enum": names + (["escalate"] if cloud else [])},
                max_tokens=24, temperature=0.0))
            choice = json.loads(gen.text)
        except ModelUnavailable:
            raise
        except (ModelError, ValueError) as e:
            log.warning("model rerank failed: %s", e)
            return None
        if choice == "escalate" and cloud:
            raise WantsCloud()
        return choice if choice in names else None



_OFF_VERBS = re.compile(r"^(?:(?:please|can you|could you|okay|ok|so|now|just)\s+)*"
                        r"(?:stop|kill|halt|cancel|end|abort|disable|turn off|switch off|"
                        r"shut off|shut down|close|shut)\b", re.I)
_OFF_TOOL_VERBS = {"stop", "cancel", "close", "disable", "delete", "remove", "clear", "end",
                   "unset", "disarm", "unlock", "lock", "turn", "switch", "abort", "halt",
                   "shutdown", "shut", "kill", "off", "poweroff", "power", "pause", "mute",
                   "retract", "lower", "deactivate", "cut", "drain", "empty", "reset"}


def _switches_off(text: str) -> bool:
    """The command's verb stops, closes or cancels something."""
    return bool(_OFF_VERBS.match(fill.mend(text)))


def _can_switch_off(tool: Tool) -> bool:
    """The tool can do what an "off" command asks: a yes/no to say no with, a level with an
    off end, or a name that stops or cancels."""
    info = knowledge.of(tool)
    if any(p.kind == "boolean" or p.lo_words for p in info.params.values()):
        return True
    first_said = slots.words(tool.description)[:1]
    return bool(set(tool.short_name.lower().split("_")) & _OFF_TOOL_VERBS) or \
        bool(first_said and first_said[0] in _OFF_TOOL_VERBS)



_READS = {"the", "a", "an", "current", "how", "what", "whether", "is", "are", "which", "who",
          "when", "where", "today's", "latest", "last", "all", "any", "this", "your", "my",
          "our", "see", "view", "lookup", "status", "state", "info", "information",
          "details", "level", "time", "date", "weather", "tell", "count", "describe",
          "explain", "answer", "ask", "say", "search", "fetch"}


def _changes_state(tool: Tool) -> bool:
    """A tool changes something when its name or its description starts with an action verb
    (set, add, water, book, "check in"...) or it takes a required yes/no; a name that is a
    noun (tank_level, now, hostname) or a reading verb (get, read, list, check) is a lookup."""
    props = tool.parameters.get("properties", {})
    req = tool.parameters.get("required", [])
    if any(slots._kind(props[r], tool.parameters.get("$defs", {}))[0] == "boolean"
           for r in req if r in props):
        return True
    name = tool.short_name.lower().split("_")
    if name[:2] == ["check", "in"] or name[0] in knowledge.ACTION_VERBS:
        return True
    if name[0] in knowledge.QUERY_VERBS:
        return False
    desc = slots.words(tool.description)[:2]
    if desc[:2] == ["check", "in"]:
        return True
    if desc and desc[0] in knowledge.ACTION_VERBS and desc[0] != "tell":
        return True
    # a description in the imperative ("Lend a book", "Take a book back") does something;
    # one that reads ("Look up ...") or names a value ("The tank's level") does not
    return bool(desc) and desc[0].isalpha() and desc[0] not in knowledge.QUERY_VERBS and \
        desc[0] not in _READS and not desc[0].endswith("s")
