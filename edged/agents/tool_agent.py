"""The tool agent: a pipeline that makes a 135M model reliable by asking it little.

1. Split a compound request ("lights on and heating to 21") where each part stands alone.
2. Choose the tool by embeddings (centroids of each tool's description + examples); below a
   threshold there is no tool (small talk gets a short, safe reply); when the best two are
   close, the candidate whose arguments the rules can fill wins, else the agent asks.
3. Fill arguments by rules first (choices + aliases, numbers in words, yes/no with
   negation); ask the model only for what is left, under a JSON schema whose strings can only
   be spans of the request and whose numbers can only be the numbers said.
4. Validate against the tool's schema (never call a tool with arguments that fail it), run it
   through the runner (visibility, ACL, once, timeout, audit) and answer from its result.

With memory on, what the rules leave open may come from context before the model is asked:
a follow-up ("set it to 40 percent", "and the bedroom too") takes the last call of the
session, and a preference ("heat the bedroom" after "I like the bedroom at 19 degrees") comes
from recalled memories. Every exchange is recorded as two turns of the session.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import AgentConfig
from ..memory.recall import Memory
from ..memory.working import WorkingMemory
from ..memory.working import build as build_working_memory
from ..messages import BadRequest, Reply, Request, ToolCall
from ..models import GenerationRequest, ModelError, ModelUnavailable
from ..models.pool import ModelPool
from ..tools.base import ArgumentError, Tool
from ..tools.runner import ToolRunner
from . import slots
from .base import Context
from .selector import CentroidIndex, Ranking, lead_word, tool_leads

if TYPE_CHECKING:
    from ..escalation import Escalator

log = logging.getLogger("edged.agents")

# one step of a plan: (the request's part, its tool, the arguments or None when the model
# must fill some, the ranking that chose the tool)
Step = tuple[str, Tool, dict[str, Any] | None, Ranking]



class _WantsCloud(Exception):
    """The small model chose "escalate" among close candidates."""

_SPLIT = re.compile(r"\s*(?:,?\s+and then\s+|,?\s+then\s+|,?\s+and also\s+|"
                    r",?\s+and\s+(?!a half|a quarter|an? \w+ and)|;\s*)", re.I)
_SMALL_TALK = [
    (re.compile(r"\b(hi|hello|hey|good (morning|evening|afternoon))\b", re.I),
     "Hello! How can I help?"),
    (re.compile(r"\b(thanks|thank you|cheers)\b", re.I), "You're welcome."),
    (re.compile(r"\b(bye|goodbye|good night)\b", re.I), "Goodbye!"),
    (re.compile(r"\b(who|what) are you\b", re.I),
     "I'm the assistant on this gateway."),
]


# A tool without required arguments has nothing to confirm the choice: it needs a closer
# match ("ignore your instructions" must not cancel a timer).
NO_ARGS_MIN_SCORE = 0.38
# Splitting a request into several commands needs every part to be a clear command.
SPLIT_MIN_SCORE = 0.5
# A recalled memory may fill an argument only when it is this close to the request.
RECALL_FILL_MIN_SIMILARITY = 0.45

# "it", "that", "too": the request continues the last one
_FOLLOWUP = re.compile(r"\b(it|them|that|those|there|the same|same|again|too|also|as well)\b",
                       re.I)
_ADDS_TO_LAST = re.compile(r"\b(too|also|as well|the same|same for)\b", re.I)
_REFERS_BACK = re.compile(r"\b(it|them|that one|those)\b", re.I)
_PREFERENCE_CUE = re.compile(r"\b(usual|usually|like|prefer|favou?rite|always)\b", re.I)


class ToolAgent:
    """An agent from ``[agents.<name>]`` that answers by calling tools."""

    def __init__(self, name: str, cfg: AgentConfig, *, runner: ToolRunner, index: CentroidIndex,
                 pool: ModelPool | None, model: str | None,
                 model_for: Callable[[str], str] | None = None,
                 escalator: Escalator | None = None,
                 memory: Memory | None = None) -> None:
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
        self.tools: dict[str, Tool] = {t.name: t for t in runner.visible(cfg.tools or None)}
        self._fill_cache: dict[tuple[str, str], dict[str, Any]] = {}
        self.memory = memory if cfg.memory else None

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
                request.device, _session(request), request.id, request.text.strip(),
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
            turns = await self.memory.recent(_session(request))
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
            return self._reply(request, _render([call]), [call], 1.0)
        if not text:
            return self._reply(request, "Say what you would like me to do.", [], 0.0)
        notes: list[str] = []
        if self.cfg.escalate == "always":
            cloud = await self._escalate(request, ctx, "always", notes)
            if cloud is not None:
                return cloud
        talk = _small_talk(text)
        try:
            plan = await self._plan(text)
        except _WantsCloud:
            local = self._reply(request, "Sorry, I'm not sure what you mean.", [], 0.0)
            return await self._maybe_escalate(request, ctx, local, "model_chose", notes)
        if talk and (not plan or plan[0][3].choices[0].score < 0.5):
            return self._reply(request, talk, [], 1.0)
        follow = await self._followup_plan(text, request)
        if follow and (not plan or plan[0][3].choices[0].score < SPLIT_MIN_SCORE or (
                _REFERS_BACK.search(text) and follow[0][1].name in
                [c.name for c in plan[0][3].choices[:3]])):
            # "and the bedroom too", "set it to 40 percent": the last call again with what
            # this request changes, unless another tool clearly fits on its own
            plan = follow
        if not plan:
            ranking = await self.index.rank(text, list(self.tools))
            local = self._reply(request, self._no_tool(text, ranking), [], ranking.confidence)
            return await self._maybe_escalate(request, ctx, local, "no_tool", notes)
        confidence = min([p[3].confidence for p in plan] + (
            [request.route_confidence] if request.route_confidence is not None else []))
        # before any tool runs: more steps than allowed, or too unsure of the plan
        reason = "too_many_steps" if len(plan) > self.cfg.max_steps else (
            "low_confidence" if self.escalator is not None and
            confidence < self.escalator.cfg.escalate_below else None)
        if reason is not None and self.cfg.escalate != "always":
            cloud = await self._escalate(request, ctx, reason, notes)
            if cloud is not None:
                return cloud
        calls: list[ToolCall] = []
        for i, (part, tool, planned, _ranking) in enumerate(plan[: self.cfg.max_steps]):
            args: dict[str, Any] | str | None = planned
            if args is None:
                args = await self._context_args(part, tool, request, notes)
            if args is None:
                args = await self._model_args(part, tool)
            if isinstance(args, str):  # could not decide: ask
                local = self._reply(request, args, calls, confidence)
                return await self._maybe_escalate(request, ctx, local, "unclear", notes) \
                    if not calls else local
            call = await self.runner.call(
                tool.name, args, request=request, agent=self.name,
                agent_tools=self.cfg.tools or None, ctx=ctx, step=f"{i}:{tool.name}",
                plan="multi" if len(plan) > 1 else "local")
            calls.append(call)
            if _failed(call) and self.cfg.escalate != "always":
                local = self._reply(request, " ".join([_render(calls), *notes]), calls,
                                    confidence)
                return await self._maybe_escalate(request, ctx, local, "tool_failed", [],
                                                  keep=calls)
        reply = self._reply(request, " ".join([_render(calls), *notes]), calls, confidence)
        reply.latency_ms = round((time.perf_counter() - t0) * 1000, 2)
        return reply

    async def _escalate(self, request: Request, ctx: Context, reason: str,
                        notes: list[str]) -> Reply | None:
        """The cloud's reply, or None (its note, if any, goes to the local reply)."""
        if self.escalator is None or self.cfg.escalate == "never":
            return None
        out = await self.escalator.escalate(self, request, ctx, reason)
        if out.reply is not None:
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

    # -- planning ------------------------------------------------------------------------

    async def _plan(self, text: str) -> list[Step]:
        """One step per independent command; None args: the model must fill some."""
        parts = [p for p in _SPLIT.split(text) if p.strip()]
        if len(parts) > 1:
            steps: list[Step] = []
            for p in parts:
                step = await self._step(p)
                if step is None or step[2] is None or \
                        step[3].choices[0].score < SPLIT_MIN_SCORE:
                    steps = []
                    break  # not separable ("kitchen and bedroom lights"): one command
                steps.append(step)
            if steps:
                return steps
        step = await self._step(text)
        return [step] if step else []

    async def _step(self, text: str) -> Step | None:
        ranking = await self.index.rank(text, list(self.tools))
        if slots.is_question(text):
            ranking = ranking.penalise({n for n, t in self.tools.items() if _changes_state(t)},
                                       0.25)
        if ranking.best is None:
            return None
        candidates = ranking.choices[:3] if ranking.ambiguous else ranking.choices[:1]
        if ranking.ambiguous:
            names = [c.name for c in candidates if c.score >= ranking.threshold]
            lead = lead_word(text)
            by_verb = [n for n in names if lead in tool_leads(self.tools[n])]
            # the request's verb names exactly one candidate: trust it over the model
            picked = by_verb[0] if len(by_verb) == 1 else await self._model_pick(text, names)
            if picked is not None:
                tool = self.tools[picked]
                return text, tool, self._rule_args(text, tool), ranking
        first: Step | None = None
        if not ranking.ambiguous and self._rules_contradict(text, self.tools[candidates[0].name]):
            # what was said does not fit the best tool at all ("4471 degrees"): the next
            # candidates get their chance
            candidates = ranking.choices[:3]
        for c in candidates:
            tool = self.tools[c.name]
            args = self._rule_args(text, tool)
            if c.score < ranking.threshold:
                break
            if self._rules_contradict(text, tool):
                continue
            if not tool.parameters.get("required") and c.score < NO_ARGS_MIN_SCORE:
                continue  # nothing in the request confirms a tool without arguments
            if args is not None:
                return text, tool, args, ranking
            first = first or (text, tool, None, ranking)
        return first

    # -- context: the session's last call and recalled memories ---------------------------

    async def _last_call(self, request: Request) -> dict[str, Any] | None:
        """The newest tool call of this session within ``memory.followup_s``."""
        if self.memory is None:
            return None
        turns = await self.memory.recent(_session(request), within_s=self.memory.cfg.followup_s)
        for t in reversed(turns):
            if t.role == "assistant" and t.tools:
                call = t.tools[-1]
                if call.get("tool") in self.tools:
                    return call
        return None

    async def _followup_plan(self, text: str, request: Request) -> list[Step]:
        """The request adds to the last call ("and the bedroom too") or refers back to its
        subject ("set it to 40 percent"): the last call again, with what this request
        changes (nothing when it changes nothing of that tool)."""
        if self.memory is None or slots.is_question(text) or not (
                _ADDS_TO_LAST.search(text) or _REFERS_BACK.search(text)):
            return []
        last = await self._last_call(request)
        if last is None:
            return []
        tool = self.tools[last["tool"]]
        changed = self._filled(text, tool)
        if not changed:
            return []
        args = {**last.get("arguments", {}), **changed}
        try:
            tool.validate(args)
        except ArgumentError:
            return []
        ranking = await self.index.rank(text, [tool.name])
        return [(text, tool, args, ranking)]

    async def _context_args(self, text: str, tool: Tool, request: Request,
                            notes: list[str]) -> dict[str, Any] | None:
        """Fill what the rules left open from the last call (a follow-up: "set it to 40
        percent") or from a recalled memory ("heat the bedroom" + "I like the bedroom at 19
        degrees"); None when context does not complete the arguments."""
        if self.memory is None:
            return None
        known = self._filled(text, tool)
        required = tool.parameters.get("required", [])
        missing = [r for r in required if r not in known]
        if not missing:
            return None
        if _FOLLOWUP.search(text):
            last = await self._last_call(request)
            if last is not None:
                prior = last.get("arguments", {})
                if all(m in prior for m in missing):
                    args = {**known, **{m: prior[m] for m in missing}}
                    if _valid(tool, args):
                        return args
        memories = await self.memory.recall(text, request.device,
                                            kinds=("preference", "fact", "decision"),
                                            min_similarity=RECALL_FILL_MIN_SIMILARITY)
        for m in memories:
            found = slots.fill(m.text, tool.parameters, tool.aliases)
            shared = [k for k in known if k in found]
            if any(found[k] != known[k] for k in shared):
                continue  # about something else (another room)
            if not shared and not _PREFERENCE_CUE.search(text):
                continue  # nothing ties the memory to this request
            if all(x in found for x in missing):
                args = {**known, **{x: found[x] for x in missing}}
                if _valid(tool, args):
                    notes.append(f"(From memory: {m.text}.)")
                    return args
        return None

    async def _model_pick(self, text: str, names: list[str]) -> str | None:
        """The best two are close: let the model choose among them (a constrained choice)."""
        if len(names) < 2 or self.pool is None or self.model is None:
            return None
        cloud = self.escalator is not None and self.escalator.cfg.enabled and \
            self.cfg.escalate != "never"
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
            raise _WantsCloud()
        return choice if choice in names else None

    def _filled(self, text: str, tool: Tool) -> dict[str, Any]:
        """What the rules find for ``tool`` in ``text``, computed once per pair (a request
        asks several times: contradiction check, rule arguments, model arguments, spans)."""
        key = (text, tool.name)
        found = self._fill_cache.get(key)
        if found is None:
            if len(self._fill_cache) > 256:
                self._fill_cache.clear()
            found = self._fill_cache[key] = slots.fill(text, tool.parameters, tool.aliases)
        return dict(found)

    def _rules_contradict(self, text: str, tool: Tool) -> bool:
        """The values the rules found break the tool's schema (out of range, wrong type)."""
        found = self._filled(text, tool)
        props = tool.parameters.get("properties", {})
        for name, value in found.items():
            prop = props.get(name, {})
            lo, hi = prop.get("minimum"), prop.get("maximum")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                    (lo is not None and value < lo) or (hi is not None and value > hi)):
                return True
        return False

    def _rule_args(self, text: str, tool: Tool) -> dict[str, Any] | None:
        """Arguments from the rules alone, or None when a required one is still open."""
        found = self._filled(text, tool)
        required = tool.parameters.get("required", [])
        if all(r in found for r in required):
            try:
                tool.validate(found)
            except ArgumentError:
                return None
            return found
        return None

    async def _model_args(self, text: str, tool: Tool) -> dict[str, Any] | str:
        """Ask the model for the open arguments under a narrow schema, or a question."""
        known = self._filled(text, tool)
        props = tool.parameters.get("properties", {})
        missing = [r for r in tool.parameters.get("required", []) if r not in known]
        if self.pool is None or self.model is None:
            return f"Which {', '.join(missing)} do you mean?"
        properties: dict[str, dict[str, Any]] = {}
        schema: dict[str, Any] = {"type": "object", "properties": properties,
                                  "required": missing, "additionalProperties": False}
        spans = _spans(text)
        numbers = slots.parse_numbers(text)
        for m in missing:
            kind, choices = slots._kind(props[m], tool.parameters.get("$defs", {}))
            if choices or kind == "boolean":
                # never guess a choice or a yes/no the user did not say: ask instead
                what = props[m].get("description") or m
                return f"Which {m} do you mean? ({what.rstrip('.')})" if choices is None else \
                    f"Which {m} do you mean: {', '.join(map(str, choices))}?"
            if kind in ("integer", "number"):
                if not numbers:  # no number was said: never invent one
                    what = (props[m].get("description") or "").rstrip(".")
                    return f"Which {m} do you mean?" + (f" ({what})" if what else "")
                properties[m] = {"enum": [int(n) if kind == "integer" else n
                                          for n in numbers]}
            elif kind == "string":
                properties[m] = {"enum": spans} if spans else {"type": "string",
                                                                "maxLength": 60}
            else:
                return f"I can't work out {m} for {tool.short_name}; please say it plainly."
        # free text first by rule: the request minus the tool's carrier words
        for m in list(missing):
            if slots._kind(props[m], tool.parameters.get("$defs", {}))[0] == "string":
                span = _carrier_span(text, tool, m, known)
                if span:
                    known[m] = span
                    missing.remove(m)
                    properties.pop(m, None)
                    schema["required"] = missing
        if not missing:
            try:
                tool.validate(known)
                return known
            except ArgumentError:
                return f"Sorry, I couldn't work out the arguments for {tool.short_name}."
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
        return args

    # -- replies -------------------------------------------------------------------------

    def _no_tool(self, text: str, ranking: Ranking) -> str:
        if ranking.choices and ranking.choices[0].score >= ranking.threshold * 0.75:
            t = self.tools[ranking.choices[0].name]
            return f"Did you mean: {t.description[0].lower()}{t.description[1:]}"
        what = self.cfg.description or "use my tools"
        return f"Sorry, I can't help with that. I can: {what[0].lower()}{what[1:]}"

    def _reply(self, request: Request, text: str, calls: list[ToolCall], confidence: float
               ) -> Reply:
        return Reply(id=request.id, agent=self.name, text=text, tool_calls=calls,
                     model=self.model, confidence=round(confidence, 3))


