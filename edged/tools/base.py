"""The Tool object: a typed function plus its JSON schema (``@tool`` marks the function;
it is part of the public plugin API, :mod:`edged.plugin`).

The schema comes from the signature (str, int, float, bool, Literal, Enum, Optional, lists,
msgspec Structs) through msgspec, and descriptions from the docstring (the first paragraph
describes the tool; an ``Args:`` section describes the parameters). Arguments are validated
with the same type before a tool runs: a tool is never called with arguments that fail its
schema.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

# the public plugin API lives in edged.plugin; re-exported here for older plugins and the core
from ..plugin import TOOL_ATTR, ToolContext, ToolError, tool

__all__ = ["TOOL_ATTR", "ArgumentError", "Tool", "ToolContext", "ToolCrashed", "ToolError",
           "make_tool", "parse_docstring", "tool"]


class ArgumentError(ToolError):
    pass


class ToolCrashed(ToolError):
    """A tool raised a BaseException (SystemExit, KeyboardInterrupt, ...): carried as an
    ordinary error so that it can never unwind the event loop and end the daemon."""

    def __init__(self, error: BaseException) -> None:
        what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        super().__init__(f"{what} (a tool may not end or interrupt the daemon)")


@dataclass
class Tool:
    """A registered tool. ``name`` is ``<plugin>.<function>`` (ACL patterns match it)."""

    name: str
    func: Callable[..., Any]
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    args_type: type
    is_async: bool
    timeout_s: float | None = None
    examples: list[Any] = field(default_factory=list)  # utterances or (utterance, args)
    # requests that sound alike but belong to another tool ("remind me to ..." is a note,
    # not a memory): a request nearer to these than to the examples is held against it
    not_examples: list[str] = field(default_factory=list)
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)  # arg -> {alias: value}
    param_docs: dict[str, str] = field(default_factory=dict)
    plugin: str = ""
    context_param: str | None = None  # the parameter that receives a ToolContext
    # sensitive: a cloud or multi-step plan may not run it without the device's confirmation
    confirm: bool = False
    reply: str | None = None  # the reply template (see edged.plugin.tool)

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Arguments converted to their declared types, or ArgumentError naming the field."""
        if not isinstance(arguments, dict):
            raise ArgumentError(f"{self.name}: arguments must be an object")
        try:
            value: Any = msgspec.convert(arguments, self.args_type, strict=False)
        except msgspec.ValidationError as e:
            raise ArgumentError(f"{self.name}: invalid arguments: {e}") from None
        return {f: getattr(value, f) for f in self.args_type.__struct_fields__}  # type: ignore

    def example_pairs(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Examples as (utterance, expected arguments or None)."""
        out: list[tuple[str, dict[str, Any] | None]] = []
        for ex in self.examples:
            if isinstance(ex, str):
                out.append((ex, None))
            elif isinstance(ex, (tuple, list)) and len(ex) == 2:
                out.append((str(ex[0]), dict(ex[1])))
            elif isinstance(ex, dict) and "text" in ex:
                out.append((str(ex["text"]), ex.get("arguments")))
        return out

    def spec(self) -> dict[str, Any]:
        """OpenAI tool-calling format."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}


_ARGS_RE = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$", re.M)


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {param: description}) from a Google-style docstring."""
    doc = inspect.cleandoc(doc or "")
    m = _ARGS_RE.search(doc)
    head = doc[: m.start()] if m else doc
    description = " ".join(head.strip().split("\n\n")[0].split())
    params: dict[str, str] = {}
    if m:
        current = None
        for line in doc[m.end():].splitlines():
            if not line.strip():
                continue
            if re.match(r"^\S", line):
                break  # the next section (Returns:, Raises:) starts at the margin
            pm = re.match(r"^\s{1,8}(\w+)\s*(\([^)]*\))?\s*:\s*(.*)$", line)
            if pm and (current is None or len(line) - len(line.lstrip()) <= 4):
                current = pm.group(1)
                params[current] = pm.group(3).strip()
            elif current:
                params[current] = (params[current] + " " + line.strip()).strip()
    return description, params


def _schema(args_type: type, param_docs: dict[str, str]) -> dict[str, Any]:
    full = msgspec.json.schema(args_type)
    defs = dict(full.get("$defs", {}))
    root = defs.pop(args_type.__name__)
    root.pop("title", None)
    for name, prop in root.get("properties", {}).items():
        if name in param_docs and param_docs[name]:
            prop["description"] = param_docs[name]
    if defs:
        root["$defs"] = defs
        # nested refs point at #/$defs/...: keep them valid in the flattened root
    return root


def make_tool(func: Callable[..., Any], *, name: str | None = None,
              timeout_s: float | None = None, examples: list[Any] | None = None,
              aliases: dict[str, dict[str, str]] | None = None,
              not_examples: list[str] | None = None, plugin: str = "",
              confirm: bool = False, reply: str | None = None) -> Tool:
    sig = inspect.signature(func)
    hints = typing.get_type_hints(func, include_extras=True)
    fields: list[Any] = []
    context_param = None
    for p in sig.parameters.values():
        if hints.get(p.name) is ToolContext:
            context_param = p.name
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"tool {func.__name__}: *args/**kwargs are not allowed")
        if p.name not in hints:
            raise TypeError(f"tool {func.__name__}: parameter {p.name!r} needs a type hint")
        if p.default is inspect.Parameter.empty:
            fields.append((p.name, hints[p.name]))
        else:
            fields.append((p.name, hints[p.name], p.default))
    args_type = msgspec.defstruct(f"{func.__name__}_args", fields, forbid_unknown_fields=True,
                                  kw_only=True)
    description, param_docs = parse_docstring(func.__doc__)
    if not description:
        raise TypeError(f"tool {func.__name__}: a docstring describing the tool is required")
    return Tool(
        name=name or func.__name__, func=func, description=description,
        parameters=_schema(args_type, param_docs), args_type=args_type,
        is_async=asyncio.iscoroutinefunction(func), timeout_s=timeout_s,
        examples=list(examples or []), aliases=dict(aliases or {}), param_docs=param_docs,
        not_examples=[str(x) for x in (not_examples or [])],
        plugin=plugin, context_param=context_param, confirm=bool(confirm),
        reply=str(reply) if reply else None,
    )
