"""Consolidation: turns become memories, old turns become episodes, stale memories go.

Runs offline on the gateway (scheduled, see :mod:`edged.scheduler`), one session at a time:

1. **Extract** what the user said that is worth keeping: each statement (not a question, not
   a bare command a tool carried out) is sorted into fact / preference / decision / none by
   cue rules first ("I like", "my ... is", "we decided"), then by MiniLM nearest-centroid
   over labelled statements. The generative model is asked too (under a JSON-schema enum, so
   its answer is always valid JSON: mem0 #3391 does not happen) but only when it passed a
   small probe of labelled statements at the first run: a 135M model does not (4/8 on the
   probe set), so on the bundled model the embeddings decide. That check is in the report.
2. **Decide** ADD / UPDATE / DELETE / NOOP against the scope's similar memories: the same
   statement again is a NOOP (one memory, one more source); a close statement about the same
   subject (the words other than values, like 19 or 21, match) UPDATEs the old one (a
   changed preference replaces it); "I no longer ...", "forget that ..." DELETEs the match.
3. **Fold** consolidated turns older than ``episode_after_s`` (beyond the short-term window)
   into episode memories: an extractive summary (the requests and the tools they ran; a
   135M model's abstractive summaries are not faithful), then delete those turns.
4. **Prune** memories older than the retention whose importance is low.

Each session's decisions, folded turns and new checkpoint commit in one transaction, so a
crash mid-way loses nothing and a rerun neither repeats nor skips a statement.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import MemoryConfig
from .recall import DEFAULT_IMPORTANCE, Memory
from .store import MemoryRow, Turn

log = logging.getLogger("edged.memory")

Generate = Callable[[str, dict[str, Any]], Awaitable[str]]

LONG_TERM_KINDS = ("fact", "preference", "decision")
CHUNK_TURNS = 200
UPDATE_MIN_SIMILARITY = 0.7
SUBJECT_MIN_OVERLAP = 0.6
RETRACT_MIN_SIMILARITY = 0.5
EPISODE_GAP_S = 3600
EPISODE_MAX_CHARS = 480

_CUES: list[tuple[str, re.Pattern[str]]] = [
    ("decision", re.compile(
        r"\b(i|we)('ve| have)? decided\b|\b(i|we)('ll| will| are going to| plan to| intend to)"
        r"\b|\blet'?s\b|\bfrom now on\b|\bwe're going to\b|\bi'm going to\b", re.I)),
    ("preference", re.compile(
        r"\b(i|we) (really |do |still )?(like|love|prefer|enjoy|hate|dislike|want|need)\b|"
        r"\b(i|we) (don't|do not|can't|cannot) (like|stand|bear)\b|\bmy favou?rite\b|"
        r"\b(i|we) (usually|always|never|normally)\b|\b(i|we)('d| would) (rather|like)\b", re.I)),
    ("fact", re.compile(
        r"\b(my|our) [\w' ]{1,30}? (is|are|was|were|lives?|works?)\b|"
        r"\b(i|we) (am|are|have|live|work|own|was|were)\b|\bi'm\b|\bwe're\b|"
        r"\b(is|are) (called|named)\b|\bremember (that )?\b", re.I)),
]
_RETRACT = re.compile(
    r"\b(no longer|not any ?more|any ?more)\b|\bforget (that|about)\b|\bthat's not true\b",
    re.I)
_LEAD = re.compile(
    r"^(?:(?:please|oh|and|also|so|well|btw|by the way|fyi|actually|ok|okay)[\s,]+)*"
    r"(?:(?:remember|note|keep in mind|don't forget|do not forget|never forget)"
    r"(?: that)?[\s,:]+)?", re.I)
_IMPORTANT = re.compile(r"\b(always|never|important|must|allergic|don't forget|emergency)\b",
                        re.I)
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\s*\n+\s*")
_WORD = re.compile(r"[a-z0-9']+")
_STOP = set("""a an the i me my we our us you your it its is are was were be been am to of in on
at for and or but so that this these those with by from as do does did not no don't doesn't
can can't please really just also still very too then than there here what which who when
where how i'm we're i've we've i'd we'd i'll we'll it's that's would will shall should could
like love prefer enjoy hate dislike want need usually always never normally rather favourite
favorite decided going plan intend let's lets from now longer anymore any more forget remember
note keep mind actually ok okay oh well btw fyi about know tell told""".split())
_NUMBER_WORDS = set("""zero one two three four five six seven eight nine ten eleven twelve
thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty
seventy eighty ninety hundred half quarter""".split())

# Labelled statements for the nearest-centroid kind classifier (and the model probe below).
KIND_EXAMPLES: dict[str, list[str]] = {
    "fact": ["my daughter is called Emma", "the dog's name is Rex", "my husband is a nurse",
             "the spare key is under the mat", "our house was built in 1930",
             "I work from home on fridays", "my mother lives with us",
             "the fuse box is in the cellar", "I am vegetarian", "the car is a blue golf"],
    "preference": ["I like it cooler at night", "I prefer tea to coffee",
                   "I love jazz in the evening", "I hate the lights too bright",
                   "I always sleep with the window open", "I usually get up at six",
                   "my favourite colour is green", "I'd rather have the heating low",
                   "I can't stand a cold bathroom", "I like the bedroom at 19 degrees"],
    "decision": ["we decided to sell the car", "we'll repaint the hallway next month",
                 "we are going to install a heat pump", "I will start running in the mornings",
                 "let's keep the garage locked from now on",
                 "we plan to visit grandma at christmas",
                 "from now on the kids go to bed at eight", "I've decided to cancel the gym"],
    "none": ["good morning", "nice weather today", "thanks", "ok", "what a day", "haha",
             "that's funny", "hello there", "never mind", "cool", "turn on the lights",
             "set the heating to 20", "lock the front door", "what time is it"],
}
PROBE = [("my wife works night shifts", "fact"), ("I usually go to bed at eleven", "preference"),
         ("we are going to get solar panels", "decision"), ("thanks a lot", "none"),
         ("the boiler is in the garage", "fact"), ("I hate bright lights", "preference"),
         ("we will paint the kitchen blue", "decision"), ("what a day", "none")]
PROBE_PASS = 7  # of 8


@dataclass
class Decision:
    op: str  # ADD | UPDATE | DELETE | NOOP
    kind: str
    text: str
    vector: list[float] | None = None
    target: int | None = None  # the memory an UPDATE / DELETE / NOOP is about
    sources: list[str] = field(default_factory=list)
    importance: float = 0.5
    reason: str = ""
    private: bool = False  # sensitive (a code, a password): never sent to the cloud

    def __post_init__(self) -> None:
        from ..redact import is_sensitive

        self.private = self.private or is_sensitive(self.text)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "kind": self.kind, "text": self.text, "target": self.target,
                "reason": self.reason, "private": self.private}


@dataclass
class Report:
    sessions: int = 0
    added: int = 0
    updated: int = 0
    deleted: int = 0
    noop: int = 0
    episodes: int = 0
    turns_folded: int = 0
    pruned: int = 0
    deferred: bool = False
    kind_model: dict[str, Any] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["decisions"] = self.decisions[:50]
        d["seconds"] = round(self.seconds, 3)
        return d


def clean(text: str) -> str:
    """The statement without its lead-in ("oh and remember that ...")."""
    s = _LEAD.sub("", text.strip()).strip(" ,.;:!")
    return s[:1].upper() + s[1:] if s else s


def subject(text: str) -> set[str]:
    """What a statement is about: its words minus values (numbers), cue verbs and stopwords;
    "I like the bedroom at 19 degrees" -> {bedroom, degrees}."""
    return {w for w in _WORD.findall(text.lower())
            if w not in _STOP and w not in _NUMBER_WORDS and not any(c.isdigit() for c in w)}


def normal(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def cue_kind(text: str) -> str | None:
    for kind, pattern in _CUES:
        if pattern.search(text):
            return kind
    return None


def statements(text: str) -> list[str]:
    return [s for s in (clean(p) for p in _SENTENCE.split(text)) if len(s.split()) >= 3]


def _is_question(text: str) -> bool:
    from ..agents.slots import is_question

    return text.rstrip().endswith("?") or is_question(text)


def _cos(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


class Consolidator:
    def __init__(self, memory: Memory, cfg: MemoryConfig, *, generate: Generate | None = None,
                 model: str | None = None, may_run: Callable[[], bool] = lambda: True,
                 clock: Callable[[], float] = time.time) -> None:
        self.memory = memory
        self.cfg = cfg
        self._generate = generate
        self.model = model
        self.may_run = may_run
        self.clock = clock
        self._centroids: dict[str, list[float]] | None = None
        self.kind_model: dict[str, Any] = {}  # the probe's outcome: model, score, used

    # -- the scheduled job -------------------------------------------------------------------

    async def run(self, *, on_session: Callable[[str, int, int], Awaitable[None]] | None = None
                  ) -> Report:
        """Consolidate every session with new turns, then prune. ``on_session(session, i,
        n)`` runs after each session commits (progress reports)."""
        t0 = time.perf_counter()
        report = Report()
        store = self.memory.store
        todo = await self.memory.run(store.sessions_with_new_turns)
        for i, (session, scope, ckpt) in enumerate(todo, 1):
            if not self.may_run():
                report.deferred = True
                log.info("memory: consolidation deferred by the governor")
                break
            while True:
                turns = await self.memory.run(store.turns_after, session, ckpt, CHUNK_TURNS)
                if not turns:
                    break
                await self._session_chunk(session, scope, turns, report)
                ckpt = turns[-1].id
            report.sessions += 1
            if on_session is not None:
                await on_session(session, i, len(todo))
        if not report.deferred:
            now = self.clock()
            horizon = now - self.cfg.retention_days * 86400
            report.pruned = await self.memory.run(
                store.prune, older_than=horizon,
                below_importance=self.cfg.prune_below_importance)
            await self.memory.run(store.prune_turns, horizon)
        report.kind_model = dict(self.kind_model)
        report.seconds = time.perf_counter() - t0
        if report.sessions or report.pruned:
            log.info("memory: consolidated %d session(s): +%d ~%d -%d =%d, %d episode(s), "
                     "%d pruned in %.2f s", report.sessions, report.added, report.updated,
                     report.deleted, report.noop, report.episodes, report.pruned,
                     report.seconds)
        return report

    async def _session_chunk(self, session: str, scope: str, turns: list[Turn],
                             report: Report) -> None:
        staged: list[Decision] = []
        by_request: dict[str, list[Turn]] = {}
        for t in turns:
            by_request.setdefault(t.request_id, []).append(t)
        for request_id, pair in by_request.items():
            user = next((t for t in pair if t.role == "user"), None)
            bot = next((t for t in pair if t.role == "assistant"), None)
            if user is None:
                continue
            tools = [c.get("tool", "") for c in (bot.tools if bot else [])]
            if any(t.startswith("memory.") for t in tools):
                continue  # memory.remember / search already dealt with it
            for s in statements(user.text):
                if _is_question(s):
                    continue
                cue = cue_kind(s)
                if tools and cue is None:
                    continue  # a command that a tool carried out, not a statement
                await self.decide(scope, s, cue, [request_id], staged)
        # episodes: consolidated turns past the short-term window and older than the limit
        now = self.clock()
        old = await self.memory.run(
            self.memory.store.old_turns, session, before_id=turns[-1].id,
            keep_last=self.cfg.max_turns, older_than=now - self.cfg.episode_after_s)
        episodes = [self._episode(g) for g in _groups(old)]
        if episodes:
            vecs = await self.memory.embed([e.text for e in episodes])
            for e, v in zip(episodes, vecs, strict=True):
                e.vector = v
        applied = await self.memory.run(
            self.memory.store.apply, session=session, scope=scope, turn_id=turns[-1].id,
            decisions=staged + episodes, fold=[t.id for t in old])
        if not applied:
            return  # the scope was forgotten meanwhile: nothing of it comes back
        field_of = {"ADD": "added", "UPDATE": "updated", "DELETE": "deleted", "NOOP": "noop"}
        for d in staged:
            setattr(report, field_of[d.op], getattr(report, field_of[d.op]) + 1)
            report.decisions.append(d.to_dict())
        report.episodes += len(episodes)
        report.turns_folded += len(old)

    # -- deciding ------------------------------------------------------------------------------

    async def decide(self, scope: str, text: str, kind: str | None, sources: list[str],
                     staged: list[Decision]) -> Decision | None:
        """Decide what one statement does to the scope's memories; the decision is appended
        to (or merged into) ``staged``. None: not worth remembering."""
        [vec] = await self.memory.embed([text])
        retract = bool(_RETRACT.search(text))
        if kind is None and not retract:
            kind = await self._classify(text, vec)
            if kind == "none":
                return None
        kind = kind or "fact"
        importance = min(1.0, DEFAULT_IMPORTANCE.get(kind, 0.5) +
                         (0.15 if _IMPORTANT.search(text) else 0.0))
        subj = subject(text)
        # candidates: what this run already decided, then what the store holds
        pending = [(d, _cos(vec, d.vector)) for d in staged
                   if d.op in ("ADD", "UPDATE") and d.vector is not None]
        existing = await self.memory.run(self.memory.store.search, vec, scope, k=5,
                                         kinds=LONG_TERM_KINDS)
        if retract:
            for d, sim in pending:
                if sim >= RETRACT_MIN_SIMILARITY and overlap(subj, subject(d.text)) >= 0.5:
                    staged.remove(d)
                    if d.op == "UPDATE":  # the stored memory it updated goes too
                        staged.append(Decision("DELETE", d.kind, d.text, target=d.target,
                                               sources=sources, reason="retracted"))
                    return d
            for m in existing:
                if (m.similarity or 0) >= RETRACT_MIN_SIMILARITY and \
                        overlap(subj, subject(m.text)) >= 0.5:
                    dec = Decision("DELETE", m.kind, m.text, target=m.id, sources=sources,
                                   reason=f"retracted ({m.similarity:.2f})")
                    staged.append(dec)
                    return dec
            return None  # nothing to retract
        for d, sim in pending:
            verdict = _compare(text, subj, d.text, sim)
            if verdict == "same":
                d.sources = list(dict.fromkeys(d.sources + sources))
                return d
            if verdict == "update":
                d.text, d.vector, d.kind = text, vec, kind
                d.__post_init__()
                d.importance = max(d.importance, importance)
                d.sources = list(dict.fromkeys(d.sources + sources))
                d.reason += "; changed again"
                return d
        for m in existing:
            verdict = _compare(text, subj, m.text, m.similarity or 0.0)
            if verdict == "same":
                dec = Decision("NOOP", m.kind, m.text, target=m.id, sources=sources,
                               importance=max(m.importance, importance),
                               reason=f"already known ({m.similarity:.2f})")
            elif verdict == "update":
                dec = Decision("UPDATE", kind, text, vector=vec, target=m.id, sources=sources,
                               importance=max(m.importance, importance),
                               reason=f"replaces {m.text!r} ({m.similarity:.2f})")
            else:
                continue
            staged.append(dec)
            return dec
        dec = Decision("ADD", kind, text, vector=vec, sources=sources, importance=importance,
                       reason="new")
        staged.append(dec)
        return dec

    async def absorb(self, scope: str, text: str, kind: str | None, sources: list[str]
                     ) -> Decision | None:
        """One statement now (the ``memory.remember`` tool): decide and apply at once."""
        text = clean(text)
        staged: list[Decision] = []
        dec = await self.decide(scope, text, kind or cue_kind(text) or "fact", sources, staged)
        if staged:
            await self.memory.run(self.memory.store.apply, session=None, scope=scope,
                                  turn_id=0, decisions=staged, fold=[])
        return dec

    async def _classify(self, text: str, vec: list[float]) -> str:
        if self._centroids is None:
            self._centroids = {}
            for k, examples in KIND_EXAMPLES.items():
                vs = await self.memory.embed(examples)
                c = [sum(col) / len(vs) for col in zip(*vs, strict=True)]
                self._centroids[k] = c
            await self._probe_model()
        if self.kind_model.get("used"):
            kind = await self._model_kind(text)
            if kind is not None:
                return kind
        centroids = self._centroids
        return max(centroids, key=lambda k: _cos(vec, centroids[k]))

    async def _model_kind(self, text: str) -> str | None:
        assert self._generate is not None
        few = "".join(f'Statement: {s}\nJSON: {{"kind": "{k}"}}\n\n'
                      for k, xs in KIND_EXAMPLES.items() for s in xs[:2])
        schema = {"type": "object", "properties": {"kind": {"enum": list(KIND_EXAMPLES)}},
                  "required": ["kind"], "additionalProperties": False}
        try:
            out = json.loads(await self._generate(f"{few}Statement: {text}\nJSON: ", schema))
            return str(out["kind"])
        except Exception as e:  # noqa: BLE001 - the embeddings decide instead
            log.warning("memory: the model could not classify %r: %s", text[:60], e)
            return None

    async def _probe_model(self) -> None:
        """Trust the generative model with kinds only if it sorts the probe set right."""
        if self._generate is None:
            self.kind_model = {"model": None, "used": False, "why": "no model configured"}
            return
        right = 0
        self.kind_model = {"model": self.model, "used": True}
        for text, want in PROBE:
            right += (await self._model_kind(text)) == want
        used = right >= PROBE_PASS
        self.kind_model = {"model": self.model, "score": f"{right}/{len(PROBE)}", "used": used}
        log.info("memory: model %s sorted %d/%d probe statements: %s", self.model, right,
                 len(PROBE), "it classifies statements" if used
                 else "the embedding classifier does instead")

    def _episode(self, turns: list[Turn]) -> Decision:
        first, last = turns[0], turns[-1]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(first.ts))
        until = time.strftime("%H:%M", time.localtime(last.ts))
        parts: list[str] = []
        bots = {t.request_id: t for t in turns if t.role == "assistant"}
        for t in turns:
            if t.role != "user":
                continue
            tools = [c.get("tool", "") for c in bots[t.request_id].tools] \
                if t.request_id in bots else []
            parts.append(t.text.strip().rstrip(".") + (f" ({', '.join(tools)})" if tools else ""))
        text = f"{when}-{until} on {first.scope}: " + "; ".join(parts)
        if len(text) > EPISODE_MAX_CHARS:
            text = text[:EPISODE_MAX_CHARS - 1].rstrip() + "…"
        return Decision("ADD", "episode", text, sources=sorted(bots)[:50],
                        importance=DEFAULT_IMPORTANCE["episode"], reason="episode")


def _compare(text: str, subj: set[str], other: str, similarity: float) -> str | None:
    if normal(text) == normal(other):
        return "same"
    if similarity >= UPDATE_MIN_SIMILARITY and overlap(subj, subject(other)) >= \
            SUBJECT_MIN_OVERLAP:
        return "update"
    return None


def _groups(turns: list[Turn]) -> list[list[Turn]]:
    """Consecutive turns with no gap over an hour form one episode."""
    out: list[list[Turn]] = []
    for t in turns:
        if out and t.ts - out[-1][-1].ts <= EPISODE_GAP_S and len(out[-1]) < 40:
            out[-1].append(t)
        else:
            out.append([t])
    return [g for g in out if any(t.role == "user" for t in g)]


__all__ = ["Consolidator", "Decision", "MemoryRow", "Report", "clean", "cue_kind", "subject"]
