"""Redaction before anything leaves the device (the cloud LLM sees placeholders, not data).

Placeholders rather than deletion: the cloud can still tell that an e-mail address or a phone
number was there, which is usually all it needs to answer. Every pattern is precompiled, has a
guard on its left so that it never starts in the middle of a word (which keeps the scan linear),
and is checked by a small function where a regex alone would over-match (Luhn for cards,
mod-97 for IBANs, shape rules for phone numbers). The stages run in a fixed order so that one
never re-matches another's placeholder: redacting twice gives the same text as redacting once.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REDACTED = "[redacted]"

# A left guard: not in the middle of a run of `chars`, except right after a JSON escape such as
# "\n" (text that is JSON-encoded still gets redacted). Letter-led patterns also refuse to start
# right after a backslash so that they never swallow the letter of an escape.
_ESC = r"(?<=\\[nrt])"


def _left(chars: str) -> str:
    return rf"(?:{_ESC}|(?<![\]{chars}]))"


_EMAIL = re.compile(_left(r"\w.%+\\-") + r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")

_JWT = re.compile(_left(r"A-Za-z0-9_\\-")
                  + r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(_left(r"A-Za-z0-9_\\") + r"([Bb]earer|BEARER)\s+([A-Za-z0-9._~+/=-]{8,})")
_KEYS = re.compile(
    _left(r"A-Za-z0-9_\\-")
    + r"(?:sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
      r"|xox[abprs]-[A-Za-z0-9-]{10,}|(?:AKIA|ASIA)[A-Z0-9]{16}|AIza[A-Za-z0-9_-]{30,})"
    r"(?![A-Za-z0-9_\[-])")
_LONG = re.compile(_left(r"A-Za-z0-9+/_\\-") + r"[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/=_\[-])")
_HEX = re.compile(r"[0-9a-fA-F]{32,}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

_IBAN = re.compile(_left(r"\w\\") + r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}")
# Cards as they are written: one run of 13-19 digits, 4-4-4-4(-1..3) or Amex's 4-6-5; a
# bounded shape, so a long list of numbers is not tried at every digit.
_CARD = re.compile(_left(r"\w+.,\\-")
                   + r"(?:[0-9]{13,19}|[0-9]{4}(?:[ -][0-9]{4}){3}(?:[ -][0-9]{1,3})?"
                     r"|[0-9]{4}[ -][0-9]{6}[ -][0-9]{4,5})(?![\w\[])")

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IP = re.compile(_left(r"\w.") + rf"(?:{_OCTET}\.){{3}}{_OCTET}(?![\w\[]|\.[0-9\[])")

# A group of a phone number never starts a date or a time: "0171 2345678 21:30" stops at 8.
_DATE_AT = (r"(?:[0-9]{4}[-./][0-9]{1,2}[-./][0-9]{1,2}|[0-9]{1,2}[-./][0-9]{1,2}[-./][0-9]{2,4})"
            r"(?![0-9]|[-.][0-9])")
_TIME_AT = r"[0-9]{1,2}:[0-9]{2}"
_PHONE = re.compile(
    rf"(?:{_ESC}|(?<![\w+./\\\]-])(?<![0-9\]]:))"
    r"(?:(?:\+[0-9]{1,3}(?:[ .-]?\([0-9]{1,4}\))?|\([0-9]{2,5}\))[ .-]?)?"
    rf"[0-9]+(?:[ .-](?!{_DATE_AT}|{_TIME_AT})[0-9]+)*(?![\w\[])")
_DATE_START = re.compile(_DATE_AT)
_GROUPS = re.compile(r"[ .-]")

# Words that name a secret. Used twice: the value after such a word is redacted ("the wifi
# password is hunter2"), and a dict key ending in one has its value redacted.
_SECRET_WORDS = (
    r"pass(?:word|wd|phrase|code|key)|pwd|pin(?:[ _-]?code)?"
    r"|(?:alarm|door|security|access|gate|garage|safe|lock|entry|unlock|verification|keypad)"
    r"[ _-]?code|(?:safe|lock)[ _-]?combination"
    r"|(?:wi-?fi|network|wlan)[ _-]?key"
    r"|(?:client[ _-]?|app[ _-]?)?secret(?:[ _-]?key)?"
    r"|api[ _-]?key|access[ _-]?key|private[ _-]?key"
    r"|(?:access[ _-]?|auth[ _-]?|refresh[ _-]?|bearer[ _-]?)?token"
    r"|bank[ _-]?account(?:[ _-]?number)?|account[ _-]?number|iban"
    r"|credit[ _-]?card(?:[ _-]?number)?|card[ _-]?number|cvv|cvc|otp"
)
# Text: a secret word, optionally a prepositional qualifier ("the code for the front door",
# "the password of the router"), a linking word, then the value. Bare "code", "key" and
# "combination" name other things too ("error code", "key to success"), so they need a value
# with a digit or a symbol (see _secret_value). Every repeat is bounded or unambiguous: the
# scan stays linear on long input.
_SP = r"[^\S\r\n]"
# A qualifier's word starts with a letter, or is a placeholder of a stage that runs before
# this one: never a number that a later stage replaces, nor this stage's own "[secret]", so
# that redacting again finds nothing new.
_WORD = r"(?:[^\W\d_]\w*(?:[.'\u2019-]\w+)*|\[(?:email|iban|card)\])"
# After a qualifier no "'s": "Anna's" is a word there, and two parses of one text could
# make redacting again find a value the first pass did not.
_QUAL_LINK = (
    rf"{_SP}*(?:[:=]|=>){_SP}*"
    rf"|{_SP}+(?:is|was|are|were|equals)(?:{_SP}+(?:now|still|set{_SP}+to|changed{_SP}+to))?"
    rf"(?:{_SP}*:)?{_SP}+"  # not "SP* :? SP+": quadratic on a run of spaces
    rf"|{_SP}+to{_SP}+be{_SP}+")
_LINK = rf"{_QUAL_LINK}|['\u2019]s{_SP}+"
_SECRET_VALUE = re.compile(
    _left(r"A-Za-z\\")
    + rf"(?P<noun>{_SECRET_WORDS}|(?<![\w.\\-])(?:code|key|combination))(?![A-Za-z])"
    rf"(?:(?P<qual>{_SP}+(?:for|of|to|on|at|in|from|into)(?:{_SP}+{_WORD}){{1,6}}?)"
    rf"(?P<link>{_QUAL_LINK})"
    rf"|(?P<sep>[\"']?{_SP}*(?:[:=]|=>){_SP}*|{_LINK}"
    rf"|{_SP}+(?:set{_SP}+to|changed{_SP}+to|to){_SP}+|{_SP}+))"
    r"(?:(?P<q>[\"'])(?P<qv>[^\"'\n\\\[\]]{1,200})(?P=q)"
    r"|\u201c(?P<cv>[^\u201d\n\\\[\]]{1,200})\u201d"
    r"|(?P<v>[^\s\"'`,;\[\]{}()<>\\\u201c\u201d]+))",
    re.IGNORECASE)
# "to" that starts a qualifier ("the key to the shed is ...") is never a separator
_QUALIFIER_TO = re.compile(rf"{_SP}+to(?:{_SP}+{_WORD}){{1,6}}?(?:{_QUAL_LINK})",
                           re.IGNORECASE)
# a number's further groups ("12 34 56") and a passphrase's further words
_DIGITS = re.compile(r"[0-9]+(?:-[0-9]+)*")
_DIGIT_TAIL = re.compile(rf"(?:{_SP}[0-9]{{2,}}(?:-[0-9]+)*(?![\w\[])){{0,8}}")
_PHRASE_TAIL = re.compile(rf"(?:{_SP}+[^\s\"'`,;.!?\[\]{{}}()<>\\]+){{0,8}}")
_AMBIGUOUS = frozenset(("code", "key", "combination"))
# the word before a bare "code" / "key" that makes it no secret
_NOT_SECRET_BEFORE = frozenset("""
zip area post postal error status exit return source country dial iso qr bar http response
colour color dress morse machine program programme sort primary foreign hot answer music
piano winning lucky cache hash partition lookup map dict translation shortcut
""".split())
_PREV_WORD = re.compile(r"([A-Za-z]+)[ \t_-]*$")
_SECRET_KEY = re.compile(rf"(?<![A-Za-z])(?:{_SECRET_WORDS})$", re.IGNORECASE)
_VALUE_TAIL = re.compile(r"[.!?:)]+$")
_NOT_A_SECRET = frozenset("""
a an the that this it its my your our their his her not no none in on at for to of as and or
is are was still now also so too very really same different new old changed changing reset
set wrong right correct incorrect valid invalid expired missing required needed unknown ok
okay fine good bad easy hard strong weak secure empty blank working stored saved written
printed taped taken used what which where here there below above being case sensitive
protected enabled disabled active locked unlocked high low off out under behind inside with
by from into about hidden lost gone broken why how who when because if but yes
""".split())

_MENTIONS_SECRET = re.compile(
    r"\b(?:pass(?:word|code|phrase|key)s?|pin(?:[ _-]?code)?s?"
    r"|(?:alarm|door|security|gate|garage|safe|lock|entry|access|keypad)[ _-]?codes?"
    r"|(?:safe|lock)[ _-]?combinations?|wi-?fi[ _-]?keys?"
    r"|secrets?|api[ _-]?keys?|tokens?|bank[ _-]?accounts?|ibans?|credit[ _-]?cards?)\b",
    re.IGNORECASE)

# A stage's checker: the match -> (end of the replaced span, replacement), (end, None) to keep
# the text up to end as it is, or None to keep the match and look again one character later.
_Check = Callable[[re.Match[str]], tuple[int, str | None] | None]


def _always(placeholder: str) -> _Check:
    return lambda m: (m.end(), placeholder)


def _bearer(m: re.Match[str]) -> tuple[int, str] | None:
    tok = m.group(2)
    if not (len(tok) >= 20 or any(c.isdigit() for c in tok)):
        return None  # "bearer of bad news"
    return m.end(), f"{m.group(1)} [secret]"


def _key(m: re.Match[str]) -> tuple[int, str] | None:
    s = m.group()
    if s.startswith("sk-") and "-" in s[3:] and not any(c.isdigit() for c in s):
        return None  # "sk-learn-is-not-a-key": hyphenated words
    return m.end(), "[secret]"


def _long(m: re.Match[str]) -> tuple[int, str] | None:
    return (m.end(), "[secret]") if _random_looking(m.group()) else None


def _random_looking(tok: str) -> bool:
    """Keys and hashes, not identifiers such as ``light.living_room_ceiling_lights_group_2``."""
    core = tok.rstrip("=")
    if _UUID.fullmatch(core):
        return False
    digits = sum(c.isdigit() for c in core)
    if _HEX.fullmatch(core):
        return 0 < digits < len(core)  # a hash, not a long number or "aaaa..."
    upper = sum(c.isupper() for c in core)
    lower = sum(c.islower() for c in core)
    letters = upper + lower
    alnum = digits + letters
    if not digits or not letters:
        return False
    if upper and lower:  # base64: cases mixed about evenly, unlike CamelCase
        return 0.2 <= upper / letters <= 0.8 and len(set(core)) >= 16
    return (len(core) - alnum <= 1 and digits >= 0.2 * alnum and letters >= 0.2 * alnum
            and len(set(core)) >= 12)


def _ends(m: re.Match[str], seps: str) -> list[int]:
    """Where a prefix of a match may end, longest first: before a separator, or at the end
    of the match unless a word goes on there (so no placeholder is glued to a word)."""
    raw, after = m.group(), m.string[m.end():m.end() + 1]
    ends = [i for i in range(len(raw) - 1, 0, -1) if raw[i] in seps and raw[i - 1].isalnum()]
    return ends if after and (after.isalnum() or after in "_[") else [len(raw), *ends]


def _iban(m: re.Match[str]) -> tuple[int, str] | None:
    raw = m.group()
    for end in _ends(m, " "):
        compact = raw[:end].replace(" ", "")
        if 15 <= len(compact) <= 34 and _mod97(compact):
            return m.start() + end, "[iban]"
    return None


def _mod97(iban: str) -> bool:
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _card(m: re.Match[str]) -> tuple[int, str] | None:
    raw = m.group()
    # 4-4-4-4 then a short group: a 19-digit card, or a 16-digit one and some other number
    for end in (len(raw), 19) if len(raw) > 19 and not raw.isdigit() else (len(raw),):
        if _luhn([int(c) for c in raw[:end] if c.isdigit()]):
            return m.start() + end, "[card]"
    return None


def _luhn(digits: list[int]) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _phone(m: re.Match[str]) -> tuple[int, str | None] | None:
    raw = m.group()
    # A phone number followed by a small number ("call 555-123-4567 3 times") is cut there;
    # a longer run (16 digits failing Luhn) is some other number, not a phone plus a tail,
    # and no part of it is looked at again.
    if sum(c.isdigit() for c in raw) > 15:
        return m.end(), None
    for end in _ends(m, " .-"):
        if _phone_shaped(raw[:end]):
            return m.start() + end, "[phone]"
    return None


def _phone_shaped(s: str) -> bool:
    """International with 8-15 digits, or a national form that no date, count or year has."""
    digits = sum(c.isdigit() for c in s)
    if s.startswith("+"):
        return 8 <= digits <= 15
    if not 7 <= digits <= 13 or _DATE_START.match(s):
        return False
    if s.startswith("("):
        return all(len(g) >= 2 for g in _GROUPS.split(s[s.index(")") + 1:].lstrip(" .-")))
    groups = _GROUPS.split(s)
    sizes = [len(g) for g in groups]
    if "." in s and (len(groups) < 3 or min(sizes) < 2):
        return False  # decimals and version numbers
    if len(groups) == 1:  # unseparated: only with a trunk or international prefix
        g = groups[0]
        return (g[:1] == "0" and g[1:2] != "0" and 10 <= len(g) <= 12) or (
            g[:2] == "00" and 11 <= len(g) <= 15)
    if min(sizes) < 2:  # 1-800-555-1234, but not "1 000 000" or "1 2 3 4 5 6 7"
        return groups[0] == "1" and sizes[1:] == [3, 3, 4]
    if groups[0].startswith("0"):
        return True
    if len(groups) == 2:
        return sizes == [3, 4]  # 555-1234, but not 1999-2005
    if sizes[0] <= 3 and all(n == 3 for n in sizes[1:]):
        return False  # 12 345 678: thousands
    if sizes[-1] < 3:
        return False  # 10 20 30 40
    return not all(n == 4 and g[:2] in ("19", "20") for g, n in zip(groups, sizes, strict=True))


def _secret_value(m: re.Match[str]) -> tuple[int, str] | None:
    noun = m.group("noun").lower()
    link = m.group("link") if m.group("qual") is not None else m.group("sep")
    words = re.findall(r"[a-z]+|[:=]", link.lower())
    text = m.string
    quoted = m.group("qv") is not None or m.group("cv") is not None
    if quoted:
        g = "qv" if m.group("qv") is not None else "cv"
        value, start, end = m.group(g), m.start(g), m.end(g)
    else:
        value, start = m.group("v"), m.start("v")
        tail = _VALUE_TAIL.search(value)
        if tail:
            value = value[:tail.start()]
        end = start + len(value)
        if _DIGITS.fullmatch(value):  # "12 34 56": the whole number
            end = _match_end(_DIGIT_TAIL, text, end)
        elif noun == "passphrase" and not tail:  # "correct horse battery staple"
            end = _match_end(_PHRASE_TAIL, text, end)
            value = text[start:end]
    lowered = value.strip().lower()
    if not lowered or all(w in _NOT_A_SECRET for w in lowered.split()):
        return None
    if noun == "secret" and m.group("qual") and value.isalpha():
        return None  # "the secret to good coffee is fresh beans"
    if noun in _AMBIGUOUS:  # "error code 404", "the key to success is patience"
        before = _PREV_WORD.search(text, max(0, m.start() - 24), m.start())
        if before and before.group(1).lower() in _NOT_SECRET_BEFORE:
            return None
        if not quoted and value.isalpha():
            return None
        if link.startswith(("\"", "'")) and not _DIGITS.fullmatch(value):
            return None  # {"key": "light.kitchen"} names a thing; {"code": "4471"} is one
    if not words:  # "door code 4471": a bare space only before a number
        if not (value.isdigit() and 4 <= len(value) <= 12):
            return None
    elif words[0] in ("to", "set", "changed") and words[:2] != ["to", "be"] and not any(
            c.isdigit() for c in value):
        return None  # "send the token to alice"
    if words[:1] == ["to"] and m.group("qual") is None and _QUALIFIER_TO.match(
            text, m.end("noun")):
        return None  # redacted as "<noun> to <qualifier> is <value>", or not at all
    return end, text[m.start():start] + "[secret]"


def _match_end(pattern: re.Pattern[str], s: str, pos: int) -> int:
    m = pattern.match(s, pos)
    return m.end() if m else pos


_STAGES: tuple[tuple[str, re.Pattern[str], _Check], ...] = (
    ("email", _EMAIL, _always("[email]")),
    ("secret", _JWT, _always("[secret]")),
    ("secret", _BEARER, _bearer),
    ("secret", _KEYS, _key),
    ("secret", _LONG, _long),
    ("iban", _IBAN, _iban),
    ("card", _CARD, _card),
    ("secret", _SECRET_VALUE, _secret_value),
    ("ip", _IP, _always("[ip]")),
    ("phone", _PHONE, _phone),
)


def _scrub(s: str) -> tuple[str, dict[str, int]]:
    counts: dict[str, int] = {}
    for kind, pattern, check in _STAGES:
        s, n = _run(pattern, check, s)
        if n:
            counts[kind] = counts.get(kind, 0) + n
    return s, counts


def _run(pattern: re.Pattern[str], check: _Check, s: str) -> tuple[str, int]:
    """re.sub with a checker that may refuse a match or replace only its prefix."""
    out: list[str] = []
    pos = last = n = 0
    while (m := pattern.search(s, pos)) is not None:
        hit = check(m)
        if hit is None:
            pos = m.start() + 1
            continue
        end, replacement = hit
        if replacement is None:
            pos = max(end, m.start() + 1)
            continue
        out += (s[last:m.start()], replacement)
        last = pos = end
        n += 1
    if not n:
        return s, 0
    out.append(s[last:])
    return "".join(out), n


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        total[k] = total.get(k, 0) + v


def is_sensitive(s: str) -> bool:
    """Whether a text should stay on the device (e.g. a memory marked private)."""
    return _scrub(s)[0] != s or _MENTIONS_SECRET.search(s) is not None


@dataclass
class Redactor:
    """What to blank before a request goes to the cloud: configured fields and built-in patterns.

    ``fields`` are dotted paths into the envelope's ``data`` (``"owner.name"``), matched
    case-insensitively on keys; lists along the path are looked into element by element.
    """

    fields: list[str] = field(default_factory=list)
    patterns: bool = True

    def __post_init__(self) -> None:
        self._paths = {tuple(p.lower() for p in f.split(".")) for f in self.fields if f}

    def text(self, s: str) -> tuple[str, dict[str, int]]:
        """``s`` with the built-in patterns replaced, and how many of each kind."""
        if not self.patterns or not s:
            return s, {}
        return _scrub(s)

    def data(self, d: dict[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, int]]:
        """A deep copy with configured fields blanked and every string value redacted."""
        if d is None:
            return None, {}
        counts: dict[str, int] = {}
        return self._walk(d, (), counts, self._paths), counts

    def messages(self, msgs: list[dict[str, Any]]
                 ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """OpenAI chat messages with every text and tool-call argument redacted (new list)."""
        counts: dict[str, int] = {}
        out: list[dict[str, Any]] = []
        for msg in msgs:
            if not isinstance(msg, dict):
                out.append(copy.deepcopy(msg))
                continue
            new = dict(msg)
            content = msg.get("content")
            if isinstance(content, str):
                new["content"] = self._text_into(content, counts)
            elif isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
                new["content"] = [self._part(p, counts) for p in content]
            calls = msg.get("tool_calls")
            if msg.get("role") == "assistant" and isinstance(calls, list):
                new["tool_calls"] = [self._call(c, counts) for c in calls]
            out.append(new)
        return out, counts

    # -- internals -------------------------------------------------------------------------

    def _text_into(self, s: str, counts: dict[str, int]) -> str:
        s, c = self.text(s)
        _add(counts, c)
        return s

    def _part(self, part: Any, counts: dict[str, int]) -> Any:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            return {**part, "text": self._text_into(part["text"], counts)}
        return copy.deepcopy(part)

    def _call(self, call: Any, counts: dict[str, int]) -> Any:
        if not (isinstance(call, dict) and isinstance(call.get("function"), dict)):
            return copy.deepcopy(call)
        fn = dict(call["function"])
        if isinstance(fn.get("arguments"), str):
            fn["arguments"] = self._arguments(fn["arguments"], counts)
        return {**call, "function": fn}

    def _arguments(self, args: str, counts: dict[str, int]) -> str:
        """JSON arguments stay valid JSON: redacted value by value, re-encoded only if changed."""
        try:
            parsed = json.loads(args)
        except (ValueError, RecursionError):
            return self._text_into(args, counts)
        if not isinstance(parsed, dict | list):
            return self._text_into(args, counts)
        c: dict[str, int] = {}
        walked = self._walk(parsed, (), c, set())
        if not c:
            return args
        _add(counts, c)
        return json.dumps(walked, ensure_ascii=False)

    def _walk(self, v: Any, path: tuple[str, ...], counts: dict[str, int],
              paths: set[tuple[str, ...]]) -> Any:
        if isinstance(v, dict):
            out = {}
            for k, item in v.items():
                here = (*path, str(k).lower())
                if here in paths:
                    out[k] = REDACTED
                    counts["field"] = counts.get("field", 0) + 1
                elif self.patterns and _secret_keyed(str(k), item):
                    out[k] = "[secret]"
                    counts["secret"] = counts.get("secret", 0) + 1
                else:
                    out[k] = self._walk(item, here, counts, paths)
            return out
        if isinstance(v, list | tuple):
            return type(v)(self._walk(item, path, counts, paths) for item in v)
        if isinstance(v, str):
            return self._text_into(v, counts)
        return copy.deepcopy(v)


def _secret_keyed(key: str, value: Any) -> bool:
    """``{"wifi_password": "hunter2"}``: the key says what the value is, the value alone can't."""
    if not _SECRET_KEY.search(key):
        return False
    if isinstance(value, str):
        return bool(value.strip()) and value != "[secret]"
    # {"pin": 17} is a GPIO pin; PINs and codes have 4+ digits
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1000
