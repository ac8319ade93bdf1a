"""Free text out of a request: the message, the note, the items, without the words that
carry them ("a message saying ...", "put in the log that ...", "send ... up to 301").

In order: quoted words; what follows a colon; what follows a marker ("saying", "that says",
"to read", "that" after a frame); else the request minus its frame: command and carrier
words, the tool's own words (its name, its description's nouns), and the words other
arguments took (the room number, the practitioner), at either end. Leading articles stay
("a bottle of prosecco") unless they only introduce a frame word ("the kitchen").
"""

from __future__ import annotations

import re
from typing import Any

from ..tools.base import Tool
from . import knowledge, slots

_ARTICLES = {"the", "a", "an", "some"}
_PRONOUNS = {"we", "i", "you", "they", "he", "she", "it"}
_CARRIERS = {"please", "can", "could", "would", "will", "you", "i", "me", "us", "just", "also",
             "so", "to", "down", "that", "a", "an", "on", "in", "for", "my", "our", "jot",
             "write", "put", "add", "make", "remember", "remind", "need", "we", "we're",
             "we've", "i've", "i'm", "run", "out", "more", "get", "buy", "and", "of", "okay",
             "ok", "um", "uh", "send", "bring", "order", "want", "wants", "wanted", "like",
             "is", "are", "asking", "asked", "ask", "up", "from", "with", "at",
             "into", "onto", "let", "know", "tell", "them", "him", "her", "new", "quick",
             "now", "thanks", "thank", "right", "away", "there", "here", "this", "via",
             "over", "by", "go", "do", "please,", "kindly", "be", "there's", "have", "has",
             "they", "he", "she", "they're", "he's", "she's", "under", "named", "called",
             "about", "regarding", "re", "as", "per", "after", "before", "behind", "aside",
             "off", "let's", "lets", "too", "got", "any", "left", "still", "how", "what",
             "what's", "which", "many", "much"}
_MARKER = re.compile(r"(?:^|\s)(saying|that says|which says|(?:to|two|too) say|that reads|"
                     r"(?:sign|display|screen|board|speakers?|pa|tannoy) (?:say|says|read|show)|"
                     r"(?:to|two|too) read|"
                     r"with the words|the words|telling (?:them|him|her|everyone)|"
                     r"that)\s+(?=\S)", re.I)
_QUOTED = slots.QUOTED
_COLON = re.compile(r"(?<!\d):\s+(?=\S)|(?<=\d):\s+(?=[^\d\s])")
_TRAIL = re.compile(r"[\s,;.!?]+$")
# "Raise a ticket for 119034 - billing address needs updating": a dash sets a message off
_DASH = re.compile(r"\s[-\u2013\u2014]\s+(?=\S)")


def _without_said_args(tail: str, tool: Tool, param: str, found: dict[str, Any]) -> str:
    """A message's last clause that only says another argument ("..., priority high")
    belongs to that argument."""
    if "," not in tail:
        return tail
    head, last = tail.rsplit(",", 1)
    others = {w for n, v in found.items() if n != param
              for w in slots.words(f"{n.replace('_', ' ')} {v}")}
    words = slots.words(last)
    return head.strip() if words and set(words) <= others | {"is", "the", "please"} else tail


def _quoted(m: re.Match[str]) -> str:
    return (m.group(1) or m.group(2) or "").strip()


_BOOKINGS = {"appointment", "visit", "booking", "reservation", "session", "slot", "jab",
             "vaccination", "check-up", "checkup"}


def _choice_words(tool: Tool) -> set[str]:
    return {w for p in knowledge.of(tool).params.values() for c in p.choices or ()
            for w in slots.words(str(c))}


def frame_words(tool: Tool, param: str) -> set[str]:
    """Words that frame a value of ``param`` rather than belong to it: the tool's name,
    its plugin, the parameter's name, and what the tool's examples say around the value."""
    words = set(tool.name.replace(".", "_").split("_")) | set(param.split("_"))
    words |= {w for w in slots.words(tool.description) if len(w) > 3}
    for utterance, args in tool.example_pairs():
        value = str((args or {}).get(param, ""))
        rest = utterance.lower().replace(value.lower(), " ") if value else utterance.lower()
        words |= set(slots.words(rest))
    return words - _ARTICLES


# a parameter that names a thing from a catalogue: "the sourdough loaf" is "sourdough loaf"
_CATALOGUE = re.compile(r"^(item|items?_name|product|article|sku|dish|drink|ingredient)$", re.I)


# what things come in: "36 tubes of toothpaste" counts toothpaste
_CONTAINER = re.compile(r"(?i)^(?:tubes?|box(?:es)?|bottles?|packs?|packets?|bags?|tubs?|jars?|"
                        r"cans?|cartons?|sacks?|crates?|cases?|rolls?|bars?|loaves|"
                        r"kilos?|kilograms?|grams?|litres?|liters?|pieces?|dozen|units?|"
                        r"sheets?|tins?|pots?|trays?|sets?|pairs?)\s+of\s+(.+)$")
_WHEN_TAIL = re.compile(
    r"(?:\s+(?:this|last|yesterday|tomorrow) (?:morning|afternoon|evening|night)|"
    r"\s+(?:this|next) (?:week|weekend|month)|"
    r"\s+(?:today|tonight|yesterday|tomorrow|now|from now on|from today|right now|"
    r"each|apiece|please))+[\s.,!?]*$", re.I)


def span(text: str, tool: Tool, param: str, found: dict[str, Any]) -> str | None:
    """The free-text value of ``param`` in ``text``, or None."""
    return _tidy(_span(text, tool, param, found), text, tool, param)


def _tidy_name(value: str, text: str) -> str:
    """A person's name as written: without lowercase words before it in a written request
    ("see Kwabena Asante-Mensah"); "o connor" said is O'Connor."""
    toks = [t for t in value.split() if t.lower() not in ("um", "uh", "er", "erm")]
    if text != text.lower() and any(t[:1].isupper() for t in toks):
        while len(toks) > 1 and toks[0][:1].islower() and toks[0].lower() not in _NAME_PARTICLES:
            toks.pop(0)
    out = " ".join(toks)
    return re.sub(r"(?i)\bo\s+([a-z]{3,})\b", lambda m: f"{out[m.start()]}'{m.group(1)}", out)


