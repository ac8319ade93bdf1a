"""Identifiers said in a request: account, order, ticket and serial numbers.

A string parameter described as a number, code, reference or ID holds what was written
("402138", "SO-44817", "#3301"), grouped ("55 18 09") or said digit by digit ("three three
one four four oh two", "eight eight oh for one six"); never the words around it, and never a
name: when no identifier was said, the parameter is asked for (a wrong account is worse
than a question).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import units

# a string parameter that holds an identifier ("The customer's account number")
_CODE_PARAM = re.compile(r"\b(?:number|id|identifier|code|reference|ref|serial|sku|barcode|"
                         r"registration|postcode|zip|pin|tracking)\b", re.I)
_DIGIT_WORDS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3",
                "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
                "nine": "9"}
# in a run of spelled digits, the recogniser's homophones ("oh for one six")
_SLIPS = {"for": "4", "to": "2", "too": "2", "won": "1", "ate": "8"}
_WRITTEN = re.compile(r"(?<![\w€$£.,:/-])#?([A-Za-z]{0,4}[-/]?\d[\dA-Za-z-]*)"
                      r"(?![\w%€$£]|[.,:]\d)")
_NOT_CODE = re.compile(r"^\d+(?:am|pm|st|nd|rd|th|h|k|m|s|x)$", re.I)
_AFTER_QUANTITY = {"am", "pm", "o'clock", "percent", "%", "euro", "euros", "dollar", "dollars",
                   "cent", "cents", "pound", "pounds", "quid", "bucks", "pence"}
_TOKEN = re.compile(r"[\w'#€$£%.:/-]+")


@dataclass(frozen=True)
class Code:
    value: str
    start: int  # character span in the text searched
    end: int


def _about(param: str, doc: str) -> str:
    return f"{param.replace('_', ' ')} {doc}"


def _keys(param: str, doc: str) -> set[str]:
    """The words a parameter is described by ("customer's" as "customer")."""
    return {re.sub(r"'s$", "", w) for w in re.findall(r"[a-z']+", _about(param, doc).lower())
            if len(w) > 2}


def is_code(name: str, doc: str, kind: str, choices: object) -> bool:
    """The parameter holds an identifier, not a name or a sentence."""
    said = _about(name, doc)
    return kind == "string" and not choices and bool(_CODE_PARAM.search(said)) and \
        not re.search(r"\bnam(?:e|es|ed)\b|\bwho\b|\bdescri", said, re.I)


def find(text: str) -> list[Code]:
    """Every identifier said, in order: written ones (three digits or more, or letters with
    digits; grouped digits joined) and runs of three or more spelled digits."""
    out: list[Code] = []
    toks = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    i = 0
    while i < len(toks):
        tok, start, end = toks[i]
        bare = tok.rstrip(".,:;!?")
        group = r"\d{2,6}" if bare.startswith("0") else r"\d{2,4}"  # (a phone: "07700 900123")
        if re.fullmatch(group, bare):  # "55 18 09": groups read out
            j = i
            parts: list[str] = []
            while j < len(toks) and re.fullmatch(group, toks[j][0].rstrip(".,:;!?")):
                parts.append(toks[j][0].rstrip(".,:;!?"))
                j += 1
            if len(parts) > 1 and sum(map(len, parts)) >= 5 and not _unit_after(toks, j):
                out.append(Code("".join(parts), start, toks[j - 1][2]))
                i = j
                continue
        low = bare.lower()
        if low in _DIGIT_WORDS:
            j = i
            digits: list[str] = []
            while j < len(toks):
                w = toks[j][0].rstrip(".,:;!?").lower()
                if w in _DIGIT_WORDS or (w in _SLIPS and digits and j + 1 < len(toks) and
                                         toks[j + 1][0].lower().rstrip(".,") in _DIGIT_WORDS):
                    digits.append(_DIGIT_WORDS.get(w) or _SLIPS[w])
                    j += 1
                    if toks[j - 1][0][-1:] in ",.;:!?":
                        break
                    continue
                break
            if len(digits) >= 3 and not _unit_after(toks, j):
                out.append(Code("".join(digits), start, toks[j - 1][2]))
                i = j
                continue
        m = _WRITTEN.fullmatch(tok.rstrip(".,:;!?)"))
        if m and not _NOT_CODE.match(m.group(1)) and not _unit_after(toks, i + 1):
            value = m.group(1).rstrip("-")
            n_digits = sum(c.isdigit() for c in value)
            if n_digits >= 3 or (n_digits and any(c.isalpha() for c in value)):
                end = start + len(tok.rstrip(".,:;!?)"))
                nxt = toks[i + 1][0].rstrip(".,:;!?") if i + 1 < len(toks) else ""
                if value[:1].isalpha() and tok[-1:].isalnum() and (
                        (value.isupper() and re.fullmatch(r"[A-Z]{2,3}", nxt)) or
                        (re.fullmatch(r"[a-z]{2}\d{2}", value) and re.fullmatch(r"[a-z]{3}", nxt)
                         and nxt not in _NOT_PLATE)):
                    # a number plate written in two groups: "AB12 CDE"
                    value = f"{value} {toks[i + 1][0].rstrip('.,:;!?')}"
                    end = toks[i + 1][1] + len(toks[i + 1][0].rstrip(".,:;!?"))
                    i += 1
                out.append(Code(value, start, end))
        i += 1
    return out


# three-letter words that do not end a plate written in lower case ("sn23 vua" does)
_NOT_PLATE = {"the", "and", "for", "are", "was", "has", "had", "can", "you", "its", "now",
              "too", "any", "all", "but", "not", "off", "out", "due", "set", "get", "put",
              "mot", "tue", "wed", "thu", "fri", "sat", "sun", "mon", "pls", "asap"}


def _unit_after(toks: list[tuple[str, int, int]], j: int) -> bool:
    """The number is a quantity: a unit follows it ("300 euro", "15 minutes")."""
    if j >= len(toks):
        return False
    nxt = toks[j][0].lower().rstrip(".,:;!?")
    return nxt in _AFTER_QUANTITY or (len(nxt) > 2 and nxt not in ("in", "and", "for") and
                                      units.said_unit(nxt) is not None)


def pick(codes: list[Code], text: str, param: str, doc: str) -> Code | None:
    """The identifier for ``param``: the only one said, else the one said right after the
    parameter's own words ("order 8120455"), else None (asked, never guessed). One said
    right after another label ("ticket 3198" for an account) is not this parameter's."""
    keys = _keys(param, doc)
    codes = [c for c in codes if not _foreign(_label(text, c), keys)]
    if len(codes) == 1:
        return codes[0]
    shapes = {_shape(c.value) for c in find(doc)}  # the description's own example
    if shapes and len(same := [c for c in codes if _shape(c.value) in shapes]) == 1:
        return same[0]  # "e.g. "AB12 CDE"": the plate, not the phone number
    near = [c for c in codes
            if set(re.findall(r"[a-z]+", text[max(0, c.start - 20):c.start].lower())) & keys]
    return near[0] if len(near) == 1 else None


