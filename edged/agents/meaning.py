"""Choices by meaning: "a flu jab" is the choice "vaccination", "teeth cleaning" is "dental".

The rules match a choice by its own words and the tool's aliases; a request often names it
by another word. The embedder (the same one that picks tools) compares the request's short
phrases with each choice, and a choice is taken only when one phrase is clearly closest to
it and to no other (a wrong call is worse than a question or a default).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..tools.base import Tool
from . import knowledge, slots

EmbedFn = Callable[[list[str]], Awaitable[list[list[float]]]]

# A phrase must be this close to a choice, and this much closer than to the next choice.
MIN_SIMILARITY = 0.4
MIN_MARGIN = 0.15
_MAX_WORDS = 3
# words that never name a choice on their own
_EMPTY = {"the", "a", "an", "for", "with", "in", "on", "at", "to", "of", "and", "or", "is",
          "are", "be", "please", "can", "could", "you", "we", "i", "my", "our", "her", "his",
          "their", "it", "its", "this", "that", "um", "uh", "okay", "ok", "so", "just",
          "book", "set", "make", "put", "get", "some", "one", "two", "three", "four"}


def _unit(v: Sequence[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


class ChoiceMeaning:
    """Fills choice parameters the rules left open, by the meaning of what was said."""

    def __init__(self, embed: EmbedFn) -> None:
        self.embed = embed
        self._choices: dict[tuple[str, str], list[tuple[str, list[float]]]] = {}

    async def choose(self, text: str, tool: Tool, param: str,
                     args: dict[str, Any]) -> str | None:
        """The choice of ``param`` the request names by meaning, or None."""
        info = knowledge.of(tool).params.get(param)
        if info is None or not info.choices or not all(isinstance(c, str) for c in info.choices):
            return None
        phrases = _phrases(text, args)
        if not phrases:
            return None
        key = (tool.name, param)
        if key not in self._choices:
            labels = [str(c) for c in info.choices]
            # each choice by its label, and by the gloss its description gives it
            # ("pending (waiting on the customer)")
            texts = [(c, c) for c in labels] + [(c, g) for c, g in _glosses(info.description,
                                                                             labels)]
            vectors = await self.embed([t for _, t in texts])
            self._choices[key] = [(c, _unit(v)) for (c, _), v in zip(texts, vectors,
                                                                      strict=True)]
        choices = self._choices[key]
        best: tuple[float, float, str] | None = None
        for v in await self.embed(phrases):
            q = _unit(v)
            by_choice: dict[str, float] = {}
            for name, c in choices:
                sim = sum(a * b for a, b in zip(q, c, strict=False))
                by_choice[name] = max(sim, by_choice.get(name, -1.0))
            scores = sorted(((sim, name) for name, sim in by_choice.items()), reverse=True)
            top, name = scores[0]
            margin = top - scores[1][0] if len(scores) > 1 else top
            if best is None or top > best[0]:
                best = (top, margin, name)
        if best is None or best[0] < MIN_SIMILARITY or best[1] < MIN_MARGIN:
            return None
        return best[2]

    async def complete(self, text: str, tool: Tool, args: dict[str, Any]) -> dict[str, Any]:
        """``args`` with the optional choices the request names by meaning ("a flu jab"),
        each checked against the schema; the rest left to their defaults."""
        out = dict(args)
        for name, p in knowledge.of(tool).params.items():
            if name in out or not p.choices or p.required:
                continue
            value = await self.choose(text, tool, name, out)
            if value is not None:
                trial = {**out, name: value}
                try:
                    tool.validate(trial)
                except Exception:  # noqa: BLE001 - a plugin's schema decides; keep the default
                    continue
                out = trial
        return out


def _glosses(doc: str, labels: list[str]) -> list[tuple[str, str]]:
    """(choice, its gloss) for each choice the description explains in brackets after its
    name: "pending (waiting on the customer)", "missed visit (engineer no-show)"."""
    out = []
    for c in labels:
        m = re.search(rf"(?i)\b{re.escape(c)}\s*\(([^)]{{3,80}})\)", doc)
        if m:
            out.append((c, m.group(1).strip()))
    return out


def _phrases(text: str, args: dict[str, Any]) -> list[str]:
    """Runs of one to three content words of the request, less the words other arguments
    took (a name, a time)."""
    from .fill import _unquoted

    taken = {w for v in args.values() if isinstance(v, str) for w in slots.words(v)}
    # (words in quotes are a message's, never a choice: "Show 'please switch off ...'")
    words = [w for w in slots.words(_unquoted(text)) if not re.fullmatch(r"[\d.,:%]+", w)]
    out: list[str] = []
    for i in range(len(words)):
        for j in range(i + 1, min(len(words), i + _MAX_WORDS) + 1):
            run = words[i:j]
            if run[0] in _EMPTY or run[-1] in _EMPTY or set(run) & taken:
                continue
            phrase = " ".join(run)
            if phrase not in out:
                out.append(phrase)
    return out[:40]
