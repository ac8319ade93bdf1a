"""Redaction: what must not leave the device is replaced before anything goes to a cloud.

Patterns (placeholders in brackets): e-mail addresses ``[email]``, API keys / tokens / JWTs /
long hex or base64 strings and the value after a secret word ("the alarm code is 4471",
"password=abc") ``[secret]``, payment card numbers (Luhn-checked) ``[card]``, IBANs
``[iban]``, IPv4 addresses ``[ip]``, phone numbers ``[phone]`` (7+ digits in phone-like
groups; times, dates, temperatures, percentages, years and short codes stay). Configured
envelope fields (dotted paths into ``data``) become ``"[redacted]"``.

The order matters: secrets and cards before phones, so that a card number is not half a
phone number. Redacting twice gives the same text as once.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_TOKEN = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{16,}|ghp_[A-Za-z0-9]{20,}|xox[bpas]-[A-Za-z0-9-]{10,}|"
    r"AKIA[0-9A-Z]{16}|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})\b|"
    r"(?<=\bBearer )[A-Za-z0-9._~+/=-]{8,}")
_LONG = re.compile(r"\b(?=[A-Za-z0-9+/_-]*\d)(?=[A-Za-z0-9+/_-]*[A-Za-z])"
                   r"[A-Za-z0-9+/_-]{32,}={0,2}")
_SECRET_WORDS = (r"password|passwort|passcode|passphrase|pin(?: code| number)?|"
                 r"(?:alarm|door|gate|garage|safe|security|access|wifi|wi-fi) code|"
                 r"secret|api key|token")
_SECRET_VALUE = re.compile(
    rf"(\b(?:{_SECRET_WORDS})\b(?:\s+(?:is|was|=|:)|\s*[:=])\s*)"
    r"(?!\[)([^\s,;.!?]+(?:\.[^\s,;.!?]+)*)", re.I)
_SENSITIVE = re.compile(
    rf"\b(?:{_SECRET_WORDS}|bank account|iban|credit card|card number)\b", re.I)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_IP = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_PHONE = re.compile(
    r"(?<![\w.:/-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,5}\)[\s.-]?)?\d{2,5}(?:[\s.-]\d{2,8}){1,4}"
    r"(?![\w:/-]|\.\d)|(?<![\w.:/+-])\+?\d{7,15}(?![\w:/-]|\.\d)")
_NOT_PHONE_AFTER = re.compile(r"^\s*(?:degrees?|°|%|percent|minutes?|mins?|hours?|seconds?|"
                              r"kwh|kw|w\b|v\b|mb|gb|km|m\b|cm|kg|lux)", re.I)


def _luhn(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = int(ch)
        if alt:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        alt = not alt
    return total % 10 == 0


def _phone_like(m: re.Match[str], text: str) -> bool:
    s = m.group(0)
    digits = re.sub(r"\D", "", s)
    if len(digits) < 7 or len(digits) > 15:
        return False
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s.strip()):  # a date
        return False
    return not _NOT_PHONE_AFTER.match(text[m.end():])


@dataclass
class Redactor:
    fields: list[str] = field(default_factory=list)
    patterns: bool = True

    def text(self, s: str) -> tuple[str, dict[str, int]]:
        """``s`` with everything sensitive replaced, and how many of each kind."""
        counts: dict[str, int] = {}
        if not self.patterns or not s:
            return s, counts

        def sub(kind: str, pattern: re.Pattern[str], text: str,
                keep: Any = None, group: int = 0) -> str:
            def repl(m: re.Match[str]) -> str:
                if keep is not None and not keep(m, text):
                    return m.group(0)
                counts[kind] = counts.get(kind, 0) + 1
                if group:
                    return m.group(1) + f"[{kind}]"
                return f"[{kind}]"
            return pattern.sub(repl, text)

        s = sub("email", _EMAIL, s)
        s = sub("secret", _TOKEN, s)
        s = sub("secret", _SECRET_VALUE, s, group=1)
        s = sub("secret", _LONG, s)
        s = sub("iban", _IBAN, s, keep=lambda m, _t: bool(re.search(r"\d{6}", m.group(0)
                                                                     .replace(" ", ""))))
        s = sub("card", _CARD, s, keep=lambda m, _t: _luhn(re.sub(r"\D", "", m.group(0))))
        s = sub("ip", _IP, s)
        s = sub("phone", _PHONE, s, keep=_phone_like)
        return s, counts

    def data(self, d: dict[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, int]]:
        """A copy of envelope data with the configured fields blanked and strings redacted."""
        if d is None:
            return None, {}
        out = copy.deepcopy(d)
        counts: dict[str, int] = {}
        for path in self.fields:
            if _blank(out, [p for p in path.split(".") if p]):
                counts["field"] = counts.get("field", 0) + 1
        out = self._walk(out, counts)
        return out, counts

    def _walk(self, v: Any, counts: dict[str, int]) -> Any:
        if isinstance(v, str):
            if v == "[redacted]":
                return v
            t, c = self.text(v)
            _add(counts, c)
            return t
        if isinstance(v, dict):
            return {k: self._walk(x, counts) for k, x in v.items()}
        if isinstance(v, list):
            return [self._walk(x, counts) for x in v]
        return v

    def messages(self, msgs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                             dict[str, int]]:
        """OpenAI chat messages with every content and tool-call argument redacted."""
        counts: dict[str, int] = {}
        out = []
        for m in msgs:
            m = dict(m)
            if isinstance(m.get("content"), str):
                m["content"], c = self.text(m["content"])
                _add(counts, c)
            if isinstance(m.get("tool_calls"), list):
                calls = []
                for call in m["tool_calls"]:
                    call = copy.deepcopy(call)
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                        fn["arguments"], c = self.text(fn["arguments"])
                        _add(counts, c)
                    calls.append(call)
                m["tool_calls"] = calls
            out.append(m)
        return out, counts


def is_sensitive(s: str) -> bool:
    """A text that must never leave the device as is: it holds something the patterns
    redact, or it talks about a code, a password, a bank account..."""
    if _SENSITIVE.search(s):
        return True
    return Redactor().text(s)[0] != s


def _blank(d: Any, path: list[str]) -> bool:
    if not path or not isinstance(d, dict):
        return False
    key = next((k for k in d if str(k).lower() == path[0].lower()), None)
    if key is None:
        return False
    if len(path) == 1:
        d[key] = "[redacted]"
        return True
    return _blank(d[key], path[1:])


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        total[k] = total.get(k, 0) + v
