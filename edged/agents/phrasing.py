"""Replies in words, without a model: a tool's own template, else a sentence built from the
tool's name and its result ("The kitchen light is on, brightness 100."), never a key:value
dump.

A template is ``@tool(reply="The {room} lights are {on:on|off}.")``: fields are the call's
arguments and the result's keys (the result wins); ``{flag:yes|no}`` picks by truth. A
template that names a field the call does not have falls back to the generic sentence.
"""

from __future__ import annotations

import re
import string
from typing import Any

from ..messages import ToolCall
from ..tools.base import Tool
from .knowledge import group_of

# result keys that already hold the sentence to say
_SAY_KEYS = ("reply", "message", "text", "summary", "answer", "status_text")
# yes/no state words by the key's own group: running -> running / stopped
_STATE_WORDS: dict[str, tuple[str, str]] = {
    "power": ("on", "off"), "open": ("open", "closed"), "lock": ("locked", "unlocked"),
    "arm": ("armed", "disarmed"), "enable": ("on", "off"), "mute": ("muted", "unmuted"),
    "urgent": ("urgent", "not urgent"),
}
_RUNNING = {"running": ("running", "stopped"), "enabled": ("enabled", "disabled"),
            "active": ("active", "inactive")}
_LEAD_VERBS = {"set", "get", "turn", "check", "add", "put", "adjust", "fire", "book",
               "cancel", "page", "read", "show", "list", "start", "stop", "open", "close",
               "lock", "unlock", "make", "create", "delete", "remove", "update", "change",
               "toggle", "switch", "log", "send", "query", "find", "look", "lookup"}
_IDENTITY = {"room", "zone", "area", "name", "item", "machine", "device", "door", "patient",
             "staff", "location", "place"}
_QUERY_VERBS = {"get", "check", "read", "show", "list", "query", "find", "look", "lookup",
                "what", "status"}


class _Fields(string.Formatter):
    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if not field_name.isidentifier():  # no attribute or index walks: "{x.__class__}"
            raise KeyError(field_name)
        return super().get_field(field_name, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> str:
        if "|" in format_spec:
            yes, _, no = format_spec.partition("|")
            return yes if value else no
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return super().format_field(value, format_spec)


def render(calls: list[ToolCall], tools: dict[str, Tool]) -> str:
    """The reply to a plan's calls, one sentence each."""
    parts = [phrase(c, tools.get(c.tool)) for c in calls]
    return " ".join(p if p.endswith((".", "!", "?")) else p + "." for p in parts if p) \
        or "Done."


def phrase(call: ToolCall, tool: Tool | None) -> str:
    r = call.result
    if isinstance(r, dict) and "error" in r:
        if "confirm" in r:
            return str(r["error"])  # a sensitive tool waiting for the device's yes
        if len(r) == 1:
            return f"Sorry, {_noun(call.tool)} failed: {r['error']}"
    if tool is not None and tool.reply:
        fields = {**call.arguments, **(r if isinstance(r, dict) else {"result": r})}
        try:
            return _Fields().format(tool.reply, **fields)
        except (KeyError, IndexError, ValueError, AttributeError):
            pass  # the template names what this call lacks: the generic sentence
    return generic(call.tool, call.arguments, r)


def generic(name: str, arguments: dict[str, Any], result: Any) -> str:
    """A sentence from the tool's name and its result (or, without one, its arguments)."""
    if isinstance(result, str):
        return result
    if isinstance(result, list):
        if not result:
            return "Nothing yet"
        return "; ".join(_value(x) for x in result[:20])
    if not isinstance(result, dict):
        data = dict(arguments)
        if result is not None and not isinstance(result, bool):
            data["result"] = result
    else:
        data = result
    for k in _SAY_KEYS:
        if isinstance(data.get(k), str) and data[k].strip():
            return str(data[k])
    noun = _noun(name)
    names: list[str] = []
    states: list[str] = []
    numbers: list[str] = []
    others: list[str] = []
    for k, v in data.items():
        words = k.replace("_", " ")
        if isinstance(v, bool):
            states.append(_state(k, v))
        elif isinstance(v, int | float):
            numbers.append(f"{words} {_value(v)}")
        elif isinstance(v, str) and v and len(v.split()) <= 4 and not names and (
                k in arguments or k in _IDENTITY):
            names.append(v)  # what the call was about: "kitchen", "lathe"
        elif v not in (None, "", [], {}):
            others.append(f"{words} {_value(v)}")
    subject = " ".join([*names, noun]).strip() or noun
    query = name.rsplit(".", 1)[-1].split("_")[0] in _QUERY_VERBS
    if states:
        text = f"The {subject} is {_join(states)}"
        rest = numbers + others
        return text + (f", {', '.join(rest)}" if rest else "")
    if numbers and not query and len(numbers) == 1 and not others:
        return f"The {subject} is set to {numbers[0]}"
    rest = numbers + others
    if not rest:
        return f"Done: {subject}" if not query else f"{subject[:1].upper()}{subject[1:]}"
    return f"{subject[:1].upper()}{subject[1:]}: {', '.join(rest)}"


def _noun(name: str) -> str:
    """What a tool acts on, from its name: workshop.set_roller_door -> "roller door"."""
    words = name.rsplit(".", 1)[-1].split("_")
    if len(words) > 1 and words[0] in _LEAD_VERBS:
        words = words[1:]
    return " ".join(words)


def _state(key: str, value: bool) -> str:
    k = key.lower()
    if k in _RUNNING:
        return _RUNNING[k][0 if value else 1]
    hit = group_of(k) or group_of(re.sub(r"ed$", "", k))
    if hit is not None and hit[0] in _STATE_WORDS:
        yes, no = _STATE_WORDS[hit[0]]
        return yes if value == hit[1] else no
    words = k.replace("_", " ")
    return words if value else f"not {words}"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return ", ".join(f"{k.replace('_', ' ')} {_value(x)}" for k, x in list(v.items())[:6])
    if isinstance(v, list):
        return ", ".join(_value(x) for x in v[:10])
    return str(v)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
