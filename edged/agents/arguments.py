"""Arguments for a chosen tool: by rule (``fill``), free text by rule (``freetext``), choices
by meaning (``meaning``), and what is left by a narrow model question whose strings can only
be spans of the request and whose numbers can only be numbers said in range. A choice or a
yes/no the user did not say, a name of the wrong shape, a number said in another unit: asked,
never guessed (a wrong call is worse than a question).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from ..models import GenerationRequest, ModelError, ModelUnavailable
from ..models.pool import ModelPool
from ..tools.base import ArgumentError, Tool
from . import fill, freetext, knowledge, slots, timeofday
from .meaning import ChoiceMeaning

log = logging.getLogger("edged.agents")


class Arguments:
    """The arguments' side of one agent's planner."""

    def __init__(self, tools: dict[str, Tool], *, pool: ModelPool | None, model: str | None,
                 model_for: Callable[[str], str] | None = None,
                 meaning: ChoiceMeaning | None = None, assist: bool = True) -> None:
        self.tools = tools
        self.assist = assist  # the model may fill what the rules leave open
        self.pool = pool
        self.model = model
        self._model_for = model_for
        self.meaning = meaning
        self._fill_cache: dict[tuple[str, str], dict[str, Any]] = {}
        self._choices: set[str] | None = None

    def filled(self, text: str, tool: Tool) -> dict[str, Any]:
        """What the rules find for ``tool`` in ``text``, computed once per pair (a request
        asks several times: contradiction check, rule arguments, model arguments, spans)."""
        key = (text, tool.name)
        found = self._fill_cache.get(key)
        if found is None:
            if len(self._fill_cache) > 256:
                self._fill_cache.clear()
            found = self._fill_cache[key] = fill.fill(text, tool)
        return dict(found)

    def rules_contradict(self, text: str, tool: Tool) -> bool:
        """The values the rules found break the tool's schema (out of range, wrong type), or
        the request says a quantity no parameter of the tool can take ("30 percent off" for
        an oven switch, "2 kilos" for a price)."""
        if _unplaced_quantity(text, tool):
            return True
        found = self.filled(text, tool)
        props = tool.parameters.get("properties", {})
        for name, value in found.items():
            prop = props.get(name, {})
            lo, hi = prop.get("minimum"), prop.get("maximum")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                    (lo is not None and value < lo) or (hi is not None and value > hi)):
                return True
        return False

    def rule_args(self, text: str, tool: Tool) -> dict[str, Any] | None:
        """Arguments from the rules alone, or None when a required one is still open."""
        found = self.filled(text, tool)
        required = tool.parameters.get("required", [])
        if all(r in found for r in required):
            try:
                tool.validate(found)
            except ArgumentError:
                return None
            return found
        return None

    def complete_args(self, text: str, tool: Tool) -> dict[str, Any] | None:
        """The arguments by rule, free text included, or None when one is still open."""
        args = self.rule_args(text, tool)
        if args is not None:
            return args
        known = self.filled(text, tool)
        props = tool.parameters.get("properties", {})
        missing = [r for r in tool.parameters.get("required", []) if r not in known]
        info = knowledge.of(tool).params
        texts = [m for m in missing if info[m].kind == "string" and not info[m].choices
                 and not info[m].time_of_day and not info[m].code]
        if len(texts) != len(missing) or not set(missing) <= set(props):
            return None
        found = freetext.fill_texts(text, tool, texts, known)
        if isinstance(found, str) or not set(texts) <= set(found) or \
                self._names_a_choice(tool, found) is not None:
            return None
        return {**known, **found} if valid(tool, {**known, **found}) else None

    def _names_a_choice(self, tool: Tool, values: dict[str, Any]) -> str | None:
        """The name parameter whose value is one of the agent's choices ("Nurse Kim" is a
        member of staff, not a pet), or None."""
        if self._choices is None:
            self._choices = {str(c).lower() for t in self.tools.values()
                             for p in knowledge.of(t).params.values() for c in p.choices or ()}
            self._choices |= {a.lower() for t in self.tools.values()
                              for aliases in t.aliases.values() for a in aliases}
        for name, value in values.items():
            if isinstance(value, str) and freetext.is_person(tool, name) and \
                    value.lower() in self._choices:
                return name
        return None

    async def model_args(self, text: str, tool: Tool) -> dict[str, Any] | str:
        """Ask the model for the open arguments under a narrow schema, or a question."""
        known = self.filled(text, tool)
        props = tool.parameters.get("properties", {})
        missing = [r for r in tool.parameters.get("required", []) if r not in known]
        if self.pool is None or self.model is None:
            # no model: free text by rule, else a question
            return self.complete_args(text, tool) or f"Which {', '.join(missing)} do you mean?"
        properties: dict[str, dict[str, Any]] = {}
        schema: dict[str, Any] = {"type": "object", "properties": properties,
                                  "required": missing, "additionalProperties": False}
        spans = _spans(text)
        numbers = slots.parse_numbers(text)
        for m in list(missing):
            kind, choices = slots._kind(props[m], tool.parameters.get("$defs", {}))
            if choices and self.meaning is not None and \
                    (v := await self.meaning.choose(text, tool, m, known)) is not None:
                known[m] = v  # "a flu jab": the choice "vaccination"
                missing.remove(m)
                continue
            if choices or kind == "boolean":
                # never guess a choice or a yes/no the user did not say: ask instead
                what = props[m].get("description") or m
                return f"Which {m} do you mean? ({what.rstrip('.')})" if choices is None else \
                    f"Which {m} do you mean: {', '.join(map(str, choices))}?"
            if kind in ("integer", "number"):
                # only numbers said that can be this one: in its range, and not said in
                # another unit ("ten percent off" is no price)
                p = knowledge.of(tool).params.get(m)
                said = _numbers_for(text, p, numbers)
                if p is not None and fill.direction_unsaid(text, p):
                    said = []  # in or out was not said: asked, never the model's guess
                if not said:  # no number was said: never invent one
                    what = (props[m].get("description") or "").rstrip(".")
                    return f"Which {m} do you mean?" + (f" ({what})" if what else "")
                properties[m] = {"enum": [int(n) if kind == "integer" else n
                                          for n in said]}
            elif kind == "string" and (p := knowledge.of(tool).params.get(m)) and p.code:
                return f"Which {m} do you mean?"  # no identifier said: never a span of words
            elif kind == "string":
                properties[m] = {"enum": spans} if spans else {"type": "string",
                                                                "maxLength": 60}
            else:
                return f"I can't work out {m} for {tool.short_name}; please say it plainly."
        # free text first by rule: the request minus the tool's carrier words; several
        # free-text arguments share the request out ("lend X to Sarah Jones")
        texts = [m for m in missing if slots._kind(props[m],
                                                   tool.parameters.get("$defs", {}))[0] == "string"]
        found = freetext.fill_texts(text, tool, texts, known)
        if isinstance(found, str):
            return found  # a value that cannot be what it names: asked
        if (taken := self._names_a_choice(tool, found)) is not None:
            return f"Which {taken} do you mean?"
        known.update(found)
        for m in [m for m in missing if m in found]:
            missing.remove(m)
            properties.pop(m, None)
        schema["required"] = missing
        if not missing:
            try:
                tool.validate(known)
                return known
            except ArgumentError:
                return f"Sorry, I couldn't work out the arguments for {tool.short_name}."
        if not self.assist:  # (a model that answers worse than the user would: ask)
            return f"Which {', '.join(missing)} do you mean?"
        prompt = _few_shot(tool, missing, text)
        model = self._model_for(self.model) if self._model_for else self.model
        try:
            gen = await self.pool.generate(model, GenerationRequest(
                prompt=prompt, json_schema=schema, max_tokens=96, temperature=0.0))
            filled = json.loads(gen.text)
        except ModelUnavailable:
            raise
        except (ModelError, ValueError) as e:
            log.warning("argument model failed for %s: %s", tool.name, e)
            return f"Sorry, which {', '.join(missing)} do you mean?"
        args = {**known, **{k: v for k, v in filled.items() if k in missing}}
        try:
            tool.validate(args)
        except ArgumentError:
            return f"Sorry, which {', '.join(missing)} do you mean?"
        info = knowledge.of(tool)
        for m in missing:
            p = info.params.get(m)
            v = args.get(m)
            if p is not None and p.time_of_day and not (
                    isinstance(v, str) and timeofday.find(v) is not None):
                return f"Which {m} do you mean?"  # a time the model made of other words
            if m in texts and isinstance(v, str) and not freetext.plausible(tool, m, v, args):
                return f"Which {m} do you mean?"
        return args


def valid(tool: Tool, args: dict[str, Any]) -> bool:
    try:
        tool.validate(args)
    except ArgumentError:
        return False
    return True


def _unplaced_quantity(text: str, tool: Tool) -> bool:
    """A percentage or a measure said that none of the tool's numbers can hold (a tool
    with free text may carry it in a message: "tell them we close in ten minutes")."""
    params = knowledge.of(tool).params.values()
    if any(p.kind == "string" and not p.choices and not p.time_of_day for p in params):
        return False
    numeric = any(p.kind in ("integer", "number") for p in params)
    said = fill.mend(text)
    words = slots.words(said)
    if not numeric and not any(p.choices for p in params) and any(
            fill.counts_things(words, q) for q in fill.quantities(said)):
        return True  # "knocked over four bottles ... take those off": no door has bottles
    for q in fill.quantities(fill.mend(text)):
        if q.fraction and not numeric:
            return True  # "a quarter off" for a switch
        if q.unit is None or q.fraction:
            continue
        if q.unit == "percent":
            if not any(p.percent_like for p in params):
                return True
        elif q.unit not in ("currency", "cent", "pound") and not any(
                p.unit and fill.units.convert(1.0, q.unit, p.unit) is not None
                for p in params) and not any(
                p.choices and any(fill.units.said_unit(str(c)) for c in p.choices)
                for p in params):
            return True
    return False


def _numbers_for(text: str, p: knowledge.Param | None, numbers: list[float]) -> list[float]:
    """The numbers said that ``p`` may take: within its range, and not said in a unit it
    cannot be converted from (a percentage for a price, degrees for seconds)."""
    if p is None:
        return numbers
    foreign = set()
    words = slots.words(fill.mend(text))
    for q in fill.quantities(fill.mend(text)):
        if q.unit is None:
            if (p.unit or p.currency or p.percent_like) and fill.counts_things(words, q):
                foreign.add(q.value)  # "40 baguettes" is no percentage
            continue
        if q.unit == "percent":
            if not p.percent_like:
                foreign.add(q.value)
        elif p.unit is None or fill.units.convert(1.0, q.unit, p.unit) is None:
            foreign.add(q.value)
    return [n for n in numbers if n not in foreign and
            (p.lo is None or n >= p.lo) and (p.hi is None or n <= p.hi)]


def _spans(text: str, max_words: int = 8) -> list[str]:
    """Every run of up to ``max_words`` words of the request: what a free string may be."""
    toks = re.findall(r"[\w'%.-]+", text)
    out: list[str] = []
    for i in range(len(toks)):
        for j in range(i + 1, min(len(toks), i + max_words) + 1):
            s = " ".join(toks[i:j])
            if s not in out:
                out.append(s)
    return out[:200]


def _few_shot(tool: Tool, missing: list[str], text: str) -> str:
    lines = [f"Tool: {tool.name}: {tool.description}", "Fill in the missing values."]
    for utterance, args in tool.example_pairs():
        if args and all(m in args for m in missing):
            lines.append(f"Request: {utterance}\nValues: "
                         f"{json.dumps({m: args[m] for m in missing})}")
    lines.append(f"Request: {text}\nValues: ")
    return "\n".join(lines)


