"""Which device or topic may trigger which tool: enforced in code before any tool runs.

Rules come from ``[[acl]]``: ``match`` is an MQTT topic filter (matched against the request
topic) or a device id; ``allow`` / ``deny`` are tool patterns (``locks.*``). Every rule that
matches a request applies: a deny anywhere refuses; if any matching rule has an allow list,
the tool must be in one of them. No matching rule: allowed (the agent's own ``tools`` list
still limits what it can see).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from ..bus.topics import matches
from ..config import ACLRule


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str


class ACL:
    def __init__(self, rules: list[ACLRule]) -> None:
        self.rules = rules

    def _applies(self, rule: ACLRule, topic: str, device: str) -> bool:
        if rule.match == device:
            return True
        if "/" in rule.match or "+" in rule.match or "#" in rule.match:
            return matches(rule.match, topic)
        return False

    def check(self, tool: str, *, topic: str, device: str) -> Decision:
        applicable = [(i, r) for i, r in enumerate(self.rules)
                      if self._applies(r, topic, device)]
        for i, r in applicable:
            for pat in r.deny:
                if fnmatchcase(tool, pat):
                    return Decision(False, f"acl[{i}] ({r.match}) denies {pat}")
        allow_lists = [(i, r) for i, r in applicable if r.allow]
        if allow_lists:
            for _i, r in allow_lists:
                if any(fnmatchcase(tool, pat) for pat in r.allow):
                    return Decision(True, f"allowed by {r.match}")
            names = ", ".join(f"acl[{i}]" for i, _ in allow_lists)
            return Decision(False, f"not in the allow list of {names}")
        return Decision(True, "no rule applies")
