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
from . import slots

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
             "over", "by", "go", "do", "please,", "kindly", "be", "there's", "have", "has"}
_MARKER = re.compile(r"(?:^|\s)(saying|that says|which says|to say|that reads|to read|"
                     r"reading|with the words|the words|telling (?:them|him|her|everyone)|"
                     r"that)\s+(?=\S)", re.I)
_QUOTED = re.compile(r"[\"“‘']([^\"”’']{2,})[\"”’']")
_COLON = re.compile(r"(?<!\d):\s+(?=\S)")
_TRAIL = re.compile(r"[\s,;.!?]+$")


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


def span(text: str, tool: Tool, param: str, found: dict[str, Any]) -> str | None:
    """The free-text value of ``param`` in ``text``, or None."""
    text = text.strip()
    if (m := _QUOTED.search(text)) and len(m.group(1).split()) >= 2:
        return m.group(1).strip()
    if m := _COLON.search(text):
        tail = _TRAIL.sub("", text[m.end():])
        if tail:
            return tail
    marked_ = marked(text)
    if marked_:
        return marked_
    return _without_frame(text, tool, param, found)


def marked(text: str) -> str | None:
    """The text after an explicit marker ("saying ...", "that ..."), within the first eight
    words; None without one."""
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


def _without_frame(text: str, tool: Tool, param: str, found: dict[str, Any]) -> str | None:
    frame = _CARRIERS | frame_words(tool, param)
    other: set[str] = set()
    for name, value in found.items():
        if name != param:
            other |= set(slots.words(str(value)))
            other |= {w for a, v in tool.aliases.get(name, {}).items() if v == value
                      for w in slots.words(a)}
    numbers = _number_tokens(text, found, param)
    toks = text.split()
    keys = [_key(t) for t in toks]

    def is_frame(k: str, idx: int) -> bool:
        return k in frame or k in other or idx in numbers or k == ""

    i, j = 0, len(toks)
    if toks and keys[0] not in _ARTICLES and len(toks) > 1 and not keys[0].isdigit():
        i = 1  # the command verb ("text", "jot", "note") is never part of the value
    while i < j:
        k = keys[i]
        if k in _ARTICLES and i + 1 < j and is_frame(keys[i + 1], i + 1) and \
                keys[i + 1] not in _ARTICLES:
            i += 1  # "the kitchen bring ...": an article before a frame word goes with it
            continue
        if k in _ARTICLES or not is_frame(k, i):
            break
        if k in _PRONOUNS and not (i + 1 < j and is_frame(keys[i + 1], i + 1)):
            break  # "we are home" is the message; "we need ..." is a frame
        i += 1
    while j > i and (is_frame(keys[j - 1], j - 1) or keys[j - 1] in _ARTICLES):
        j -= 1
    value = _TRAIL.sub("", " ".join(toks[i:j])).strip(" ,:;-")
    return value or None


def _key(token: str) -> str:
    return token.lower().strip(".,:;!?\"'()")


def _number_tokens(text: str, found: dict[str, Any], param: str) -> set[int]:
    """Indexes (in ``text.split()``) of the words that said another argument's number."""
    from .fill import quantities

    values = {float(v) for k, v in found.items() if k != param and isinstance(v, int | float)
              and not isinstance(v, bool)}
    if not values:
        return set()
    # quantities() counts word tokens; map them onto whitespace tokens by position
    spans = [(q.start, q.end) for q in quantities(text)
             if q.value in values or (q.alt is not None and q.alt in values)]
    hits: set[int] = set()
    wi = 0
    for ti, tok in enumerate(text.split()):
        n = len(slots.words(tok))
        if any(s < wi + n and wi < e for s, e in spans):
            hits.add(ti)
        wi += n
    return hits