def _tidy(value: str | None, text: str, tool: Tool, param: str) -> str | None:
    """A value found, less what carried it in the sentence."""
    if value:
        value = value.strip(" \u2014\u2013-,;:") or value  # "Tomasz Wiśniewski —"
    if value and not _MESSAGE.match(param):
        # "the garden kneelers, we miscounted": a clause after a comma is not the thing
        value = re.sub(r"(?i),\s+(?:we|we've|we're|i|i've|they|he|she|it|it's|that|that's|"
                       r"which|because|as|since|so|but)\b.*$", "", value) or value
        # "cinnamon buns this morning": when it happened is not part of the thing
        value = _WHEN_TAIL.sub("", value).strip() or value
        value = re.sub(r"(?:\s+(?:in|out|off|up|down|away|home|back))+$", "", value) or value
        if re.search(r"(?i)title|book|film|movie|album|song", param):
            # "Educated by Tara Westover": the title, not its author
            value = re.sub(r"\s+by\s+[A-Z][\w'-]+(?:\s+[A-Z][\w'-]+){0,2}$", "", value) or value
        if (m := re.match(r"^(.+?)\s+and\s+(?:the|a|an|his|her|its|their)\s+\w+$", value)) and \
                re.match(r"\s*(?:is|are|was|were|has|have|got|had)\b",
                         text[text.find(value) + len(value):] if value in text else ""):
            value = m.group(1)  # "the road and the cover is ripped": the title ends at "and"
        value = _without_doing(value)  # "borrowing Wolf Hall": the verb that carried it
        if m := _CONTAINER.match(value):
            value = m.group(1)  # "tubes of toothpaste": toothpaste
    if value and is_person(tool, param):
        value = _tidy_name(value, text)
    if value and (m := re.match(r"^(.+?)'s\s+(\w+)$", value)) and \
            m.group(2).lower() in frame_words(tool, param) | _choice_words(tool) | _BOOKINGS:
        value = m.group(1)  # "Max's appointment" names Max
    if value and (_CATALOGUE.match(param) or _names_thing(tool, param)):
        # "how many bags of compost", "six tins of Dulux": the thing, not how much of it
        value = re.sub(r"(?i)^(?:how many|how much|which|what)\s+", "", value) or value
        value = re.sub(r"(?i)^(?:the\s+)?(?:price|cost|stock|level|quantity)\s+of\s+", "",
                       value) or value  # "the price of the Voltarol gel"
        value = re.sub(r"(?i)\s+(?:count|level|stock|total|price)$", "", value) or value
        value = re.sub(r"(?i)^(?:the\s+)?(?:sale|offer|discount|promotion|deal|special)s?\s+"
                       r"(?:on|for)\s+(?:the\s+)?", "", value) or value  # "offer on the pots"
        value = re.sub(r"(?i)^(?:\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten|"
                       r"twelve|twenty|a few|some|several)\s+", "", value) or value
        if m := _CONTAINER.match(value):
            value = m.group(1)
        value = re.sub(r"(?i)^(?:all of the|all the|all|every|any|some|the)\s+", "", value)
        value = re.sub(r"(?i)\s+on (?:special|offer|sale|promotion)$", "", value) or value
    return value


def _span(text: str, tool: Tool, param: str, found: dict[str, Any]) -> str | None:
    text = text.strip()
    if (m := _QUOTED.search(text)) and len(_quoted(m).split()) >= 2:
        return _quoted(m)
    if is_person(tool, param) and _COLON.search(text) and \
            (name := _name_of(text, tool, param, found)):
        return name  # "Log a payment from Niamh Kelly: 300 euro": the name before the colon
    m = _COLON.search(text) or (_DASH.search(text) if _MESSAGE.match(param) else None)
    if m:
        tail = _TRAIL.sub("", text[m.end():])
        if tail and _MESSAGE.match(param):
            tail = _without_said_args(tail, tool, param, found)
        if tail and not _MESSAGE.match(param):
            # "Promo: 30 percent off nappy cream": the thing is in the tail, among the rest
            return _without_frame(tail, tool, param, found, verb_first=False) or tail
        if tail:
            return tail
    if is_person(tool, param) and (name := _name_of(text, tool, param, found)):
        return name  # "Check in Pumpkin please", "cancel it for Ginger"
    if _MESSAGE.match(param) and (after := _after_addressee(text, tool, param, found)):
        return after  # "tell Dr Okoye her 3 o'clock is here"
    marked_ = marked(text)
    if marked_:
        # "tell housekeeping that one thirteen would like a baby cot": the room's words
        # and the carrier ("would like") still frame it
        return _without_frame(marked_, tool, param, found, verb_first=False,
                              marked_text=True) or marked_
    return _without_frame(text, tool, param, found)


# ... and, leading a message after its person, these too ("Get Dr Okoye to the desk")
_ADDRESS_VERBS = knowledge.ADDRESS_VERBS | {"get", "remind", "warn", "alert", "email"}
_MESSAGE_LEAD = re.compile(
    r"^(?:(?:uh|um|er|please|urgently|urgent|now|quickly|asap|know|that|saying|say|and|to|"
    r"too)\b"
    r"[\s,:;-]*|(?:ask|tell|let) (?:him|her|them)(?: know| to| that)?\b[\s,:;-]*)+", re.I)


_PARTICLES = {"in", "out", "up", "back", "off", "down", "over", "on"}


def _name_of(text: str, tool: Tool, param: str, found: dict[str, Any]) -> str | None:
    """A name said for ``param``: where a person stands (see ``_after_role``), else right
    after the command's verb and its particle ("check in Pumpkin", "cancel Rocky")."""
    said = _LEAD_IN.sub("", text.strip())
    name = _after_role(said, tool, param, found)
    if name is None:
        name = _after_verb(said, tool)
    if name is None or not plausible(tool, param, name, found):
        return None
    if set(slots.words(name)) & (frame_words(tool, param) | _BOOKINGS | _choice_words(tool)):
        return None  # "the appointment", "the nurse": not a name
    return name


def _after_verb(said: str, tool: Tool) -> str | None:
    """The name right after the command's verb and its particle ("check in Pumpkin")."""
    toks = said.split()
    i = 0
    while i < len(toks) and _key(toks[i]) in _LEAD_WORDS | {"can", "could", "you", "would",
                                                              "will"}:
        i += 1
    if i >= len(toks) or not _verb_like(_key(toks[i]), tool):
        return None
    i += 1
    while i < len(toks) and _key(toks[i]) in _PARTICLES | _ARTICLES:
        i += 1
    return _name_run(toks, i)


