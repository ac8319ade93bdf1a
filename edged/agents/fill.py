"""Arguments from the words of a request, with what the tool says about itself.

On top of ``slots.fill`` (choices and aliases, numbers in words, on/off): yes/no from the
verbs the parameter's description implies, numbers matched to parameters by their units and
converted, the ends and fractions of a range ("close it" -> 0, "a quarter open" -> 25), and
free text after a carrier phrase ("a message saying ..."). Speech-to-text slips ("turn of
the light", "at for pm") are mended first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..tools.base import Tool
from . import codes, knowledge, slots, timeofday, units
from .knowledge import FRACTIONS, Param

_FILLERS = re.compile(r"\b(?:um+|uh+|uhm+|erm+|hmm+|er)\b[,.]?\s*", re.I)
_MENDS: list[tuple[re.Pattern[str], str]] = [
    # "turn of the light", "switch it of": a recogniser's "of" for "off"
    (re.compile(r"\b(turn|switch|shut|power|kick|cut|knock|take|turned|switched)(\s+(?:it|"
                r"them|that|this|the\s+\w+(?:\s+\w+)?))?\s+of\b(?!\s+(?:the|a|an|my|our|"
                r"your|his|her|their|them|it|this|that)\b)", re.I), r"\1\2 off"),
    (re.compile(r"\b(turn|switch|shut|power)\s+of\s+(?=the|my|our|all)", re.I), r"\1 off "),
    (re.compile(r"\btoo\s+(?=\d|(?:one|two|three|four|five|six|seven|eight|nine|ten|"
                r"twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|a hundred)\b)", re.I),
     "to "),
    (re.compile(r"\bat\s+for\b", re.I), "at four"),
    (re.compile(r"\bfor\s+(?=(?:pm|am|p\.m\.|a\.m\.|o'?clock|thirty|fifteen|forty[- ]five)\b)",
                re.I), "four "),
]


def mend(text: str) -> str:
    """Fillers out, recogniser slips mended; the rest untouched."""
    out = _FILLERS.sub("", text)
    out = re.sub(r"(^|[\s(])-(?=\d)", r"\1minus ", out)  # "-1" is a number, not a dash
    out = re.sub(r"(\d)'s\b", r"\1", out)  # "303's thermostat"
    out = re.sub(r"(?i)\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
                 r"teen|ty)'s\b", r"\1", out)  # "thirty-one's up"
    for rx, rep in _MENDS:
        out = rx.sub(rep, out)
    return re.sub(r"\s{2,}", " ", out).strip()


@dataclass(frozen=True)
class Quantity:
    value: float
    unit: str | None  # a pint unit, or None when none was said
    start: int  # token span in the request
    end: int
    fraction: bool = False  # "halfway", "a quarter": a share of a range
    alt: float | None = None  # "three twelve": 312 (a room), else 15 (three + twelve)


def quantities(text: str) -> list[Quantity]:
    """Every number said, with the unit said after it: "2 kilograms", "half an hour",
    "1832 degrees fahrenheit", "twenty five percent", "a quarter"."""
    toks = slots.words(text)
    out: list[Quantity] = []
    fracs = sorted(FRACTIONS, key=lambda f: -len(f.split()))
    i = 0
    while i < len(toks):
        start = i
        frac = next((f for f in fracs if toks[i:i + len(f.split())] == f.split()), None)
        if frac is not None and not (start > 0 and toks[start - 1] == "and"):
            j = i + len(frac.split())
            k = j + (1 if j < len(toks) and toks[j] in ("a", "an", "of") else 0)
            k += 1 if k < len(toks) and toks[k] in ("a", "an") else 0
            unit, k2 = _unit_at(toks, k)
            if unit is not None:  # "half an hour", "a quarter of a kilo"
                out.append(Quantity(FRACTIONS[frac], unit, start, k2))
                i = k2
            else:
                out.append(Quantity(FRACTIONS[frac], None, start, j, fraction=True))
                i = j
            continue
        t = toks[i]
        sign = 1.0
        if t in ("minus", "negative") and i + 1 < len(toks) and (
                re.fullmatch(r"\d+(?:[.,]\d+)?", toks[i + 1]) or toks[i + 1] in slots._UNITS
                or toks[i + 1] in slots._TENS):
            sign, i = -1.0, i + 1
            t = toks[i]
        if (spoken := _digits_said(toks, i)) is not None:
            value, j, alt = spoken
            unit, j = _unit_at(toks, j)
            out.append(Quantity(sign * value, unit, start, j, alt=sign * alt))
            i = j
            continue
        if re.fullmatch(r"\d+(?:[.,]\d+)?", t):
            if len(t) > 15:  # no parameter takes it; float() would say inf
                i += 1
                continue
            value = float(t.replace(",", "."))
            i += 1
        elif t in slots._UNITS or t in slots._TENS:
            if t in ("a", "an", "oh") and not slots._starts_number(toks, i + 1):
                i += 1
                continue
            if t == "one" and toks[i + 1:i + 2] in (["of"], ["another"], ["more"]):
                i += 1  # "one of them": a pronoun, not a number
                continue
            value, i = slots._number_words(toks, i)
            if i == start:
                i += 1
                continue
        elif t == "dozen":
            out.append(Quantity(12.0, None, i, i + 1))
            i += 1
            continue
        elif t in ("once", "twice", "thrice"):  # "say it twice"
            out.append(Quantity({"once": 1.0, "twice": 2.0, "thrice": 3.0}[t], None, i, i + 1))
            i += 1
            continue
        elif t in _NOTES:  # "a tenner in credit", "two fivers"
            count = out.pop().value if out and out[-1].end == i and not out[-1].unit else 1.0
            out.append(Quantity(count * _NOTES[t], "currency", start if count == 1 else
                                i - 1, i + 1))
            i += 1
            continue
        else:
            i += 1
            continue
        value, i = slots._and_a_fraction(toks, i, value)
        if i < len(toks) and toks[i] == "dozen":
            value, i = value * 12, i + 1
        unit, i = _unit_at(toks, i)
        if unit is not None:  # "an hour and a half"
            value, i = slots._and_a_fraction(toks, i, value)
        out.append(Quantity(sign * value, unit, start, i))
    return out


_DIGIT = {w: n for w, n in slots._UNITS.items() if 1 <= n <= 9 and w not in ("a", "an")}
_TEEN = {w: n for w, n in slots._UNITS.items() if 10 <= n <= 19}


def _digits_said(toks: list[str], i: int) -> tuple[float, int, float] | None:
    """Numbers said digit by digit, as rooms and flights are: "two oh six" -> 206, "three
    twelve" -> 312, "one twenty five" -> 125; with the plain reading as the alternative."""
    if i + 1 < len(toks) and (toks[i] in _TEEN or toks[i] in slots._TENS):
        return _pairs_said(toks, i)
    if toks[i] not in _DIGIT or i + 1 >= len(toks):
        return None
    head, nxt = _DIGIT[toks[i]], toks[i + 1]
    if nxt in ("oh", "o", "zero") and i + 2 < len(toks) and toks[i + 2] in _DIGIT:
        return head * 100 + _DIGIT[toks[i + 2]], i + 3, float(head)
    if nxt in _TEEN:
        return head * 100 + _TEEN[nxt], i + 2, float(head + _TEEN[nxt])
    if nxt in slots._TENS:
        tens = slots._TENS[nxt]
        j = i + 2
        if j < len(toks) and toks[j] in _DIGIT:
            tens, j = tens + _DIGIT[toks[j]], j + 1
        return head * 100 + tens, j, float(head + tens)
    return None