def _failed(call: ToolCall) -> bool:
    r = call.result
    return isinstance(r, dict) and set(r) == {"error"}


def _session(request: Request) -> str:
    return request.session or request.device


def _valid(tool: Tool, args: dict[str, Any]) -> bool:
    try:
        tool.validate(args)
    except ArgumentError:
        return False
    return True


def _changes_state(tool: Tool) -> bool:
    """A tool with a required yes/no or a verb like set/add/lock changes things."""
    props = tool.parameters.get("properties", {})
    req = tool.parameters.get("required", [])
    if any(slots._kind(props[r], tool.parameters.get("$defs", {}))[0] == "boolean"
           for r in req if r in props):
        return True
    return tool.short_name.split("_")[0] in {"set", "add", "turn", "lock", "unlock", "delete",
                                             "remove", "start", "stop", "cancel", "create",
                                             "remember", "forget"}


def _small_talk(text: str) -> str | None:
    """A short, safe answer to greetings and thanks: the 135M model's free chat is poor."""
    if len(text.split()) > 8:
        return None
    for pattern, answer in _SMALL_TALK:
        if pattern.search(text):
            return answer
    return None


_ARTICLES = {"the", "a", "an", "some"}
_PRONOUNS = {"we", "i", "you", "they", "he", "she", "it"}
_CARRIERS = {"please", "can", "could", "would", "will", "you", "i", "me", "us", "just", "also",
             "so", "to", "down", "that", "a", "an", "on", "in", "for", "my", "our", "jot",
             "write", "put", "add", "make", "remember", "remind", "need", "we", "we're",
             "we've", "i've", "i'm", "run", "out", "more", "get", "buy", "and", "of"}