def _after_addressee(text: str, tool: Tool, param: str, found: dict[str, Any]) -> str | None:
    """A message said after the person addressed ("tell Dr Okoye her 3 o'clock is here",
    "ping nurse kim and ask her to bring the scales"): the person is another argument the
    rules found; what follows, less the words that lead into it, is the message."""
    said = _LEAD_IN.sub("", text.strip())
    toks = said.split()
    if len(toks) < 3 or _key(toks[0]) not in _ADDRESS_VERBS:
        return None
    who: set[str] = set()
    for name, value in found.items():
        if name == param or not isinstance(value, str):
            continue
        who |= set(slots.words(value))
        who |= {w for a, v in tool.aliases.get(name, {}).items() if v == value
                for w in slots.words(a)}
    if not who:
        return None
    i = 1
    while i < len(toks) and _key(toks[i]) in _ARTICLES:
        i += 1
    start = i
    while i < len(toks) and (_key(toks[i]) in who or _key(toks[i]) in _NAME_PARTICLES):
        i += 1
        if toks[i - 1].endswith((",", ":", ";")):
            break
    if i == start or i >= len(toks):
        return None
    rest = _MESSAGE_LEAD.sub("", " ".join(toks[i:]).strip(" ,:;-")).strip(" ,:;-")
    rest = _TRAIL.sub("", rest)
    return rest if len(rest.split()) >= 2 else None


def trailing(text: str, tool: Tool, param: str, found: dict[str, Any]) -> str | None:
    """A clause after the command, set off by a comma ("send housekeeping to 119, they need
    extra pillows" -> "extra pillows"): for an optional note; at least two words."""
    if "," not in text:
        return None
    tail = text.rsplit(",", 1)[1]
    value = _without_frame(tail, tool, param, found, verb_first=False)
    return value if value and len(value.split()) >= 2 else None


_LET_KNOW = re.compile(r"(?i)^(?:[\w']+\s+){0,3}?let\s+(?:[\w']+\s+){1,5}?know\s+(?:that\s+)?(.+)")


def marked(text: str) -> str | None:
    """The text after an explicit marker ("saying ...", "that ..."), within the first eight
    words; None without one."""
    if m := _LET_KNOW.match(text):  # "let everyone in the shop know the bread is in"
        tail = _TRAIL.sub("", m.group(1))
        if tail:
            return tail
    for m in _MARKER.finditer(text):
        if len(text[:m.start()].split()) > 8:
            break
        if m.group(1).lower() == "that" and re.search(r"\b(is|was|are|were|so|now)\s*$",
                                                      text[:m.start()], re.I):
            continue  # "the door that is open": not a marker
        tail = _TRAIL.sub("", text[m.end():])
        if tail and len(tail.split()) >= 1:
            return tail
    return None


def _without_frame(text: str, tool: Tool, param: str, found: dict[str, Any], *,
                   verb_first: bool = True, verbs: bool = False,
                   marked_text: bool = False) -> str | None:
    """The value inside ``text``: the request is cut where something else stands (another
    argument's words or number, a time of day, the tool's own name and description words),
    each piece loses the frame at its ends, and the longest piece is the value
    ("book maria lopez in with dr patel on tuesday at 9:30" -> "maria lopez");
    ``verb_first``: the first word is the command's verb."""
    strong = _strong_words(tool, param)
    frame = _CARRIERS | frame_words(tool, param) | (_VERBISH if verbs else set())
    if marked_text:  # "... that the shop is closing now": the tool's words are the message's
        frame = _CARRIERS - {"now", "right", "away", "there", "here", "this", "that", "up",
                             "please"}  # "saying please keep dogs on leads": the sign's
    if not _MESSAGE.match(param):
        # the words another argument is described by ("half price" for a discount)
        # (its first sentence: "What the quantity counts. Rope by the metre; loose nails by
        # the kilo" does not make "nails" a unit's word)
        frame |= {w for n, d in tool.param_docs.items() if n != param and n in found
                  for w in slots.words(re.split(r"(?<=[.;])\s", d)[0]) if len(w) > 2}
    if not _MESSAGE.match(param):
        frame |= _BOOKINGS  # "cancel the appointment for whiskers"
    other: set[str] = set()
    for name, value in found.items():
        if name != param:
            other |= set(slots.words(str(value)))
            other |= {w for a, v in tool.aliases.get(name, {}).items() if v == value
                      for w in slots.words(a)}
    toks = text.split()
    keys = [_key(t) for t in toks]
    cut = _number_tokens(text, found, param, units_too=not marked_text) | \
        _time_tokens(text, found, param, tool) | _code_tokens(text, found, param, tool)
    if marked_text:
        strong = set()  # "to say the library closes at 1pm": the tool's words are the message's
    cut |= {i for i, k in enumerate(keys) if k in strong or k in other or toks[i] == "|"}
    cut |= {j for i in range(len(keys) - 1) if keys[i] + keys[i + 1] in strong
            for j in (i, i + 1)}  # "notice board" for the noticeboard
    v = 0  # the command's verb, after "let's", "can we", "please"
    while verb_first and v < len(keys) - 2 and keys[v] in _LEAD_WORDS | {
            "can", "could", "would", "will", "you", "we", "i", "just", "please"}:
        v += 1
    if verb_first and toks and keys[v] not in _ARTICLES and len(toks) > v + 1 and \
            not keys[v].isdigit() and toks[v] != "|" and (
                _verb_like(keys[v], tool) or keys[v + 1] in _ARTICLES | {"my", "our", "those",
                                                                       "these", "this"}):
        cut.add(v)  # the command verb ("text", "jot", "note") is never part of the value
    if not _MESSAGE.match(param) and not marked_text:
        # "two dozen eggs arrived from the farm": a thing ends where a clause begins
        cut |= {i for i, k in enumerate(keys) if k in _CLAUSE_VERBS}
    pieces: list[str] = []
    start = 0
    for end in [*sorted(cut), len(toks)]:
        if end > start:
            piece = _trim(toks[start:end], keys[start:end], frame | other)
            if piece:
                pieces.append(piece)
        start = end + 1
    # the longest piece of the right shape ("take" is a command, "stock boxes arrived" a
    # clause), else the longest
    shaped = [p for p in pieces if _shaped(p)] or pieces
    return max(shaped, key=lambda p: len(p.split()), default=None)