def _pairs_said(toks: list[str], i: int) -> tuple[float, int, float] | None:
    """Two two-digit numbers said one after the other, as prices and years are: "forty
    nine ninety nine" -> 4999, "twelve fifty" -> 1250 (the plain sum as the alternative)."""
    if toks[i] in _TEEN:
        head, j = _TEEN[toks[i]], i + 1
    else:
        head, j = slots._TENS[toks[i]], i + 1
        if j < len(toks) and toks[j] in _DIGIT:
            head, j = head + _DIGIT[toks[j]], j + 1
    if j >= len(toks):
        return None
    if toks[j] in _TEEN:
        return head * 100 + _TEEN[toks[j]], j + 1, float(head + _TEEN[toks[j]])
    if toks[j] in slots._TENS:
        tail, k = slots._TENS[toks[j]], j + 1
        if k < len(toks) and toks[k] in _DIGIT:
            tail, k = tail + _DIGIT[toks[k]], k + 1
        return head * 100 + tail, k, float(head + tail)
    return None


_NOTES = {"fiver": 5.0, "fivers": 5.0, "tenner": 10.0, "tenners": 10.0}  # banknotes said
_MONEY = {"euro": "currency", "euros": "currency", "dollar": "currency",
          "dollars": "currency", "bucks": "currency", "quid": "currency", "cent": "cent",
          "cents": "cent", "pence": "cent", "p": "cent"}


