"""Which device may do what: enforced in code before any tool runs or any payload field counts.

Rules come from ``[[acl]]``. ``match`` names a device (``kids-tablet``), a device by its input
topic (``edged/in/kids-tablet``: the same rule, so it follows the device onto every route it
can reach), or an MQTT topic filter (``home/+/say``: every message on it). Every rule that
matches a request applies:

- ``allow`` / ``deny`` are tool patterns (``locks.*``): a deny anywhere refuses; if any
  matching rule has an allow list, the tool must be in one of them; no rule: allowed (the
  agent's own ``tools`` list still limits what it can see). Admin actions (``models.*``)
  need an explicit allow: a device may not load or unload models by default.
- ``agents``: the agents an envelope's ``agent`` field may name (patterns; no rule with a
  list: any agent but the admin ones);
- ``max_priority``: how high an envelope's ``priority`` may go (default: the route's own);
- ``reply_to``: topic filters replies may go to besides ``<prefix>/out/<device>[/...]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from ..bus.topics import matches
from ..config import ACLRule

ADMIN_AGENTS = ("models",)  # built-in agents that act on the gateway itself


def _admin(name: str) -> bool:
    """An admin action (``models.load``) or a pattern written for them (``models.*``)."""
    return name.split(".", 1)[0] in ADMIN_AGENTS and "." in name


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str


class ACL:
    def __init__(self, rules: list[ACLRule], *, prefix: str = "edged") -> None:
        self.rules = rules
        self.inbound = f"{prefix}/in/"

    def _applies(self, rule: ACLRule, topic: str, device: str) -> bool:
        m = rule.match
        if m == device or m == f"{self.inbound}{device}":
            return True  # a device rule, however it was written
        if "/" in m or "+" in m or "#" in m:
            return matches(m, topic)
        return False

    def applicable(self, topic: str, device: str) -> list[tuple[int, ACLRule]]:
        return [(i, r) for i, r in enumerate(self.rules) if self._applies(r, topic, device)]

    def check(self, tool: str, *, topic: str, device: str) -> Decision:
        applicable = self.applicable(topic, device)
        for i, r in applicable:
            for pat in r.deny:
                if fnmatchcase(tool, pat):
                    return Decision(False, f"acl[{i}] ({r.match}) denies {pat}")
        if _admin(tool):  # only a pattern that names the admin tools opens them
            for _i, r in applicable:
                if any(_admin(pat) and fnmatchcase(tool, pat) for pat in r.allow):
                    return Decision(True, f"allowed by {r.match}")
            return Decision(False, "admin actions need an [[acl]] rule that allows them for "
                            "this device (allow = [\"models.*\"])")
        # allow lists of ordinary tools (a rule that only opens admin actions restricts none)
        allow_lists = [(i, r) for i, r in applicable
                       if any(not _admin(p) for p in r.allow)]
        for _i, r in allow_lists:
            if any(fnmatchcase(tool, pat) for pat in r.allow):
                return Decision(True, f"allowed by {r.match}")
        if allow_lists:
            names = ", ".join(f"acl[{i}]" for i, _ in allow_lists)
            return Decision(False, f"not in the allow list of {names}")
        return Decision(True, "no rule applies")

    def agent(self, agent: str, *, topic: str, device: str) -> Decision:
        """May the envelope's ``agent`` field choose ``agent`` for this device?"""
        lists = [(i, r) for i, r in self.applicable(topic, device) if r.agents]
        for _i, r in lists:
            if any(fnmatchcase(agent, pat) for pat in r.agents):
                return Decision(True, f"allowed by {r.match}")
        if lists:
            names = ", ".join(f"acl[{i}]" for i, _ in lists)
            return Decision(False, f"agent {agent!r} is not in the agents of {names}")
        if agent in ADMIN_AGENTS:
            # the admin agent checks each action itself (models.load ...); a device that may
            # do none of them may not address it either
            if any(_admin(p) and p.split(".")[0] == agent for _i, r in
                   self.applicable(topic, device) for p in r.allow):
                return Decision(True, "admin actions allowed")
            return Decision(False, f"the admin agent {agent!r} needs an [[acl]] rule that "
                            f"allows it for this device (allow = [\"{agent}.*\"])")
        return Decision(True, "no rule applies")

    def max_priority(self, default: int, *, topic: str, device: str) -> int:
        """The highest priority an envelope may ask for (it may always ask for less)."""
        caps = [r.max_priority for _i, r in self.applicable(topic, device)
                if r.max_priority is not None]
        return max([default, *caps])

    def reply_filters(self, *, topic: str, device: str) -> list[str]:
        return [f for _i, r in self.applicable(topic, device) for f in r.reply_to]