def _without_doing(value: str) -> str:
    """"borrowing Wolf Hall" -> "Wolf Hall": the verb that carried the thing goes."""
    first, _, rest = value.partition(" ")
    return rest if rest and _doing(first.lower()) else value


def _doing(word: str) -> bool:
    """An -ing form of a command verb ("borrowing", "taking"), never "baking soda"'s."""
    if not word.endswith("ing") or len(word) < 6:
        return False
    stem = word[:-3]
    verbs = {"borrow", "return", "reserve", "lend", "want", "need", "take", "get", "have",
             "buy", "order", "bring", "keep", "put"}
    return stem in verbs or stem + "e" in verbs or (len(stem) > 2 and stem[-1] == stem[-2]
                                                   and stem[:-1] in verbs)


def _verb_like(word: str, tool: Tool) -> bool:
    """A first word that can be the command's verb: a known command verb or one the
    tool's examples start with ("Wolf Hall came back", "Sourdough on offer" start with
    the thing instead)."""
    from .selector import tool_leads

    if word.endswith("ing") and len(word) > 5 and _verb_like(word[:-3], tool):
        return True  # "checking in rob fitzgerald"
    return word in _COMMANDS or word in knowledge.VERBS or word in knowledge.ACTION_VERBS \
        or word in knowledge.QUERY_VERBS or word in _VERBISH or word in _PERSON_VERBS or \
        word in _CARRIERS or word in tool_leads(tool) or word.endswith("ed")


def _shaped(value: str) -> bool:
    words = slots.words(value)
    if words and all(w in _ARTICLES or w in _WHEN_WORDS or w in _SPANS_OF_TIME
                     for w in words):
        return False  # "the last hour": when, not what
    return bool(words) and words[0] not in _COMMANDS and words[-1] not in _DANGLING and \
        not set(words) & _CLAUSE_VERBS


_SPANS_OF_TIME = {"hour", "hours", "minute", "minutes", "day", "days", "last", "first",
                  "moment", "while", "today"}


def _trim(toks: list[str], keys: list[str], frame: set[str]) -> str | None:
    """A piece without the frame words at its ends (leading articles stay, unless they only
    introduce a frame word: "the kitchen")."""
    def is_frame(k: str) -> bool:
        return k in frame or k == ""

    i, j = 0, len(toks)
    while i < j:
        k = keys[i]
        if k in _ARTICLES and i + 1 < j and is_frame(keys[i + 1]) and \
                keys[i + 1] not in _ARTICLES:
            i += 1
            continue
        if k in _ARTICLES or not is_frame(k):
            break
        if k in _PRONOUNS and not (i + 1 < j and is_frame(keys[i + 1])):
            break  # "we are home" is the message; "we need ..." is a frame
        i += 1
    while j > i and (is_frame(keys[j - 1]) or keys[j - 1] in _ARTICLES):
        j -= 1
    value = _TRAIL.sub("", " ".join(toks[i:j])).strip(" ,:;-")
    value = re.sub(r"'s$", "", value)  # "john smith's appointment" -> "john smith"
    return value or None


def _strong_words(tool: Tool, param: str) -> set[str]:
    """Words that end a value wherever they stand: the tool's name and description words
    (not the generic carriers, which may sit inside a value: "a bottle of prosecco")."""
    words = set(tool.name.replace(".", "_").split("_"))
    words |= {w for w in slots.words(tool.description) if len(w) > 3}
    words |= {w + "s" for w in words} | {w[:-1] for w in words if w.endswith("s")}
    return words - _CARRIERS - _ARTICLES - set(param.split("_"))


def _time_tokens(text: str, found: dict[str, Any], param: str, tool: Tool) -> set[int]:
    """Indexes of the words that said another argument's time of day."""
    from . import timeofday

    info = knowledge.of(tool)
    if any(p.when and n != param and n in found for n, p in info.params.items()) and \
            (when := timeofday.phrase(text)) is not None:
        t: timeofday.TimeSaid | None = timeofday.TimeSaid(0, 0, None, *when)
    elif not any(p.time_of_day and n != param and n in found
                 for n, p in info.params.items()):
        return set()
    else:
        t = timeofday.find(text)
    if t is None:
        return set()
    hits, pos = set(), 0
    low = text.lower()
    for ti, tok in enumerate(text.split()):
        at = low.find(tok.lower(), pos)
        end = at + len(tok)
        if at < t.end and end > t.start:
            hits.add(ti)
        if t.day and _key(tok) == t.day:
            hits.add(ti)
        pos = end
    return hits


def _code_tokens(text: str, found: dict[str, Any], param: str, tool: Tool) -> set[int]:
    """Indexes of the words that said another argument's identifier ("four four seven zero
    one two")."""
    from . import codes

    info = knowledge.of(tool).params
    values = {str(v) for n, v in found.items() if n != param and n in info and info[n].code}
    spans = [(c.start, c.end) for c in codes.find(text) if c.value in values]
    hits, pos = set(), 0
    for ti, tok in enumerate(text.split()):
        at = text.find(tok, pos)
        end = at + len(tok)
        if any(at < e and end > s for s, e in spans):
            hits.add(ti)
        pos = end
    return hits


def _key(token: str) -> str:
    return token.lower().strip(".,:;!?\"'()\u2014\u2013-")


def _number_tokens(text: str, found: dict[str, Any], param: str, *,
                   units_too: bool = True) -> set[int]:
    """Indexes (in ``text.split()``) of the words that said another argument's number."""
    from .fill import quantities

    values = {abs(float(v)) for k, v in found.items() if k != param and
              isinstance(v, int | float) and not isinstance(v, bool)}
    # a price said digit by digit ("six fifty") went in as 6.5
    values |= {round(v * 100) for v in list(values) if v != int(v)}
    if not values:
        return set()
    # quantities() counts word tokens; map them onto whitespace tokens by position; a
    # quantity said in a unit ("500 grams", "3 euro 75") went into an argument converted
    qs = quantities(text)
    spans = [(q.start, q.end) for i, q in enumerate(qs)
             if abs(q.value) in values or (q.alt is not None and abs(q.alt) in values)
             or (units_too and q.unit is not None and q.unit != "percent" and not q.fraction)
             or (i and qs[i - 1].unit in ("currency", "cent") and qs[i - 1].end == q.start)]
    hits: set[int] = set()
    wi = 0
    for ti, tok in enumerate(text.split()):
        n = len(slots.words(tok))
        size = re.fullmatch(r"(\d+)(?:\.\d+)?[a-zA-Z]+", _key(tok))
        if any(s < wi + n and wi < e for s, e in spans) and not (
                size and float(size.group(1)) not in values):
            hits.add(ti)  # (a size written onto its thing, "50mm round nails", stays)
        wi += n
    return hits