def _unit_at(toks: list[str], i: int) -> tuple[str | None, int]:
    if i >= len(toks):
        return None, i
    t = toks[i]
    if t in _MONEY:
        return _MONEY[t], i + 1
    if t in ("%", "percent", "per") and (t != "per" or toks[i + 1:i + 2] == ["cent"]):
        return "percent", i + (2 if t == "per" else 1)
    if t in ("degree", "degrees"):
        nxt = units.said_unit(toks[i + 1]) if i + 1 < len(toks) else None
        if nxt in ("degC", "degF", "kelvin"):
            return nxt, i + 2
        return "degC", i + 1
    u = units.said_unit(t)
    if u is not None and t not in ("in", "m", "s", "l", "k", "f", "c", "w", "h", "g"):
        return u, i + 1
    if u is not None and t in ("s", "m", "h", "g", "l", "k", "c", "f"):
        return u, i + 1  # "90 s", "500 g": only right after a number
    return None, i


def fill(text: str, tool: Tool) -> dict[str, Any]:
    """The arguments the rules find for ``tool`` in ``text`` (words in quotes are the
    message's, never a choice or a yes/no: asked rather than read from the message)."""
    said = spoken = _unquoted(mend(text))
    out = slots.fill(said, tool.parameters, tool.aliases)
    info = knowledge.of(tool)
    for p in info.params.values():  # numbers are matched below, with their units
        if p.kind in ("integer", "number"):
            out.pop(p.name, None)
    for p in info.params.values():
        if p.code:  # "account 55 18 09": the identifier, and its digits are no quantity
            out.pop(p.name, None)
            code = codes.pick(codes.find(said), said, p.name, p.description)
            if code is not None:
                out[p.name] = code.value
                said = said[:code.start] + " " * (code.end - code.start) + said[code.end:]
    for label in codes.find(said):
        if re.match(r"[A-Za-z]+-|[A-Za-z]{2,}\d", label.value):
            # "HW-20418", "WD-40": a label's code names a thing; its digits are no quantity
            said = said[:label.start] + " " * (label.end - label.start) + said[label.end:]
    question = slots.is_question(said)
    for p in info.params.values():
        if p.kind == "boolean" and not question:
            v = polarity(said, p, info.nouns)
            if v is not None:
                out[p.name] = v
    said = _times(said, info.params, out)
    said = _without_sizes(said)
    for p in info.params.values():
        if p.when and p.name not in out and (at := timeofday.phrase(said)) is not None:
            out[p.name] = re.sub(r"(?i)\bafter noon\b", "afternoon", said[at[0]:at[1]])
            said = said[:at[0]] + " " * (at[1] - at[0]) + said[at[1]:]  # no quantity
        if p.kind == "string" and p.time_of_day and p.name not in out and \
                (t := timeofday.find(said)) is not None:
            out[p.name] = t.format(with_day=p.day_first, padded=p.padded)
            said = said[:t.start] + " " + said[t.end:]  # its numbers are not for others
    numeric = [p for p in info.params.values() if p.kind in ("integer", "number")]
    if numeric and not any(p.time_of_day for p in info.params.values()) and \
            (t := timeofday.explicit(said)) is not None:
        said = said[:t.start] + " " + said[t.end:]  # "at quarter past ten" is no quantity
    if numeric:
        # units a choice names ("grams", "litres"): a number said in one is the plain number
        named = {units.said_unit(str(c)) for p in info.params.values() for c in p.choices or ()}
        out.update(_numbers(said, numeric, out, {u for u in named if u}))
        for p in numeric:
            v = out.get(p.name)
            if p.kind == "integer" and isinstance(v, int | float) and \
                    codes.labelled_elsewhere(said, v, p.name, p.description):
                out.pop(p.name)  # "move the customer on 402138": no ticket number
                continue
            if p.signed and isinstance(v, int | float) and v > 0:
                if _DECREASE.search(said):
                    out[p.name] = -v  # "we sold three": a change of -3
                elif _CHANGE.search(p.description) and not _INCREASE.search(said):
                    out.pop(p.name)  # in or out? not said: asked, never guessed
    for p in info.params.values():
        if p.choices and p.name not in out and (c := _unit_choice(said, p)) is not None:
            out[p.name] = c  # "2 kilos" names the unit choice "kilograms"
        elif p.choices and p.name not in out and any(
                isinstance(out.get(n.name), int | float) for n in numeric) and \
                (c := _count_choice(said, p)) is not None:
            out[p.name] = c  # "we sold a dozen croissants": pieces
        elif p.choices and p.required and p.name not in out and \
                (c := _head_word_choice(said, p)) is not None:
            out[p.name] = c  # "the hall is dark": the one choice ending in "hall"
        elif p.choices and p.required and p.name not in out and \
                (c := _number_choice(said, p, tool)) is not None:
            out[p.name] = c  # "lift two up": the one choice numbered two
        if p.clears and p.name not in out and _CLEAR.match(_LEAD_IN.sub("", said.lower())):
            out[p.name] = ""  # "clear the display": its empty value
    for p in info.params.values():
        # an optional note or message, only when the request marks it ("with a note saying
        # ...", "note extra blanket"); a required one is the planner's (freetext.span)
        if p.kind == "string" and not p.required and not p.choices and not p.time_of_day \
                and p.name not in out and (note := _optional_text(said, tool, p.name, out, spoken)):
            out[p.name] = note
    return out


