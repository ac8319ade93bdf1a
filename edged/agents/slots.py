"""Rule-based argument filling: what a 135M model gets wrong, plain code gets right.

Enum values and declared aliases (exact, then fuzzy), numbers in digits or words ("twenty
one", "two and a half", "half an hour", "halfway"), and yes/no from verbs with their
antonyms and negation ("unlock", "switch off", "don't ..."). The agent asks the model only
for what these rules leave open, under a grammar.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

_UNITS = {
    "zero": 0, "oh": 0, "one": 1, "a": 1, "an": 1, "two": 2, "three": 3, "four": 4,
    "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11,
    "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000}
_FRACTIONS = {"half": 0.5, "quarter": 0.25}
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+(?:[.,]\d+)?|%")
# quoted words: double quotes hold anything; single ones must stand apart ("we'll")
QUOTED = re.compile(r"[\"\u201c]([^\"\u201d]{2,})[\"\u201d]|"
                    r"(?:^|(?<=\s))[\u2018']((?:[^\u2019']|'(?=\w))+?)[\u2019'](?=$|[\s,.;:!?])")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def parse_numbers(text: str) -> list[float]:
    """Every number mentioned, in order: digits, number words, halves and quarters.

    "set it to twenty one" -> [21]; "two and a half hours" -> [2.5]; "half an hour" -> [0.5];
    "halfway" -> [50] (percent); "19.5 degrees" -> [19.5].
    """
    toks = words(text)
    out: list[float] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t == "halfway":
            out.append(50.0)
            i += 1
            continue
        if re.fullmatch(r"\d+(?:[.,]\d+)?", t):
            if len(t) > 15:  # no parameter takes it; float() would say inf
                i += 1
                continue
            value = float(t.replace(",", "."))
            i += 1
            value, i = _and_a_fraction(toks, i, value)
            out.append(value)
            continue
        if t == "half" and i + 1 < len(toks) and toks[i + 1] in _LEVEL_WORDS:
            out.append(50.0)  # "half brightness", "half power"
            i += 1
            continue
        if t in _FRACTIONS and (i + 1 >= len(toks) or toks[i + 1] in ("an", "a", "of")):
            out.append(_FRACTIONS[t])  # "half an hour", "quarter of an hour"
            i += 1
            continue
        if t in _UNITS or t in _TENS:
            if t in ("a", "an", "oh") and not _starts_number(toks, i + 1):
                i += 1
                continue
            value, i = _number_words(toks, i)
            value, i = _and_a_fraction(toks, i, value)
            out.append(value)
            continue
        i += 1
    return out


_LEVEL_WORDS = {"brightness", "power", "volume", "speed", "way"}
_UNIT_WORDS = {"hour", "minute", "second", "day", "week", "degree", "percent", "month",
               "fortnight", "year", "dozen", "kilo", "litre", "liter", "pound"}


def _starts_number(toks: list[str], i: int) -> bool:
    """After "a"/"an": "a hundred" is a number, and so is "an hour" (one hour)."""
    return i < len(toks) and (toks[i] in _SCALES or toks[i] in _UNIT_WORDS)


def _number_words(toks: list[str], i: int) -> tuple[float, int]:
    total = 0.0
    current = 0.0
    seen = False
    while i < len(toks):
        t = toks[i]
        if t in _UNITS and not (t in ("a", "an") and seen):
            if t in ("a", "an") and not _starts_number(toks, i + 1):
                break
            current += _UNITS[t]
            if t in ("a", "an") and toks[i + 1] in _UNIT_WORDS:
                i += 1
                seen = True
                break
        elif t in _TENS:
            current += _TENS[t]
        elif t in _SCALES and seen:
            current = max(current, 1) * _SCALES[t]
            if _SCALES[t] >= 1000:
                total += current
                current = 0
        elif t == "and" and seen and i + 1 < len(toks) and (
                toks[i + 1] in _UNITS or toks[i + 1] in _TENS) and toks[i + 1] not in ("a",
                                                                                     "an"):
            pass  # "one hundred and five"
        else:
            break
        seen = True
        i += 1
    return total + current, i


def _and_a_fraction(toks: list[str], i: int, value: float) -> tuple[float, int]:
    """"two and a half" / "2 and a quarter"."""
    if i + 2 < len(toks) and toks[i] == "and" and toks[i + 1] in ("a", "an") and \
            toks[i + 2] in _FRACTIONS:
        return value + _FRACTIONS[toks[i + 2]], i + 3
    return value, i


_TIME_UNITS = {"second": 1 / 60, "seconds": 1 / 60, "sec": 1 / 60, "secs": 1 / 60,
               "minute": 1.0, "minutes": 1.0, "min": 1.0, "mins": 1.0,
               "hour": 60.0, "hours": 60.0, "hr": 60.0, "hrs": 60.0, "day": 1440.0,
               "days": 1440.0}
_PARAM_UNIT = {"seconds": 1 / 60, "secs": 1 / 60, "minutes": 1.0, "mins": 1.0,
               "hours": 60.0, "days": 1440.0}


def convert_time(text: str, value: float, param: str) -> float:
    """"an hour" for a ``minutes`` parameter is 60: convert when the text names a time unit
    after the number and the parameter is named after another one."""
    target = _PARAM_UNIT.get(param.lower())
    if target is None:
        return value
    toks = words(text)
    for i, t in enumerate(toks):
        unit = _TIME_UNITS.get(t)
        if unit is not None and i > 0:
            return value * unit / target
    return value


# spoken and written forms of titles and abbreviations: "doctor patel" is "Dr Patel"
_TITLE = {"doctor": "dr", "mister": "mr", "missus": "mrs", "misses": "mrs", "saint": "st",
          "professor": "prof", "number": "no", "nurse": "nurse"}


def _titles(toks: list[str]) -> list[str]:
    return [_TITLE.get(t, t) for t in toks]


def match_choice(text: str, choices: list[str], aliases: dict[str, str] | None = None,
                 *, fuzzy_cutoff: float = 0.84) -> str | None:
    """The choice (enum value) the text names: by value or alias, exact words first (the
    longest phrase wins: "living room" over "room"), then a close spelling."""
    toks = _titles(words(text))
    if any(ch.isdigit() for c in choices for ch in str(c)):
        # "court three" names the choice "court 3"
        toks = [str(_UNITS[t]) if t in _UNITS and t not in ("a", "an", "oh") else t
                for t in toks]
    norm = " " + " ".join(toks) + " "
    phrases: list[tuple[str, str]] = [(c, c) for c in choices]
    phrases += [(a, v) for a, v in (aliases or {}).items() if v in choices]
    best: tuple[int, str] | None = None
    for phrase, value in phrases:
        p = " ".join(_titles(words(str(phrase).replace("_", " "))))
        if p and f" {p} " in norm and (best is None or len(p) > best[0]):
            best = (len(p), value)
    if best:
        return best[1]
    toks = words(text)
    grams = toks + [" ".join(toks[i:i + 2]) for i in range(len(toks) - 1)]
    scored: list[tuple[float, str]] = []
    for phrase, value in phrases:
        p = " ".join(words(str(phrase).replace("_", " ")))
        if len(p) < 4:
            continue
        for g in grams:
            r = difflib.SequenceMatcher(None, p, g).ratio()
            if r >= fuzzy_cutoff:
                scored.append((r, value))
    return max(scored)[1] if scored else None


# verb -> (true words, false words): the parameter name picks the row
_POLARITY: list[tuple[set[str], set[str], set[str]]] = [
    # parameter names, words meaning True, words meaning False
    ({"on", "enabled", "enable", "active", "power", "state"},
     {"on", "enable", "start", "activate", "dim", "brighten", "up"},
     {"off", "disable", "stop", "deactivate", "kill", "shut", "out"}),
    ({"open", "opened"}, {"open", "raise", "up"}, {"close", "shut", "lower", "down"}),
    ({"locked", "lock"}, {"lock", "locked", "locking", "secure", "bolt", "bolted"},
     {"unlock", "unlocked", "unlocking", "release", "open", "unbolt"}),
    ({"muted", "mute"}, {"mute", "silence", "quiet"}, {"unmute"}),
]
_NEGATION = {"not", "don't", "dont", "never", "no"}


# politeness and fillers before a command's verb ("okay so can you ...")
LEAD_IN = re.compile(r"^(?:(?:please|can you|could you|would you|will you|okay|ok|so|now|"
                     r"just|and|then|hey|right|uh|um)[,]?\s+)*", re.I)

_QUESTION_START = {"is", "are", "was", "were", "did", "does", "do", "has", "have", "what",
                   "what's", "whats", "which", "who", "where", "when", "why", "how", "how's",
                   "hows", "how're", "whereabouts"}


def is_question(text: str) -> bool:
    """A question asks about state ("is the hall light on?"); it must never set it.
    Polite commands ("can you turn on ...") are not questions."""
    # "Page Maria: can you cover the desk?": the question is the message, not the request
    text = re.split(r"(?<!\d):\s|[\"“]", text, maxsplit=1)[0]
    toks = words(text)
    if not toks:
        return False
    if toks[0] in ("can", "could", "would", "will") and len(toks) > 1 and toks[1] == "you":
        return False
    return toks[0] in _QUESTION_START or text.rstrip().endswith("?") or (
        toks[0] in ("tell", "read", "show", "give") and len(toks) > 1 and toks[1] in ("me", "us"))



def parse_bool(text: str, param: str) -> bool | None:
    """Yes/no for a boolean parameter, from the verbs that talk about it; never from a
    question (its "on" asks, it does not command)."""
    if is_question(text):
        return None
    toks = words(text)
    name = param.lower()
    for names, yes, no in _POLARITY:
        if name in names or any(name.startswith(n) for n in names):
            return _polarity(toks, yes, no)
    return _polarity(toks, {name, "yes", "true"}, {f"un{name}", f"non{name}", "no", "false"})


def _polarity(toks: list[str], yes: set[str], no: set[str]) -> bool | None:
    verdict: bool | None = None
    for i, t in enumerate(toks):
        v = True if t in yes else False if t in no else None
        if v is None:
            continue
        if any(w in _NEGATION for w in toks[max(0, i - 5):i]):
            v = not v
        verdict = v  # the last verb wins: "turn it off, no, on"
    return verdict


def fill(text: str, schema: dict[str, Any], aliases: dict[str, dict[str, str]] | None = None
         ) -> dict[str, Any]:
    """Arguments the rules can decide from the text, per the tool's JSON schema."""
    props = schema.get("properties", {})
    defs = schema.get("$defs", {})
    out: dict[str, Any] = {}
    numbers = parse_numbers(text)
    num_params = [n for n, p in props.items() if _kind(p, defs)[0] in ("integer", "number")]
    for name, prop in props.items():
        kind, choices = _kind(prop, defs)
        if choices:
            v = match_choice(text, [str(c) for c in choices], (aliases or {}).get(name))
            if v is not None:
                out[name] = v
        elif kind == "boolean":
            b = parse_bool(text, name)
            if b is not None:
                out[name] = b
        elif kind in ("integer", "number") and numbers:
            # one numeric parameter: the (last) number said; several: in order of mention
            idx = num_params.index(name)
            if len(num_params) == 1:
                value = numbers[-1]
            elif idx < len(numbers):
                value = numbers[idx]
            else:
                continue
            value = convert_time(text, value, name)
            out[name] = int(round(value)) if kind == "integer" else round(value, 4)
    # Setting a level implies on: "kitchen lights to forty percent" switches them on.
    for name, prop in props.items():
        if name not in out and name.lower() in ("on", "enabled", "power") and \
                _kind(prop, defs)[0] == "boolean" and not is_question(text) and \
                any(n in out for n in num_params) and parse_bool(text, name) is None:
            out[name] = True
    return out


def _kind(prop: dict[str, Any], defs: dict[str, Any]) -> tuple[str, list[Any] | None]:
    """(JSON type, enum choices) of a property, looking through $ref and Optional."""
    if "$ref" in prop:
        prop = defs.get(prop["$ref"].rsplit("/", 1)[-1], {})
    if "anyOf" in prop:
        non_null = [p for p in prop["anyOf"] if p.get("type") != "null"]
        if len(non_null) == 1:
            return _kind(non_null[0], defs)
    if "enum" in prop:
        return "enum", list(prop["enum"])
    return str(prop.get("type", "")), None