# -- several free-text arguments at once ("lend The Hobbit to Sarah Jones") ---------------

_PERSON = re.compile(r"\b(member|customer|patient|person|colleague|staff|guest|client|who|"
                     r"whom|recipient|borrower|owner|visitor|contact|caller|employee|"
                     r"student|user)\b|(^|_)name($|_)", re.I)
_MESSAGE = re.compile(r"^(message|note|notes|text|comment|comments|body|content|memo|"
                      r"remark|details|instructions|reason|summary|description|problem|"
                      r"issue|fault|complaint|request|subject|announcement)$", re.I)
_PERSON_VERBS = {"tell", "page", "message", "let", "ask", "call", "text", "email", "notify",
                 "remind", "ping", "buzz", "phone", "warn", "inform", "alert", "get"}
_TO_MESSAGE = re.compile(r"(?:(?:^|\s|,)(?:saying|that says|to say|and say|and tell (?:him|her|"
                         r"them)|that)|:)\s+", re.I)
# words that start a clause, not a name ("wants to take Atomic Habits home")
_VERBISH = {"take", "get", "have", "go", "come", "borrow", "read", "see", "keep", "bring",
            "collect", "pick", "make", "do", "be", "say", "know", "check", "return", "put",
            "give", "send", "leave", "drop", "call", "let", "use", "buy", "pay"}
_NAME_END = {"the", "a", "an", "that", "to", "too", "two", "and", "saying", "about", "is",
             "it's", "its", "his", "her", "their", "our", "we", "there", "please", "now",
             "can", "could", "will", "would", "no", "just", "know", "if", "when", "as"}
_LEAD_IN = slots.LEAD_IN


def is_person(tool: Tool, param: str) -> bool:
    """The parameter holds a person: by its name (``patient``, ``customer_name``) or by
    its description's first words ("Who to page", "The member's name"); "What to bring, in
    the guest's words" is not one."""
    doc = tool.param_docs.get(param, "").strip()
    if _names_thing(tool, param):
        return False  # "sku_or_name": an article's name
    head = re.match(r"(?i)(?:the |a |an )?([\w-]+)", doc)
    named = re.match(r"(?i)(?:the |a |an )?([\w-]+)'s (?:full |first )?name\b", doc)
    return bool(_PERSON.search(param) or (head and _PERSON.fullmatch(head.group(1))) or
                (named and named.group(1).lower() not in _THINGS and not _CATALOGUE.match(param)))


def _names_thing(tool: Tool, param: str) -> bool:
    """The parameter holds a thing's name: a catalogue word (item, product) or "The X's
    name" for a thing."""
    doc = tool.param_docs.get(param, "").strip()
    named = re.match(r"(?i)(?:the |a |an )?([\w-]+)'s (?:full |first )?name\b", doc)
    return bool(_CATALOGUE.match(param) or (named and named.group(1).lower() in _THINGS) or
                set(param.lower().split("_")) & {"item", "product", "article", "sku"} or
                re.match(r"(?i)(?:\w+ ){0,2}?(?:sku|barcode|product|article|item|dish)s?\b", doc))


# "The product's name" names a thing, not someone
_THINGS = {"product", "item", "article", "dish", "drink", "ingredient", "book", "title", "song",
           "track", "playlist", "file", "room", "zone", "device", "list", "place", "city",
           "street", "shop", "store", "company", "brand", "tool", "part", "recipe", "model",
           "sensor", "tank", "valve", "pump", "plant", "crop", "medicine", "drug"}


def assign(text: str, tool: Tool, params: list[str], found: dict[str, Any]) -> dict[str, str]:
    """Values for several free-text parameters of one request: a message after its marker
    ("saying", "that", ":"), a person after "to" / "for" / "from" or right after a verb that
    addresses one ("tell Tom ..."), and what is left (a title, the items) as the longest
    piece. Each is trimmed of its frame like a single value."""
    out: dict[str, str] = {}
    said = _LEAD_IN.sub("", text.strip())
    messages = [p for p in params if _MESSAGE.match(p)]
    persons = [p for p in params if p not in messages and is_person(tool, p)]
    rest = [p for p in params if p not in messages and p not in persons]
    if messages:
        q = _QUOTED.search(said)
        m = _TO_MESSAGE.search(said)
        if q and len(_quoted(q).split()) >= 2 and rest:
            pass  # quotes mark a title here ("Loan 'Gone Girl' to ..."): handled below
        elif m and m.end() < len(said):
            out[messages[0]] = _TRAIL.sub("", said[m.end():]).strip(" ,:;-\"'")
            said = said[:m.start()]
    if persons:  # "reserve the hunger games four zoe clark": a recogniser's "for"
        said = re.sub(r"\b(?:four|fore)\s+(?=(?:[A-Za-z'-]+\s*){1,3}$)", "for ", said)
    verb = said.split()[0].lower().strip(",:") if said.split() else ""
    for p in persons:
        who = _addressed(said) if verb in _PERSON_VERBS else None
        if who is None:
            who = _after_role(said, tool, p, {**found, **out})
        if who is None and p in tool.parameters.get("required", []) and \
                (after := _after_verb(said, tool)) and \
                plausible(tool, p, after, {**found, **out}) and not set(
                    slots.words(after)) & (_BOOKINGS | _choice_words(tool)):
            who = after  # "book uh biscuit in ...": the one booked
        if who:
            out[p] = who
            said = _remove(said, who)
    if messages and messages[0] not in out and persons and verb in _PERSON_VERBS:
        # "tell Tom the book van is here": the message is what follows the person, as said
        words = [w for w in said.split()[1:] if w != "|"]
        tail = " ".join(words).strip(" ,:;-")
        tail = _MESSAGE_LEAD.sub("", tail)  # "let priya know the ...", "tell helen too come"
        if tail:
            out[messages[0]] = _TRAIL.sub("", tail)
    for p in rest:
        q = _QUOTED.search(said)
        value = _quoted(q) if q else _without_frame(
            said, tool, p, {**found, **out}, verb_first=True, verbs=True)
        if value and not q:
            value = _without_doing(value)
        if value:
            out[p] = value
            said = _remove(said, value)
    return {k: v for k, v in out.items() if v}


