"""Which tool does a request want? Embedding centroids over each tool's description and
examples, with "no tool" below a threshold and a "did you mean" band when the best two are
close. The same index serves the router (agents instead of tools).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

EmbedFn = Callable[[list[str]], Awaitable[list[list[float]]]]


@dataclass(frozen=True, slots=True)
class Choice:
    name: str
    score: float  # cosine similarity to the name's centroid


@dataclass(frozen=True, slots=True)
class Ranking:
    choices: list[Choice]  # best first
    threshold: float
    margin: float

    @property
    def best(self) -> Choice | None:
        return self.choices[0] if self.choices and self.choices[0].score >= self.threshold \
            else None

    @property
    def ambiguous(self) -> bool:
        """The best two are too close to call: ask, or let the model rerank."""
        return (len(self.choices) > 1 and self.best is not None
                and self.choices[0].score - self.choices[1].score < self.margin)

    def penalise(self, names: set[str], amount: float) -> Ranking:
        """The same ranking with ``names`` scored ``amount`` lower (re-sorted)."""
        choices = [Choice(c.name, round(c.score - amount, 4)) if c.name in names else c
                   for c in self.choices]
        choices.sort(key=lambda c: -c.score)
        return Ranking(choices, self.threshold, self.margin)

    def boost(self, amounts: dict[str, float]) -> Ranking:
        """The same ranking with each name's score raised by its amount (re-sorted)."""
        choices = [Choice(c.name, round(c.score + amounts.get(c.name, 0.0), 4))
                   for c in self.choices]
        choices.sort(key=lambda c: -c.score)
        return Ranking(choices, self.threshold, self.margin)

    @property
    def confidence(self) -> float:
        if not self.choices:
            return 0.0
        top = self.choices[0].score
        gap = top - self.choices[1].score if len(self.choices) > 1 else top
        return round(max(0.0, min(1.0, 0.5 * top + 2.0 * gap)), 3)


_POLITE = {"please", "can", "could", "would", "will", "you", "kindly", "hey", "ok", "okay",
           "now", "just", "i", "want", "to", "need", "like", "go", "ahead", "and",
           "let's", "lets", "shall", "maybe"}


_QUESTION = {"what", "what's", "whats", "how", "how's", "is", "are", "do", "does", "did",
             "when", "where", "who", "which", "why", "it", "it's", "the", "a", "my", "i'm",
             "there", "we", "we're", "am", "was", "were", "has", "have"}


# command verbs that mean the same for choosing a tool
_SYNONYMS = {"put": "add", "jot": "add", "write": "add", "append": "add", "include": "add",
             "note": "add", "show": "read", "check": "read", "list": "read",
             "switch": "turn", "flip": "turn", "bolt": "lock", "secure": "lock",
             "scrap": "cancel", "axe": "cancel", "abort": "cancel", "drop": "cancel",
             "nix": "cancel", "reserve": "book", "arrange": "book"}


def lead_word(text: str) -> str:
    """The first word after politeness if it is a verb-like command word ("add", "read");
    question words and pronouns lead many requests and tell nothing apart."""
    for w in re.findall(r"[a-z']+", text.lower()):
        if w not in _POLITE:
            return "" if w in _QUESTION else _SYNONYMS.get(w, w)
    return ""


def _normalise(v: Sequence[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=False))


class CentroidIndex:
    """name -> centroid of the embeddings of its texts (description + examples)."""

    def __init__(self, embed: EmbedFn, *, threshold: float = 0.28, margin: float = 0.06,
                 lead_bonus: float = 0.15, not_penalty: float = 0.15) -> None:
        self.embed = embed
        self.threshold = threshold
        self.margin = margin
        self.lead_bonus = lead_bonus
        self.not_penalty = not_penalty
        self.negatives: dict[str, list[list[float]]] = {}
        self.centroids: dict[str, list[float]] = {}
        self.examples: dict[str, list[tuple[list[float], str]]] = {}
        self.leads: dict[str, set[str]] = {}

    async def build(self, texts: dict[str, list[str]],
                    leads: dict[str, set[str]] | None = None,
                    negatives: dict[str, list[str]] | None = None) -> None:
        """``texts``: description + example utterances per name; ``leads``: the verbs that
        start a request for it (its examples' first words, its name's first part). Embeddings
        of "add eggs to my notes" and "read my notes" are close; their verbs are not."""
        self.leads = leads or {}
        flat = [(name, t) for name, ts in texts.items() for t in ts if t.strip()]
        vectors = await self.embed([t for _, t in flat]) if flat else []
        by_name: dict[str, list[list[float]]] = {}
        self.examples = {}
        for (name, text), v in zip(flat, vectors, strict=True):
            v = _normalise(v)
            by_name.setdefault(name, []).append(v)
            self.examples.setdefault(name, []).append((v, text))
        self.centroids = {
            name: _normalise([sum(col) / len(vs) for col in zip(*vs, strict=True)])
            for name, vs in by_name.items()
        }
        neg = [(name, t) for name, ts in (negatives or {}).items() for t in ts if t.strip()]
        self.negatives = {}
        for (name, _), v in zip(neg, await self.embed([t for _, t in neg]) if neg else [],
                                strict=True):
            self.negatives.setdefault(name, []).append(_normalise(v))

    async def rank(self, text: str, names: Sequence[str] | None = None) -> Ranking:
        [q] = await self.embed([text])
        q = _normalise(q)
        pool = names if names is not None else list(self.centroids)
        lead = lead_word(text)
        scores = []
        for name in pool:
            c = self.centroids.get(name)
            if c is None:
                continue
            # the centroid, helped by the nearest single example (phrasings differ a lot)
            near = max((_dot(q, v) for v, _ in self.examples.get(name, [])), default=0.0)
            score = 0.5 * _dot(q, c) + 0.5 * near
            if lead and lead in self.leads.get(name, ()):
                score += self.lead_bonus
            unlike = max((_dot(q, v) for v in self.negatives.get(name, [])), default=-1.0)
            if unlike > near:  # it sounds like what this tool is NOT for
                score -= self.not_penalty + (unlike - near)
            scores.append(Choice(name, round(score, 4)))
        scores.sort(key=lambda c: -c.score)
        return Ranking(scores, self.threshold, self.margin)


class LeadSource(Protocol):
    """What :func:`tool_leads` reads of a tool (:class:`edged.tools.base.Tool`)."""

    @property
    def short_name(self) -> str: ...
    def example_pairs(self) -> Sequence[tuple[str, object]]: ...


def tool_leads(tool: LeadSource) -> set[str]:
    """A tool's lead verbs: the first word of its name and of each example."""
    first = tool.short_name.split("_")[0].lower()
    out = {_SYNONYMS.get(first, first)}
    out |= {lead_word(u) for u, _ in tool.example_pairs()}
    return {w for w in out if w}