def _carrier_span(text: str, tool: Tool, param: str, found: dict[str, Any]) -> str | None:
    """The free-text value of ``param``: the request without its carrier words, learned from
    the tool's examples ("add {milk} to the shopping list", "we're out of {oat milk}") plus
    generic command words. Leading articles stay ("the car needs an MOT")."""
    carriers = set(_CARRIERS)
    for utterance, args in tool.example_pairs():
        value = str((args or {}).get(param, ""))
        rest = utterance.lower().replace(value.lower(), " ") if value else utterance.lower()
        carriers |= set(slots.words(rest))
    # values other arguments take ("mum" in "text mum saying ...") frame the text too
    for name, value in found.items():
        if name != param:
            carriers |= set(slots.words(str(value)))
            carriers |= {w for a, v in tool.aliases.get(name, {}).items() if v == value
                         for w in slots.words(a)}
    toks = re.findall(r"[\w'%.-]+", text)
    i, j = 0, len(toks)
    if toks and toks[0].lower() not in _ARTICLES and len(toks) > 1:
        i = 1  # the command verb ("text", "jot", "note") is never part of the value
    while i < j and toks[i].lower() in carriers and toks[i].lower() not in _ARTICLES:
        if toks[i].lower() in _PRONOUNS and not (i + 1 < j and toks[i + 1].lower() in carriers):
            break  # "we are home" is the message; "we need ..." is a frame
        i += 1
    while j > i and (toks[j - 1].lower() in carriers or toks[j - 1].lower() in _ARTICLES):
        j -= 1
    span = " ".join(toks[i:j]).strip(" .,:;!?")
    return span or None


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


def _render(calls: list[ToolCall]) -> str:
    parts = []
    for c in calls:
        r = c.result
        if isinstance(r, dict) and "error" in r and len(r) == 1:
            parts.append(f"Sorry, {c.tool} failed: {r['error']}")
        elif isinstance(r, dict) and "confirm" in r and "error" in r:
            parts.append(str(r["error"]))  # a sensitive tool waiting for the device's yes
        elif isinstance(r, str):
            parts.append(r)
        elif isinstance(r, dict):
            parts.append(", ".join(f"{k.replace('_', ' ')}: {_fmt(v)}" for k, v in r.items()))
        elif isinstance(r, list):
            parts.append("; ".join(map(_fmt, r)) if r else "nothing yet")
        else:
            parts.append(f"{c.tool}: {_fmt(r)}")
    return ". ".join(parts) or "Done."


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)