# labels of one job, often said for one another ("order 42" for a ticket number)
_JOBISH = {"ticket", "order", "invoice", "booking", "reservation", "case", "job", "receipt",
           "transaction", "payment"}


def _foreign(label: str | None, keys: set[str]) -> bool:
    """``label`` names another kind of thing than the parameter described by ``keys``."""
    return label is not None and label in _LABELS - keys and not (
        label in _JOBISH and keys & _JOBISH)


# words that say what a number identifies ("ticket 3198", "order 8120455")
_LABELS = {"ticket", "order", "account", "invoice", "booking", "reservation", "case", "job",
           "room", "table", "customer", "member", "patient", "sku", "item", "product",
           "serial", "phone", "card", "parcel", "tracking", "flight", "policy", "claim",
           "contract", "licence", "license", "plate", "receipt", "transaction", "payment"}


_VERBS = {"give", "credit", "issue", "bring", "pull", "test", "diagnose", "resolve", "reopen",
          "close", "escalate", "ping", "try", "do"}  # with knowledge's action and query verbs


def _shape(value: str) -> str:
    """"AB12 CDE" -> "AA99 AAA"."""
    return re.sub(r"\d", "9", re.sub(r"[A-Za-z]", "A", value))


def _label(text: str, code: Code) -> str | None:
    """The word naming what the identifier is ("ticket" in "ticket #3301", "order" in
    "order number 7731906"), or None."""
    from .knowledge import ACTION_VERBS, QUERY_VERBS  # (knowledge imports this module)

    verbs = _VERBS | ACTION_VERBS | QUERY_VERBS
    if re.search(r":\s*$", text[:code.start]):
        return None  # "New booking: LF70 BXA": a heading, not a label
    before = re.findall(r"[a-z']+", text[:code.start].lower())
    while before and before[-1] in ("number", "no", "num", "id"):
        before.pop()
    if not before or (before[-1] in verbs and (
            len(before) == 1 or before[-2] in ("can", "could", "please", "you", "to"))):
        return None  # "Restart 559018's router": the command's verb, no label
    return re.sub(r"'s$", "", before[-1])


def labelled_elsewhere(text: str, value: float, param: str, doc: str) -> bool:
    """A whole number taken for an identifier parameter ("ticket: The ticket number") was
    said as another thing's ("the customer on 402138")."""
    if not _CODE_PARAM.search(_about(param, doc)):
        return False
    keys = _keys(param, doc) - {"the", "and", "for", "its", "our", "your"}
    for m in re.finditer(rf"(?<![\w.]){int(value)}(?![\w.])", text):
        before = re.findall(r"[a-z']+", text[:m.start()].lower())
        while before and before[-1] in ("on", "is", "number", "no", "num", "id", "the"):
            before.pop()  # "the customer on 402138", "account number 402138"
        if before and _foreign(re.sub(r"'s$", "", before[-1]), keys):
            return True
    return False
