"""What the rules need to know about a tool, read from the tool itself: its parameters'
types, ranges, units and descriptions. Nothing here is tuned on requests.

- A yes/no parameter gets the verbs that mean True and False from its description ("True to
  start, False to stop": start/fire up/switch on... vs stop/kill/shut down...) or its name
  (``open``, ``armed``, ``enabled``, ``locked``).
- A ranged number gets words for its ends ("0 is fully closed, 100 is fully open": close,
  shut, lower -> 0; open, raise -> 100) and takes fractions of its range ("halfway", "a
  quarter", "three quarters").
- A number gets its unit (``grams``, ``hold_minutes``, "in celsius"): what is said in
  another unit is converted (see ``units``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..tools.base import Tool
from . import codes, timeofday, units

# Groups of verbs and states that mean True / False for one kind of yes/no. A parameter's
# description (or name) picks its group; the group gives it the words people use.
POLARITY: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "power": (frozenset({"on", "start", "starts", "started", "run", "running", "fire up",
                         "power up", "power on", "switch on", "turn on", "spin up", "boot",
                         "boot up", "get going", "kick on", "activate", "resume", "go"}),
              frozenset({"off", "stop", "stops", "stopped", "kill", "shut down", "shut off",
                         "switch off", "turn off", "power down", "power off", "halt", "cut",
                         "deactivate", "pause", "not running", "end", "ends", "ended",
                         "no more", "no longer"})),
    "open": (frozenset({"open", "opens", "opened", "raise", "lift", "let in", "prop open",
                        "hold open", "unlatch", "up", "extend", "deploy", "unroll"}),
             frozenset({"close", "closes", "closed", "shut", "lower", "close up", "down",
                        "retract", "stow"})),
    "lock": (frozenset({"lock", "locks", "locked", "secure", "bolt", "bolted"}),
             frozenset({"unlock", "unlocks", "unlocked", "release", "unbolt"})),
    "arm": (frozenset({"arm", "arms", "armed", "set the alarm", "activate"}),
            frozenset({"disarm", "disarms", "disarmed", "unset", "deactivate", "turn off",
                       "switch off"})),
    "enable": (frozenset({"enable", "enables", "enabled", "on", "turn on", "switch on",
                          "light", "lights", "lit", "light up", "illuminate", "activate",
                          "allow"}),
               frozenset({"disable", "disables", "disabled", "off", "turn off", "switch off",
                          "kill", "deactivate", "block", "unlit", "dark", "darken",
                          "black out"})),
    "mute": (frozenset({"mute", "muted", "silence", "silent", "quiet", "hush"}),
             frozenset({"unmute", "unmuted"})),
    "damaged": (frozenset({"damaged", "damage", "ripped", "torn", "broken", "cracked",
                           "scratched", "stained", "soaked", "dented", "smashed", "chipped",
                           "falling apart", "coffee stain", "water damage"}),
                frozenset({"undamaged", "perfect condition", "good condition", "intact",
                           "no damage", "fine condition", "mint condition", "good as new"})),
    "available": (frozenset({"available", "back on", "back in", "in stock", "on the menu",
                             "back on the menu", "on again", "restocked", "we have",
                             "we've got"}),
                  frozenset({"unavailable", "sold out", "out of", "off the menu", "86",
                             "eighty six", "eighty-six", "run out", "ran out", "gone",
                             "no more", "finished", "take off", "not available"})),
    "urgent": (frozenset({"urgent", "urgently", "emergency", "asap", "immediately",
                          "right away", "right now", "priority"}),
               frozenset({"non urgent", "not urgent", "no rush", "whenever", "routine"})),
}
_NAME_GROUP = {"on": "power", "running": "power", "run": "power", "power": "power",
               "active": "power", "state": "power", "open": "open", "opened": "open",
               "locked": "lock", "lock": "lock", "armed": "arm", "arm": "arm",
               "enabled": "enable", "enable": "enable", "lit": "enable", "muted": "mute",
               "mute": "mute", "urgent": "urgent", "damaged": "damaged", "damage": "damaged",
               "available": "available", "in_stock": "available", "on_menu": "available",
               "broken": "damaged"}
_CONTRAST = re.compile(r"\b(?:instead|rather|otherwise|unless|except|not|but)\b")
_TRUE_CLAUSE = re.compile(r"\btrue\b([^.,;()]*)", re.I)
_FALSE_CLAUSE = re.compile(r"\bfalse\b([^.,;()]*)", re.I)
# "0 is fully closed", "100 = open", "3 is full"
_END_DOC = re.compile(
    r"(-?\d+(?:\.\d+)?)\s*(?:%\s*)?(?:\(\s*|is\s+|=\s*|means\s+|:\s*)?"
    r"(?:fully\s+|completely\s+|all the way\s+)?"
    r"(?!to\b|and\b|or\b|percent\b|degrees?\b|the\b|of\b)"
    r"([a-z]+(?:\s+(?!and\b|or\b|is\b|to\b)[a-z]+)?)(?:\s*\(([a-z ]+)\))?", re.I)
# a number parameter named like this identifies something (room 101-320): it has no "ends"
_IDENTIFIER = re.compile(r"(^|_)(room|id|number|no|table|floor|channel|seat|slot|zone|"
                         r"unit|bay|desk|line|index)($|_)", re.I)
_TEMPERATURE = {"degC", "degF", "kelvin"}
# ("amount" alone is no price: "How much arrived" is stock)
_CURRENCY = re.compile(r"(^|\s)(price|cost|fee|fare|charge)(\s|$)|€|\$|£|\beuros?\b|"
                       r"\bdollars?\b|\bpounds sterling\b|\bcurrency\b|\bcents?\b", re.I)
# words for an end that do not say which: "all the way" goes to the end the request's verb
# points at ("close it all the way"), else to the top
MAX_WORDS = frozenset({"max", "maximum", "full", "fully", "highest", "top", "flat out",
                       "all the way up", "full blast", "full power", "full speed",
                       "all the way", "completely", "as far as it goes", "as high as"})
MIN_WORDS = frozenset({"min", "minimum", "lowest", "bottom", "all the way down",
                       "as low as"})
FRACTIONS = {"halfway": 0.5, "half way": 0.5, "half": 0.5, "a quarter": 0.25,
             "quarter": 0.25, "one quarter": 0.25, "three quarters": 0.75,
             "three quarter": 0.75, "a third": 1 / 3, "one third": 1 / 3,
             "two thirds": 2 / 3}


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # integer | number | boolean | string | enum | ...
    description: str = ""
    required: bool = False
    choices: tuple[Any, ...] | None = None
    lo: float | None = None
    hi: float | None = None
    unit: str | None = None  # a pint unit, for numbers
    true_words: frozenset[str] = frozenset()  # booleans
    false_words: frozenset[str] = frozenset()
    lo_words: frozenset[str] = frozenset()  # ranged numbers: words meaning the low end
    hi_words: frozenset[str] = frozenset()
    time_of_day: bool = False  # a string that holds a time ("HH:MM")
    day_first: bool = False  # ... after a day ("Tuesday 09:30")
    padded: bool = True  # "09:30", or "9:30" as its description writes it
    currency: bool = False  # a price: "two ninety nine" is 2.99, "50 cents" 0.5
    signed: bool = False  # may be negative: "sold three" is -3
    clears: bool = False  # a string whose empty value clears something ("clear the sign")
    code: bool = False  # a string that holds an identifier ("account number", "order ID")
    when: bool = False  # a string that holds when, in the user's words ("Thursday morning")

    @property
    def ranged(self) -> bool:
        return self.lo is not None and self.hi is not None and self.hi > self.lo

    @property
    def percent_like(self) -> bool:
        return self.unit == "percent" or (self.ranged and self.hi == 100 and self.lo in (0, 1))


@dataclass(frozen=True)
class ToolKnowledge:
    name: str
    params: dict[str, Param] = field(default_factory=dict)
    # the words naming what the tool acts on ("light" in set_light): as a yes/no verb they
    # count only where a command's verb stands ("light the anchor light")
    nouns: frozenset[str] = frozenset()


def of(tool: Tool) -> ToolKnowledge:
    """The knowledge of ``tool``, computed once per tool object."""
    cached = getattr(tool, "_knowledge", None)
    if isinstance(cached, ToolKnowledge):
        return cached
    nouns = {w for w in re.split(r"[._]", tool.name.lower()) if w}
    nouns |= {w + "s" for w in nouns}
    k = ToolKnowledge(tool.name, {n: _param(n, p, tool) for n, p in
                                  tool.parameters.get("properties", {}).items()},
                      nouns=frozenset(nouns))
    setattr(tool, "_knowledge", k)  # noqa: B010 - a cache on the tool object, not a field
    return k


def _param(name: str, prop: dict[str, Any], tool: Tool) -> Param:
    from .slots import _kind

    defs = tool.parameters.get("$defs", {})
    kind, choices = _kind(prop, defs)
    doc = str(prop.get("description") or tool.param_docs.get(name) or "")
    required = name in tool.parameters.get("required", [])
    if kind == "boolean":
        yes, no = _polarity(name, doc)
        return Param(name, kind, doc, required, true_words=yes, false_words=no)
    if kind in ("integer", "number"):
        lo = _bound(prop, "minimum", "exclusiveMinimum")
        hi = _bound(prop, "maximum", "exclusiveMaximum")
        unit = units.param_unit(name, doc)
        if unit is None and re.search(r"\bpercent|%", f"{name} {doc}", re.I):
            unit = "percent"
        # "Discount in percent (half price = 50)" is a share, not a price
        currency = unit != "percent" and bool(_CURRENCY.search(f"{name.replace('_', ' ')} {doc}"))
        # a price is no level: "off" or "all the way" never says one
        level = lo is not None and hi is not None and not _IDENTIFIER.search(name) and \
            not currency
        lo_w, hi_w = _ends(doc, lo, hi, unit) if level else (frozenset(), frozenset())
        signed = (lo is not None and lo < 0) or bool(
            re.search(r"\bnegative\b|\bsigned\b|(?<!\w)[+-]n\b", doc, re.I))
        return Param(name, kind, doc, required, lo=lo, hi=hi, unit=None if currency else unit,
                     lo_words=lo_w, hi_words=hi_w, currency=currency, signed=signed)
    is_time, day_first = timeofday.wants_time(prop, doc) if kind == "string" else (False, False)
    clears = kind == "string" and bool(re.search(r"\bempty\b|\"\"|''", doc, re.I)) and bool(
        re.search(r"\b(clear|clears|remove|removes|blank|blanks|nothing|off)\b", doc, re.I))
    return Param(name, kind, doc, required, choices=tuple(choices) if choices else None,
                 time_of_day=is_time, day_first=day_first, clears=clears,
                 code=not is_time and codes.is_code(name, doc, kind, choices),
                 when=kind == "string" and not is_time and not choices and
                 timeofday.wants_phrase(name, doc),
                 padded=timeofday.padded(prop, doc))


def _bound(prop: dict[str, Any], inclusive: str, exclusive: str) -> float | None:
    for p in [prop, *prop.get("anyOf", [])]:
        if inclusive in p:
            return float(p[inclusive])
        if exclusive in p:
            return float(p[exclusive])
    return None


def group_of(word: str) -> tuple[str, bool] | None:
    """(group, meaning) of a verb or state word: "stops" -> ("power", False)."""
    w = word.lower()
    for g, (yes, no) in POLARITY.items():
        if w in yes:
            return g, True
        if w in no:
            return g, False
    return None


def _polarity(name: str, doc: str) -> tuple[frozenset[str], frozenset[str]]:
    """The words that mean True / False for a yes/no parameter."""
    found: list[tuple[str, bool]] = []
    for rx, meaning in ((_TRUE_CLAUSE, True), (_FALSE_CLAUSE, False)):
        for m in rx.finditer(doc):
            # every word of the clause that belongs to a group: "True switches the anchor
            # light on" -> light (enable), on (power); "False to stop": power, True = start;
            # not what it is contrasted with ("... instead of on the next round")
            clause = _CONTRAST.split(m.group(1).lower())[0]
            toks = re.findall(r"[a-z]+", clause)
            for w in toks + [f"{a} {b}" for a, b in zip(toks, toks[1:], strict=False)]:
                hit = group_of(w)
                if hit is not None and (hit[0], hit[1] == meaning) not in found:
                    found.append((hit[0], hit[1] == meaning))
    g = _NAME_GROUP.get(name.lower()) or _NAME_GROUP.get(name.lower().split("_")[-1])
    if g is not None and (g, True) not in found:
        found.append((g, True))
    if ("open", True) in found and ("power", True) not in found:
        found.append(("power", True))  # a valve or a tap is turned on to open it
    nm = name.lower().replace("_", " ")
    yes_w = {nm, f"with {nm}", f"with a {nm}", "yes"}
    # "True when the book came back damaged (torn, stained, wet, missing pages)": the
    # bracketed examples say True too
    for m in re.finditer(r"(?i)\btrue\b[^.;()]*\(([^)]{3,120})\)", doc):
        yes_w |= {w.strip().lower() for w in re.split(r",|\bor\b|/", m.group(1))
                  if 2 < len(w.strip()) <= 24 and not re.search(r"\d|\be\.?g\b", w)}
    if len(parts := nm.split()) == 2:  # "to_card": "back to the card", "to their card"
        yes_w |= {f"{parts[0]} {d} {parts[1]}" for d in ("the", "their", "his", "her", "my",
                                                         "our", "your", "a")}
    no_w = {f"no {nm}", f"without {nm}", f"without a {nm}", f"not {nm}", f"non {nm}",
            f"un{nm}", "no"}
    for group, straight in found:
        yes, no = POLARITY[group]
        if not straight:
            yes, no = no, yes
        yes_w |= yes
        no_w |= no
    both = yes_w & no_w  # a word two groups read differently decides nothing
    return frozenset(yes_w - both), frozenset(no_w - both)


def _ends(doc: str, lo: float | None, hi: float | None, unit: str | None
          ) -> tuple[frozenset[str], frozenset[str]]:
    """Words for the two ends of a range, from "0 is fully closed, 100 is fully open" or
    "0 (silent) to 10 (loudest)"; an end at 0 is also "off"."""
    lo_w: set[str] = set(MIN_WORDS)
    hi_w: set[str] = set(MAX_WORDS)
    if lo is None or hi is None:
        return frozenset(), frozenset()
    for m in _END_DOC.finditer(doc):
        value = float(m.group(1))
        end = lo_w if value == lo else hi_w if value == hi else None
        if end is None:
            continue
        for phrase in filter(None, (m.group(2), m.group(3))):
            word = phrase.lower().strip()
            end.add(word)
            words = word.split()
            if len(words) > 1:
                end.add(words[-1] + "$")  # "rolled in": "bring it in", at the request's end
            hit = group_of(word) or group_of(words[0]) or group_of(words[-1])
            if hit is not None:
                yes, no = POLARITY[hit[0]]
                end |= yes if hit[1] else no
                (hi_w if end is lo_w else lo_w).update(no if hit[1] else yes)
    if lo == 0:
        lo_w |= {"off", "turn off", "switch off", "kill", "cut"}
    if not re.search(r"\bon\b", doc, re.I):
        hi_w.discard("on")  # "the promotion on cough sweets": a preposition, not a level
    if re.search(r"\b(off|discount|reduction|promotion|sale|markdown)\b", doc, re.I):
        lo_w -= {"off", "turn off", "switch off", "cut"}  # "a third off" is the amount
    if unit in _TEMPERATURE:
        lo_w |= {"coldest", "as cold as", "lowest"}
        hi_w |= {"hottest", "warmest", "as hot as", "as warm as", "highest"}
    both = lo_w & hi_w
    return frozenset(lo_w - both), frozenset(hi_w - both)


# verbs that change something, and verbs that only read (planner: a question never runs the
# first kind)
ACTION_VERBS = {"set", "add", "turn", "switch", "lock", "unlock", "open", "close", "start",
                 "stop", "cancel", "create", "delete", "remove", "book", "order", "page",
                 "send", "fire", "put", "adjust", "announce", "water", "request", "preheat",
                 "arm", "disarm", "enable", "disable", "play", "pause", "mute", "unmute",
                 "log", "write", "record", "schedule", "move", "raise", "lower", "dim",
                 "run", "clear", "reset", "restart", "reboot", "update", "change", "make",
                 "call", "notify", "message", "text", "email", "feed", "toggle", "remember",
                 "forget", "mark", "assign", "buy", "pay", "charge", "refund", "ship",
                 "print", "apply", "activate", "deactivate", "release", "hold", "fill",
                 "empty", "drain", "heat", "cool", "boost", "set_up", "tell"}
QUERY_VERBS = {"get", "gets", "read", "reads", "show", "shows", "list", "lists", "report",
                "reports", "return", "returns", "look", "looks", "tell", "tells", "check",
                "checks", "query", "fetch", "fetches", "what", "find", "search", "recall"}

# words that start a tool's name as its verb (else the name is a noun: tank_level)
VERBS = {"set", "get", "add", "turn", "switch", "lock", "unlock", "open", "close", "start",
         "stop", "cancel", "create", "delete", "remove", "book", "order", "page", "send",
         "fire", "put", "adjust", "announce", "water", "request", "preheat", "arm",
         "disarm", "enable", "disable", "play", "pause", "mute", "log", "write", "record",
         "schedule", "move", "raise", "lower", "dim", "run", "clear", "reset", "read",
         "list", "check", "show", "find", "query", "make", "call", "mark", "toggle"}
# the plain verbs of each yes/no group, for requests implied by a tool's own words
CANONICAL = {"power": ("start", "stop"), "open": ("open", "close"), "lock": ("lock", "unlock"),
             "arm": ("arm", "disarm"), "enable": ("turn on", "turn off"),
             "mute": ("mute", "unmute"), "urgent": ("", "")}


def utterances(tool: Tool, limit: int = 8) -> list[str]:
    """Requests the tool's own words imply, for the tool index when its author gave few
    examples: its verb and object ("book the appointment"), the plain verbs of its yes/no
    ("start the machine", "stop the machine"), the words for the ends of its ranges from
    its description ("open the shutter", "close the shutter"), a few of its choices.
    Derived, never tuned: the same rule for every plugin."""
    words = tool.short_name.split("_")
    if len(words) > 1 and words[0] in VERBS:
        verb, noun = words[0], " ".join(words[1:])
    else:
        verb, noun = "", " ".join(words)
    info = of(tool)
    out: list[str] = [f"{verb} the {noun}" if verb else f"what is the {noun}"]
    for p in info.params.values():
        if p.kind == "boolean":
            group = next((g for g in ("open", "lock", "arm", "enable", "mute", "power")
                          if POLARITY[g][0] <= p.true_words), None)
            if group is not None:
                out += [f"{v} the {noun}" for v in CANONICAL[group] if v]
        elif p.ranged and (p.lo_words or p.hi_words):
            for end in (p.hi_words, p.lo_words):
                for w in sorted(end):
                    hit = group_of(w.rstrip("$")) if w.rstrip("$") in \
                        p.description.lower() else None
                    if hit is not None and CANONICAL.get(hit[0], ("", ""))[0]:
                        yes, no = CANONICAL[hit[0]]
                        out.append(f"{yes if hit[1] else no} the {noun}")
                        break
        elif p.choices:
            out += [f"{verb + ' the' if verb else 'the'} {noun} {c}" for c in p.choices[:2]]
    seen: list[str] = []
    for u in out:
        if u not in seen:
            seen.append(u)
    return seen[:limit]


_ADDRESSES = re.compile(r"^(staff|colleague|recipient|who|person|member|to|target)$|"
                        r"(^|_)(staff|colleague|recipient)($|_)", re.I)


def address_leads(tool: Tool) -> set[str]:
    """Verbs that lead a request to a tool that sends someone a message (a person and a
    message to give them): "tell", "ask", "ping", "buzz" ..."""
    props = tool.parameters.get("properties", {})
    names = set(props)
    if not any(re.match(r"^(message|text|note|body|content)$", n) for n in names):
        return set()
    if not any(_ADDRESSES.search(n) for n in names):
        return set()
    return set(ADDRESS_VERBS)


# verbs that address someone ("tell Tom ...", "ping nurse kim ...")
ADDRESS_VERBS = frozenset({"tell", "ask", "let", "ping", "buzz", "call", "message", "page",
                           "text", "radio", "notify", "phone"})