def fill_texts(text: str, tool: Tool, texts: list[str],
               known: dict[str, Any]) -> dict[str, str] | str:
    """The free-text values of ``texts`` (required, still open) by rule, with any optional
    person the request names ("take back matilda from ruby"); a question when a value found
    cannot be what it names. Values not found are left out (for the model or a question)."""
    props = tool.parameters.get("properties", {})
    info_kinds = {n: slots._kind(p, tool.parameters.get("$defs", {}))[0]
                  for n, p in props.items()}
    extra = [n for n in props if n not in known and n not in texts and texts and
             info_kinds[n] == "string" and is_person(tool, n)]
    several = len(texts) + len(extra) > 1
    shared = assign(text, tool, texts + extra, known) if several else {}
    spans = {m: _tidy(shared.get(m), text, tool, m) if several else
             span(text, tool, m, known) for m in texts}
    out: dict[str, str] = {}
    for n in extra:
        if (v := shared.get(n)) and plausible(tool, n, v, {**known, **shared}):
            out[n] = v
    for m in texts:
        value = spans[m]
        if value and re.fullmatch(r"(?i)message|text|body|content|announcement", m) and \
                not _records(tool) and not _framed(text, tool):
            return f"Which {m} do you mean?"  # "is doctor okoye free on thursday": no message
        if value and _MESSAGE.match(m):
            value = _without_flags(_CHANNEL.sub("", value) or value, tool, known)
        if value and not plausible(tool, m, value, {**known, **spans}):
            return f"Which {m} do you mean?"  # a wrong call is worse than a question
        if value:
            out[m] = value
    return out


_SAYING_VERBS = {"say", "announce", "show", "display", "put", "write", "post", "set", "change",
                 "tell", "send", "message", "page", "text", "note", "add", "log", "record",
                 "update", "replace", "make", "jot", "type", "read", "broadcast"}


def _records(tool: Tool) -> bool:
    """The tool writes down what it is told (a note, a log entry): anything said is its
    text; one that shows or says it to others needs the text said as one."""
    return bool(re.search(r"(?i)\b(?:write|writes|note|notes|log|logs|record|records|jot|"
                          r"diary|journal|list)\b", f"{tool.short_name.replace('_', ' ')} "
                                                      f"{tool.description}"))


def _framed(text: str, tool: Tool) -> bool:
    """A message is said as one: in quotes, after a colon or a marker ("saying", "that"),
    after the person addressed, or after a verb of saying or the tool's own verb."""
    from .selector import lead_word, tool_leads

    if _QUOTED.search(text) or _COLON.search(text) or marked(text):
        return True
    lead = lead_word(text)
    toks = _LEAD_IN.sub("", text.strip()).split()
    if lead in _ADDRESS_VERBS and len(toks) > 1 and not knowledge.address_leads(tool) and (
            toks[1][:1].isupper() or _key(toks[1]) in _NAME_PARTICLES):
        return False  # "Text Mrs Hughes a reminder": someone this tool cannot reach
    return lead in _SAYING_VERBS | _ADDRESS_VERBS or lead in tool_leads(tool)


# "over the PA that we close at 1pm": the way it is said, not the message
_CHANNEL = re.compile(r"(?i)^(?:(?:over|on|through|via|across)\s+(?:the\s+)?(?:\w+\s+){0,2}?"
                      r"(?:pa|speakers?|tannoy|intercom|radio|loudspeakers?|system)\b"
                      r"(?:\s+that)?|(?:the\s+)?(?:pa|speakers?|tannoy|intercom|loudspeakers?)"
                      r"\s+that)[\s,:-]*")


def _without_flags(message: str, tool: Tool, known: dict[str, Any]) -> str:
    """A message less the clause that said a yes/no argument ("it's an emergency, water is
    leaking" -> "water is leaking" when the page was made urgent by those words)."""
    flags = {w for n, p in knowledge.of(tool).params.items() if p.kind == "boolean" and
             n in known for phrase in p.true_words | p.false_words for w in phrase.split()}
    flags -= {"yes", "no", "on", "off", "with", "a", "an"}
    if not flags:
        return message
    filler = {"it's", "its", "it", "is", "an", "a", "this", "please", "very", "really", "and"}

    def is_flag(segment: str) -> bool:
        words = slots.words(segment)
        return bool(words) and bool(set(words) & flags) and set(words) <= flags | filler

    parts = [p for p in re.split(r"\s*[,;:!]\s*", message) if p.strip()]
    while len(parts) > 1 and is_flag(parts[0]):
        parts.pop(0)
    while len(parts) > 1 and is_flag(parts[-1]):
        parts.pop()
    from .fill import _has

    out = ", ".join(parts)
    if (m := re.search(r"(?i)\s+and\s+(?:have|make|let|set|get)\s+(?:it|them)\s+(\w+)$", out)) \
            and any(_has(m.group(1).lower(), f) for f in flags):
        out = out[:m.start()]  # "closed for stocktake and have it scroll"
    words = out.split()
    # "... right now please it's urgent": the flag said at the end
    for cut in range(max(1, len(words) - 5), len(words)):
        if _key(words[cut]) in ("please", "it's", "its", "it", "this") and \
                is_flag(" ".join(words[cut:])):
            return " ".join(words[:cut]).rstrip(" ,;:")
    return out


def _addressed(said: str) -> str | None:
    """The person right after a verb that addresses one: "tell Tom the van is here"."""
    toks = said.split()[1:]
    name: list[str] = []
    for t in toks:
        k = _key(t)
        if k in _NAME_END or (name and k in _CARRIERS):
            break
        name.append(t.strip(",:;"))
        if t.endswith((",", ":", ";")) or len(name) == 3:
            break
    if name and name[0].lower() in ("mr", "mrs", "ms", "dr", "mister", "miss") and \
            len(name) == 1 and len(toks) > 1:
        name.append(toks[1].strip(",:;"))
    return " ".join(name) or None