_OLD_PARAM = re.compile(r"(?i)current|old|original|existing|previous|booked now|from")


def _times(said: str, params: dict[str, Param], out: dict[str, Any]) -> str:
    """Appointments' days and times into ``out``, the request with them blanked: a date or a
    weekday with its time ("14 March 09:15"), a day alone where the parameter allows it,
    "two" in the afternoon, and where a tool takes when it is now and when it should be,
    each its own ("from Tuesday 10:30 to Thursday 10:30")."""
    timed = [p for p in params.values() if p.kind == "string" and not p.choices and (
        p.time_of_day and p.day_first or p.when)]
    if not timed or (len(timed) == 1 and not timed[0].time_of_day):
        return said  # a time alone, or a when in the user's words: below
    found = timeofday.moments(said)
    old = [p for p in timed if not p.required and _OLD_PARAM.search(
        f"{p.name} {p.description}")] if len(timed) > 1 else []
    new = [p for p in timed if p not in old]
    afternoon = timeofday.said_afternoon(said)
    taken: list[timeofday.Moment] = []
    for group, wanted in ((old, True), (new, False)):
        for p in group:
            for m in found:
                if m in taken or (m.old != wanted and (old or wanted)):
                    continue
                if m.time is None and (p.required or not p.day_first and not p.when):
                    continue  # "Tuesday" is no start time
                out[p.name] = m.format(True, p.padded, afternoon)
                taken.append(m)
                break
    for m in taken:
        said = said[:m.start] + " " * (m.end - m.start) + said[m.end:]
    return said


def _unquoted(said: str) -> str:
    """The request without a quoted message ("Show 'Please switch off your phones'"): the
    words inside are the message's, not a choice or a yes/no."""
    m = slots.QUOTED.search(said)
    if m is None or len((m.group(1) or m.group(2) or "").split()) < 2:
        return said
    return said[:m.start()] + " " * (m.end() - m.start()) + said[m.end():]


