"""MQTT topic helpers: filter matching, the device a topic names, the topics edged uses."""

from __future__ import annotations

from dataclasses import dataclass


def matches(filter_: str, topic: str) -> bool:
    """MQTT filter matching with + and #; $-topics never match a leading wildcard."""
    if filter_.startswith("$share/"):
        filter_ = filter_.split("/", 2)[2]
    if topic.startswith("$") and filter_[:1] in ("+", "#"):
        return False
    f, t = filter_.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(f) == len(t)


def wildcard_levels(filter_: str, topic: str) -> list[str]:
    """The topic levels that the filter's + wildcards matched."""
    f, t = filter_.split("/"), topic.split("/")
    return [t[i] for i, level in enumerate(f) if level == "+" and i < len(t)]


def is_publishable(topic: str) -> bool:
    return bool(topic) and not any(c in topic for c in "+#\x00") and len(topic.encode()) < 65535


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics under the configured prefix."""

    prefix: str

    @property
    def inbound(self) -> str:
        return f"{self.prefix}/in/+"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}/dlq"

    def out(self, device: str) -> str:
        return f"{self.prefix}/out/{device}"

    def event(self, kind: str) -> str:
        return f"{self.prefix}/events/{kind}"

    def inbound_device(self, topic: str) -> str | None:
        head = f"{self.prefix}/in/"
        if topic.startswith(head) and "/" not in topic[len(head):] and topic[len(head):]:
            return topic[len(head):]
        return None

    def reply_to_error(self, topic: str, route_filters: list[str]) -> str | None:
        """Why a requested reply topic is refused (loops, wildcards, system topics)."""
        if not is_publishable(topic):
            return "reply topic must be a non-empty topic without wildcards"
        if topic.startswith("$"):
            return "reply topic must not be a $-topic"
        if matches(self.inbound, topic) or topic.startswith(f"{self.prefix}/in/"):
            return "reply topic must not be an edged input topic"
        if topic in (self.status, self.dlq) or topic.startswith(f"{self.prefix}/events/"):
            return "reply topic must not be an edged system topic"
        for f in route_filters:
            if matches(f, topic):
                return f"reply topic must not match the route {f!r} (it would loop)"
        return None