def _after_role(said: str, tool: Tool, param: str, found: dict[str, Any]) -> str | None:
    """The person after "to" / "for" / "from" (the first such place where a name stands:
    "for three weeks" is a duration), in a list after the command ("Take an order: Pat
    Murphy, 2 apple tarts"), or the subject at the start ("Grace O'Neill wants ...",
    "anna wants six buns", "Sarah Jones brought back ...")."""
    toks = said.split()
    keys = [_key(t) for t in toks]
    # the tool's other parameters and the person's own title word end a name or lead it
    stop = {w for n in tool.parameters.get("properties", {}) if n != param
            for w in n.split("_")}
    lead = set(param.split("_")) | {"member", "customer", "patient", "guest", "client",
                                    "colleague", "staff", "mr.", "user"}
    # "owner is priya raman", "owner: Kwame Mensah", "the owner name is chen wei"
    if m := re.search(r"(?i)\b(?:his|her|their|the patient's|the customer's|the|my) name(?:'s| is)"
                      r"\s+(.+)", said):  # "the little boy ... his name is oliver wright"
        if (name := _name_run(m.group(1).split(), 0, stop=stop)) is not None:
            return name
    role = set(param.split("_")) - {"name"}
    if _is_pet(tool, param):
        role |= _ANIMALS  # "her rabbit Clover", "his cat Karamel"
    for i, k in enumerate(keys[:-1]):
        if k in role:
            j = i + 1
            while j < len(keys) - 1 and keys[j] in ("name", "is", "'s", "-", ":"):
                j += 1
            if (name := _name_run(toks, j, stop=stop)) is not None:
                return name
    for i, k in enumerate(keys[:-1]):
        if k in ("to", "for", "from", "four") and keys[i + 1] not in _VERBISH:
            j = i + 1
            while j < len(keys) - 1 and keys[j] in lead:
                j += 1  # "to member Jo Baxter"
            name = _name_run(toks, j, stop=stop)
            after = j + len(name.split()) if name else 0
            if k == "four" and name and after < len(keys) and not (
                    keys[after].isdigit() or keys[after] in slots._UNITS or
                    keys[after] in _NAME_END or keys[after] in _CLAUSE):
                continue  # "four loaves"; but "order four ahmed two baguettes": "for"
            if name is not None:
                return name
    for i, t in enumerate(toks[:-1]):
        if t.endswith(":") or (t == "-" and i > 0):  # "order: Pat Murphy, 2 apple tarts"
            if (name := _name_run(toks, i + 1, need_end=True)) is not None:
                return name
    start = 0
    while start < len(keys) and keys[start] in _LEAD_WORDS:
        start += 1
    for j in range(start + 1, min(start + 4, len(keys))):
        if keys[j] in _SUBJECT_VERBS:  # "anna wants ...", "Tom Reilly ordered ..."
            name = _name_run(toks[:j], start)
            if name is not None and len(name.split()) == j - start:
                return name
            break
    for i, t in enumerate(toks):  # "book Aiko Tanaka's cat Miso in": the owner
        if t.endswith("'s") and t[:1].isupper() and i + 1 < len(toks):
            j = i
            while j > 0 and toks[j - 1][:1].isupper() and _key(toks[j - 1]) not in _COMMANDS:
                j -= 1
            name = " ".join(toks[j:i] + [t[:-2]])
            if len(name.split()) <= 3:
                return name
    words = said.split()
    if len(words) > 2 and words[0][:1].isupper() and words[1][:1].isupper():
        return " ".join(w.strip(",") for w in words[:2])
    return None


_ANIMALS = {"cat", "dog", "puppy", "kitten", "rabbit", "bunny", "hamster", "parrot", "bird",
            "horse", "pony", "tortoise", "turtle", "ferret", "budgie", "gerbil", "snake",
            "lizard", "pig", "goat", "cockatiel", "mouse", "rat", "chinchilla"}
_HUMAN_TITLES = {"mr", "mrs", "ms", "miss", "dr", "doctor", "nurse", "prof", "professor",
                 "sir", "madam"}


def _is_pet(tool: Tool, param: str) -> bool:
    """The parameter holds an animal's name (``pet``, "The animal's name")."""
    said = f"{param.replace('_', ' ')} {tool.param_docs.get(param, '')}".lower()
    return bool(re.search(r"\b(?:pet|pets|pet's|animal|animal's)\b", said))


# verbs that follow the person who does them ("anna wants", "Sarah Jones brought back")
_SUBJECT_VERBS = {"wants", "wanted", "would", "ordered", "orders", "needs", "needed", "is",
                  "has", "brought", "returned", "dropped", "came", "asked", "asks", "booked",
                  "called", "rang", "says", "said", "will", "just", "took", "borrowed",
                  "picked", "paid", "left", "arrived", "payed", "handed", "gave", "sent",
                  "transferred", "owes", "owed", "bought", "signed"}
_WHEN_WORDS = {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
               "today", "tomorrow", "tonight", "noon", "midday", "midnight", "morning",
               "afternoon", "evening", "night", "week", "weekend", "next", "this", "later",
               "january", "february", "march", "april", "june", "july", "august",
               "september", "october", "november", "december"}
_LEAD_WORDS = {"okay", "ok", "so", "um", "uh", "er", "erm", "right", "well", "oh", "hey",
               "please", "and", "now", "new", "|", "let's", "lets"}


def _name_run(toks: list[str], i: int, *, need_end: bool = False,
              stop: set[str] | None = None) -> str | None:
    """Up to four name words from ``toks[i]``: a name ends at punctuation, a number, an
    article, or a word that makes a clause ("for lucy twelve croissants" -> "lucy");
    ``need_end``: the run must end at punctuation (a list item: "Pat Murphy, 2 tarts")."""
    name: list[str] = []
    ended = False
    while i < len(toks) and _key(toks[i]) in ("uh", "um", "er", "erm"):
        i += 1
    for t in toks[i:i + 5]:
        k = _key(t)
        if not k or t in ("|", "-") or k.isdigit() or k in slots._UNITS or \
                (k.endswith("ing") and not t[:1].isupper() and len(k) > 5) or \
                k in slots._TENS or k in _WHEN_WORDS or k in (stop or ()) or \
                (k in _NAME_END and k not in _NAME_PARTICLES) or \
                (k in _CLAUSE and k not in _NAME_PARTICLES and not t[:1].isupper()) or \
                k in _CLAUSE_VERBS or k in _SUBJECT_VERBS:
            break
        name.append(t.strip(",:;.!?"))
        if re.search(r"[,:;.!?]$", t):
            ended = True
            break
    if not name or len(name) > 4 or (need_end and not ended):
        return None
    if len(name) == 1 and name[0].lower() in _NAME_PARTICLES:
        return None
    return " ".join(name)