_SIZE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?[a-zA-Z]{1,3}(?=\s+(?!(?:of|please|and|for|now|"
                   r"then|thanks|each|per|off|the|too|as|with|from|into|onto|at|to|in|on)\b)"
                   r"[a-zA-Z]{3,})")


def _without_sizes(said: str) -> str:
    """Sizes written onto a thing ("five of the 13A plugs", "12.5 kg of 50mm nails") are
    part of its name, not a quantity, when another number says how many."""
    sizes = list(_SIZE.finditer(said))
    if not sizes:
        return said
    rest = said
    for m in reversed(sizes):
        rest = rest[:m.start()] + " " * (m.end() - m.start()) + rest[m.end():]
    return rest if quantities(rest) else said


def direction_unsaid(text: str, p: Param) -> bool:
    """``p`` is a change either way and the request says neither which ("anna wants six
    buns": in or out?)."""
    said = mend(text)
    return p.signed and bool(_CHANGE.search(p.description)) and \
        not _DECREASE.search(said) and not _INCREASE.search(said)


# a parameter that is a change either way ("positive for stock in, negative for stock out")
_CHANGE = re.compile(r"\bnegative\b|\bsigned\b|(?<!\w)[+-]n\b", re.I)
_INCREASE = re.compile(
    r"\b(add|added|adding|plus|delivered|delivery|deliveries|arrived|came in|come in|got in|"
    r"received|receive|baked|bake|made|make|produced|bought|restock|restocked|stocked|"
    r"in stock|to stock|into stock|put in|brought in|new batch|fresh batch|increase|"
    r"found|up by|topped up|top up|(?:we|we've|we have|just) got|book in|booked in|books in|"
    r"book it in|returned to stock|back in stock|put it back)\b|\bin\s*$", re.I)
_DECREASE = re.compile(
    r"\b(sold|sell|selling|used|use up|used up|took|take out|taken|removed?|lost|broke|broken|"
    r"threw away|thrown away|throw away|threw out|throw out|wasted|waste|went into|gone|"
    r"go into|went in|burnt|burned|"
    r"smashed|dropped|wrote off|write off|written off|spoiled|spoilt|expired|damaged|stolen|"
    r"nicked|pinched|shoplifted|book out|booked out|take off|took off|"
    r"minus|subtract|deduct|reduce|less|fewer|down by|gave away|returned|binned|threw out|"
    r"thrown out|ate)\b", re.I)
_CLEAR = re.compile(r"^(?:clear|blank|wipe|remove|delete|take down|take off|reset|empty|"
                    r"take (?:the |that |this )?\w+ (?:down|off|of)\b)")


_COUNTS = {"pieces", "piece", "count", "items", "item", "units", "unit", "each", "pcs",
           "number", "pieces/units"}


def _count_choice(said: str, p: Param) -> str | None:
    """A unit choice that counts things, for a number said without a unit; None when the
    choices are not units or a unit was said."""
    by_unit = {units.said_unit(str(c)) for c in p.choices or ()}
    if not (by_unit - {None}) or any(q.unit not in (None, "percent") for q in quantities(said)):
        return None
    return next((str(c) for c in p.choices or () if str(c).lower() in _COUNTS), None)


def _unit_choice(said: str, p: Param) -> str | None:
    """The choice that names the unit a quantity was said in ("2 kilos" -> "kilograms")."""
    by_unit = {units.said_unit(str(c)): str(c) for c in p.choices or ()}
    by_unit.pop(None, None)
    for q in quantities(said):
        if q.unit is not None and q.unit in by_unit:
            return by_unit[q.unit]
    return None


def _number_choice(said: str, p: Param, tool: Tool) -> str | None:
    """A required choice told apart by its number ("bay 1" .. "bay 3") named by the number
    said right after the tool's thing ("lift two up"), when that names exactly one."""
    numbered = {int(m.group(0)): str(c) for c in p.choices or ()
                if (m := re.search(r"\d+", str(c)))}
    if len(numbered) < 2:
        return None
    nouns = {w for w in tool.short_name.lower().split("_") if len(w) > 2}
    nouns |= {w + "s" for w in nouns}
    words = slots.words(said)
    said_small = {int(q.value) for q in quantities(said)
                  if q.unit is None and q.value == int(q.value) and 0 < q.value <= 20 and
                  q.start > 0 and words[q.start - 1] in nouns}
    hits = [numbered[n] for n in said_small if n in numbered]
    return hits[0] if len(hits) == 1 and len(said_small) == 1 else None


def _head_word_choice(said: str, p: Param) -> str | None:
    """A required choice of several words named by its last word alone, when no other
    choice has that word ("the hall" -> "sports hall"; "court" names none of three courts)."""
    choices = [str(c) for c in p.choices or ()]
    words_of = {c: slots.words(c) for c in choices}
    said_words = set(slots.words(said))
    hits = []
    for c, ws in words_of.items():
        head = ws[-1] if len(ws) > 1 else None
        if head and len(head) > 3 and head in said_words and not any(
                head in o for d, o in words_of.items() if d != c):
            hits.append(c)
    return hits[0] if len(hits) == 1 else None


# optional free-text parameters that hold what the request adds ("..., they need pillows")
_NOTE_NAMES = {"note", "notes", "message", "comment", "comments", "details", "detail",
               "description", "reason", "instructions", "memo", "remark", "remarks"}


def _optional_text(said: str, tool: Tool, param: str, found: dict[str, Any],
                   spoken: str = "") -> str | None:
    from . import freetext

    if (v := _marked_text(said, param)) is not None:
        return v
    if freetext._names_thing(tool, param) and not freetext.is_person(tool, param):
        # "End the sale on the Bosch cordless drills": which article, when one is named
        thing = freetext.span(spoken or said, tool, param, found)
        return thing if thing and freetext.plausible(tool, param, thing, found) else None
    if param.lower() not in _NOTE_NAMES:
        return None
    lead = _LEAD_IN.sub("", said.lower())
    if re.match(r"^(?:tell|ask|let)\b", lead) and (m := freetext.marked(said)):
        return freetext.span(said, tool, param, found) or m
    tail = freetext.trailing(said, tool, param, found)
    info = knowledge.of(tool)
    if tail and any(tail.lower() in p.true_words | p.false_words for p in info.params.values()):
        return None  # "..., no rush": that clause was a yes/no, not a note
    return tail


def _marked_text(text: str, param: str) -> str | None:
    from .freetext import marked

    name = param.replace("_", " ")
    m = re.search(rf"\b{re.escape(name)}s?\b\s*(?:saying|that says|reading|:)?\s*", text, re.I)
    if m is not None and m.end() < len(text):
        tail = text[m.end():].strip(" ,.:;!?\"'")
        if (c := re.match(r"^(?:\S+\s+){0,4}?\S+:\s+(.+)$", tail)) is not None:
            tail = c.group(1)  # "Note for the customer: air con regassed"
        inner = marked(tail) or tail
        return inner or None
    return marked(text) if re.search(r"\b(saying|that says|to read)\b", text, re.I) else None


def _has(text: str, phrase: str) -> list[int]:
    """Where ``phrase`` occurs as whole words (a trailing ``$``: only at the end); a
    one-word phrase also matches its inflections ("stow" ~ "stowed", "light" ~ "lights")."""
    end = phrase.endswith("$")
    phrase = phrase.rstrip("$")
    if " " not in phrase and len(phrase) > 3:
        stem = re.sub(r"(?:ing|ed|es|s|e)$", "", phrase) or phrase
        rx = rf"(?<![\w']){re.escape(stem)}(?:e|s|es|ed|d|ing)?(?![\w'])"
    else:
        rx = rf"(?<![\w']){re.escape(phrase)}(?![\w'])"
    return [m.start() for m in re.finditer(rx + (r"\s*$" if end else ""), text)]


_LEAD_IN = slots.LEAD_IN


_CORRECTION = re.compile(r"\b(?:no|actually|sorry|wait|i mean|rather|instead)\b")


def polarity(text: str, p: Param, nouns: frozenset[str] = frozenset()) -> bool | None:
    """True or False from the last verb that decides it ("turn it off, no, on": on);
    a negation within five words before flips it ("don't stop the pump"). A word that also
    names the tool's object ("light") decides only as the command's verb."""
    first = re.split(r"(?<=[.?!])\s+(?=[A-Z])", text.strip(), maxsplit=1)
    if len(first) > 1 and polarity(first[0], p, nouns) is not None:
        # "Switch the washer off please? It's been left running all weekend": the command
        # is in the first sentence; what follows describes
        return polarity(first[0], p, nouns)
    low = " ".join(slots.words(text))
    verb_at = len(_LEAD_IN.match(low).group(0))  # type: ignore[union-attr]
    hits: list[tuple[int, int, bool, str]] = []  # (position, -length, meaning, phrase)
    for words, meaning in ((p.true_words, True), (p.false_words, False)):
        for w in words:
            for pos in _has(low, w):
                said_word = low[pos:].split(" ", 1)[0]
                if (w in nouns or said_word in nouns) and pos != verb_at:
                    continue  # "kill the hall lights": "lights" names the thing here
                hits.append((pos, -len(w), meaning, w))
    if not hits:
        return None
    hits.sort()
    # at one position the longest phrase wins ("not running" over "running")
    chosen: list[tuple[int, int, bool, str]] = []
    for h in hits:
        if chosen and (h[0] == chosen[-1][0] or h[0] < chosen[-1][0] - chosen[-1][1]):
            continue  # the same place, or inside the previous phrase ("fire up": not "up")
        chosen.append(h)
    pos, _, meaning, phrase = chosen[-1]
    if phrase in ("on", "off") and len(chosen) > 1 and chosen[0][0] == verb_at and \
            low[verb_at:].split(" ", 1)[0] not in nouns and \
            not _CORRECTION.search(low[verb_at:pos]):
        # "turn off the lights on court three": a bare "on" after the command's own verb
        # is a preposition, unless the user corrects themselves ("off, no, on")
        pos, _, meaning, phrase = chosen[0]
    before = low[:pos].split()[-5:]
    if (any(w in slots._NEGATION for w in before) or "without" in before[-2:]) and \
            phrase.split()[0] not in slots._NEGATION:
        meaning = not meaning  # "don't stop the pump", "announce without the chime"
    return meaning


def _numbers(text: str, params: list[Param], found: dict[str, Any],
             named_units: set[str] | None = None) -> dict[str, Any]:
    """Numbers matched to parameters: by unit first (a temperature never fills a duration),
    then in order of mention; ranges from their end words and fractions."""
    qs = quantities(text)
    out: dict[str, Any] = {}
    free = list(params)
    used: set[int] = set()
    words = slots.words(text)
    # 0. a number said right after a parameter's own name ("order 19", "ticket 88")
    for p in [p for p in params if not p.currency and not p.unit]:
        label = set(p.name.lower().split("_")) - {"number", "no", "num", "id", "nr"}
        for qi, q in enumerate(qs):
            at = q.start - 1
            while at >= 0 and words[at] in ("number", "no", "num", "nr", "is"):
                at -= 1
            if qi not in used and q.unit is None and not q.fraction and at >= 0 and \
                    words[at] in label and _fits(q.value, p):
                out[p.name] = q.value
                used.add(qi)
                free.remove(p)
                break
    for p in [p for p in params if p.currency]:
        got = _money(qs, used, slots.words(text))
        if got is not None:
            out[p.name] = got
            free.remove(p)
    # 1. a quantity with a unit goes to the parameter that measures the same thing
    for qi, q in enumerate(qs):
        if q.unit is None or q.fraction:
            continue
        for p in free:
            v = _in_unit(q, p)
            if v is not None:
                out[p.name] = v
                used.add(qi)
                free.remove(p)
                break
    # 2. plain numbers in order of mention to what is left (never across units)
    plain = {None, "percent"} | (named_units or set())
    rest = [q for qi, q in enumerate(qs) if qi not in used and not q.fraction and q.unit in plain]
    for p in list(free):
        if not rest:
            break
        # "three sourdough loaves" counts loaves: never a percentage, a price or degrees
        can = [q for q in rest if not ((p.unit or p.percent_like or p.currency) and
                                       q.unit is None and counts_things(words, q))]
        if not can:
            continue
        if named_units and any(q.unit in named_units for q in can):
            can = [q for q in can if q.unit in named_units]  # "two litres of DOT 4 fluid"
        fitting = [q for q in can if _fits(q.value, p) or (q.alt is not None and
                                                           _fits(q.alt, p))]
        pool = fitting or can  # none fits: keep one, so the tool is seen not to fit
        q = pool[-1] if len(free) == 1 else pool[0]
        if q.unit == "percent" and not p.percent_like:
            continue
        v = q.value if _fits(q.value, p) or q.alt is None or not _fits(q.alt, p) else q.alt
        out[p.name] = v
        rest.remove(q)
        free.remove(p)
    # 3. a range's ends and fractions ("close it", "three quarters open", "full speed")
    fractions = [q for q in qs if q.fraction]
    for p in free:
        if not p.ranged or not (p.lo_words or p.hi_words):
            continue
        # "a quarter of the way" for a position; never a quarter of a temperature range
        share = fractions[-1] if fractions and p.unit in (None, "percent") else None
        v = _range_words(text, p, share)
        if v is not None:
            out[p.name] = v
    for name, v in list(out.items()):
        p = next(x for x in params if x.name == name)
        out[name] = int(round(v)) if p.kind == "integer" else round(float(v), 4)
    return out


# words after a number that do not make it a count of things ("2 to 3", "40 of them")
_NOT_THINGS = {"of", "and", "to", "at", "for", "in", "on", "by", "or", "with", "from",
               "percent", "off", "each", "now", "please", "today", "then", "a", "an", "the",
               "is", "are", "was", "o'clock", "am", "pm", "per", "more", "less", "minus",
               "plus", "point", "degrees", "euros", "euro", "cents", "back", "until", "till",
               "tonight", "tomorrow", "again", "instead"}


def counts_things(words: list[str], q: Quantity) -> bool:
    """The number is followed by the thing it counts ("40 baguettes", "three loaves")."""
    if q.unit is not None or q.end >= len(words) or q.value != int(q.value):
        return False  # "7.80 credit", "15.50, card": no count of things is a fraction
    at = q.end
    while at + 1 < len(words) and words[at] in ("more", "extra", "new", "fresh", "big",
                                                "small", "large"):
        at += 1  # "30 more packs", "two large boxes"
    nxt = words[at]
    return nxt.isalpha() and nxt not in _NOT_THINGS and nxt not in slots._UNITS and \
        nxt not in slots._TENS and units.said_unit(nxt) is None


def _money(qs: list[Quantity], used: set[int], words: list[str]) -> float | None:
    """A price said: "2.50", "two ninety nine" (2.99), "3 euros 50", "80 cents"; not a
    count of things ("three loaves")."""
    for qi, q in enumerate(qs):
        if qi in used or q.fraction or q.unit not in (None, "currency", "cent", "pound") or \
                counts_things(words, q):
            continue
        used.add(qi)
        if q.unit == "cent":
            return q.value / 100
        value = q.value
        if q.alt is not None and value >= 100:  # said digit by digit: "two ninety nine"
            value = value // 100 + (value % 100) / 100
        nxt = qs[qi + 1] if qi + 1 < len(qs) else None
        if q.unit in ("currency", "pound") and nxt is not None and nxt.start == q.end and \
                nxt.unit in (None, "cent") and nxt.value < 100:
            used.add(qi + 1)
            value += nxt.value / 100  # "3 euros 50"
        return value
    return None


def _fits(v: float, p: Param) -> bool:
    return (p.lo is None or v >= p.lo) and (p.hi is None or v <= p.hi)


def _in_unit(q: Quantity, p: Param) -> float | None:
    if q.unit is None:
        return None
    if q.unit == "percent":
        return q.value if p.percent_like else None
    if p.unit is None or p.unit == "percent":
        return None
    return units.convert(q.value, q.unit, p.unit)


def _range_words(text: str, p: Param, frac: Quantity | None) -> float | None:
    assert p.lo is not None and p.hi is not None
    low = " ".join(slots.words(text))
    lo_dir, hi_dir = p.lo_words - knowledge.MIN_WORDS, p.hi_words - knowledge.MAX_WORDS
    last_lo = max((pos for w in lo_dir for pos in _has(low, w)), default=-1)
    last_hi = max((pos for w in hi_dir for pos in _has(low, w)), default=-1)
    if last_lo < 0 and last_hi < 0:  # no direction said: "full speed", "to the minimum"
        last_lo = max((pos for w in p.lo_words for pos in _has(low, w)), default=-1)
        last_hi = max((pos for w in p.hi_words for pos in _has(low, w)), default=-1)
    span = p.hi - p.lo
    if frac is not None:
        share = frac.value
        if (p.percent_like and p.lo in (0, 1)) or p.unit == "percent":
            value = share * 100  # "half price" is 50 percent off, whatever the range
        else:
            value = p.lo + share * span
        if last_lo > last_hi and not re.search(
                r"\bto (?:about |around |roughly |only )?(?:a |one |two )?(?:quarter|third|"
                r"half|halfway)", low):  # "three quarters closed": from the open end;
            # "down to a quarter" is a quarter open
            value = p.hi - share * span if not p.percent_like else 100 - share * 100
        if p.unit == "percent" and not p.lo <= value <= p.hi:
            return None  # a share the range cannot take: asked, never clamped
        return max(p.lo, min(p.hi, value))
    if last_lo < 0 and last_hi < 0:
        return None
    return p.lo if last_lo > last_hi else p.hi