def _remove(said: str, value: str) -> str:
    """``said`` without ``value``, a cut left where it stood (so that what was on either
    side never joins into one value)."""
    i = said.lower().find(value.lower())
    if i < 0:
        return said
    before = re.sub(r"(?i)\b(?:four|fore)\s+$", "", said[:i])  # a misheard "for" goes too
    return (before + " | " + said[i + len(value):]).strip()


# -- is a value what its parameter holds? ---------------------------------------------------

# words that make a clause, never part of a name ("Jones brought", "Ruby Patel, due back")
_CLAUSE = {"is", "are", "was", "were", "am", "be", "been", "has", "have", "had", "do", "does",
           "did", "will", "would", "should", "could", "can", "shall", "must", "may", "might",
           "please", "wants", "wanted", "went", "came", "come", "comes", "coming", "arrived",
           "brought", "returned", "ordered", "needs", "needed", "said", "says", "saying",
           "due", "back", "today", "tomorrow", "tonight", "yesterday", "now", "then", "this",
           "that", "these", "those", "it", "it's", "they", "we", "i", "you", "he", "she",
           "pick", "pickup", "collecting", "collect", "and", "or", "but", "so", "if", "when",
           "until", "because", "paid", "the", "a", "an", "of", "to", "for", "from", "with",
           "here", "there", "hes", "shes", "theyre", "its", "just", "too",
           "in", "on", "at", "by", "into", "about", "every", "all", "no", "not"}
# a person's name may carry these ("Mrs Okafor", "the Chen family", "van der Berg")
_NAME_PARTICLES = {"mr", "mrs", "ms", "miss", "mister", "dr", "doctor", "nurse", "prof",
                   "sir", "madam", "family", "de", "van", "der", "von", "da", "di", "la", "le",
                   "del", "bin", "al", "o", "mc", "st"}


def plausible(tool: Tool, param: str, value: str, others: dict[str, Any]) -> bool:
    """Whether a free-text ``value`` can be what ``param`` holds, by its shape alone: a
    person's name is a few name words (no clause, number or punctuation inside); no value
    repeats another free-text argument's words; a title or an item is not only frame.
    A value that fails is asked for, never sent: a wrong call is worse than a question."""
    words = slots.words(value)
    if not words:
        return False
    for name, other in others.items():
        if name == param or not isinstance(other, str) or not other.strip():
            continue
        if other.lower() in value.lower() or value.lower() in other.lower():
            return False  # two arguments took the same words
    if is_person(tool, param):
        if len(words) > 4 or re.search(r"\d|[,:;!?]\s", value + " "):
            return False
        toks = [t.strip(".,'") for t in value.split()]
        if {w.lower() for w in toks} & _NOBODY:
            return False  # "tell everyone ...": no one person
        if _is_pet(tool, param) and toks and toks[0].lower().rstrip(".") in _HUMAN_TITLES:
            return False  # "Mrs Novak rang - Peanut can't make it": Mrs Novak is no pet
        if toks and toks[0].lower() in _COMMANDS:
            return False  # "book": the command, not who it is for
        if any(t.lower() in _CLAUSE and not t[:1].isupper()
               for t in toks if t.lower() not in _NAME_PARTICLES):
            return False
        return True
    if set(words) <= {"all", "every", "everything", "any", "each", "both", "the", "them", "it",
                      "those", "these", "of"} and not _MESSAGE.match(param):
        return False  # "End all the sales": no one thing named
    if _MESSAGE.match(param):
        # a message says something: not one word the tool is described by ("Customer")
        frame = frame_words(tool, param) | _CARRIERS
        return len(words) > 1 or (words[0] not in frame and f"{words[0]}'s" not in frame)
    if not _shaped(value):
        return False  # "Jones brought", "the gruffalo checked out or": a clause, cut wrong
    if _names_thing(tool, param) and (
            len(words) > 6 or re.search(r"[,:;!?]\s", value + " ") or
            set(words[1:]) & {"to", "for", "from", "with", "at", "by", "until", "please"}):
        return False  # a product is a few words: "hay fever tablets from the wholesaler" is not
    frame = frame_words(tool, param) | _CARRIERS
    return any(w not in frame and w not in _ARTICLES for w in words)


_NOBODY = {"everyone", "everybody", "anyone", "anybody", "someone", "somebody", "nobody",
           "all", "whoever", "people", "staff", "it", "it's", "he", "she", "they", "this",
           "that", "there", "here", "who", "him", "her", "them"}
# a title or an item holding one of these was cut out of a clause
_CLAUSE_VERBS = {"is", "are", "was", "were", "am", "has", "have", "had", "will", "would",
                 "should", "could", "can", "please", "wants", "wanted", "went", "came",
                 "arrived", "brought", "returned", "ordered", "needs", "needed", "checked",
                 "dropped", "took", "gave", "come", "comes", "coming", "going", "today",
                 "tomorrow", "tonight", "yesterday", "now", "pick", "pickup", "collecting",
                 "it's", "they're", "we're", "i'm", "he's", "she's", "know", "due", "sold",
                 "bought", "used", "broke", "knocked", "lost", "received", "delivered",
                 "baked", "finished", "goes", "costs", "ends", "ending", "until", "till"}
_COMMANDS = {"rebook", "reschedule", "move", "push", "bump", "shift", "postpone",
             "turn", "set", "put", "make", "switch", "take", "give", "send", "add", "cancel",
             "change", "get", "bring", "tell", "page", "order", "book", "reserve", "lend",
             "return", "check", "mark", "record", "announce", "show", "clear", "open",
             "close", "start", "stop", "discount", "knock", "keep", "hold", "issue", "loan",
             "sign", "print", "log", "note", "register", "schedule"}
_DANGLING = {"it", "them", "him", "her", "or", "and", "to", "for", "with", "from", "by", "of",
             "the", "a", "an", "at", "on", "in", "but", "so", "saying", "says", "note"}
