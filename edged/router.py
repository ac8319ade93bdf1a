"""Message -> agent: an explicit agent in the envelope, then the route table, then the default.

The classifier over agent descriptions joins here with the agents issue.
"""

from __future__ import annotations

from dataclasses import dataclass

from .bus.topics import Topics, matches, wildcard_levels
from .config import RouteConfig


@dataclass(frozen=True, slots=True)
class Decision:
    agent: str
    priority: int
    confidence: float
    via: str  # envelope | route | default


AUTO = "@auto"  # decided after the journal, by the classifier over agent descriptions


class Router:
    def __init__(self, routes: list[RouteConfig], default_agent: str, topics: Topics,
                 *, classify: bool = False) -> None:
        self.routes = routes
        self.default_agent = default_agent
        self.topics = topics
        self.classify = classify  # several agents configured: let the classifier choose

    def route_for(self, topic: str) -> RouteConfig | None:
        for r in self.routes:
            if matches(r.topic, topic):
                return r
        return None

    def device_for(self, topic: str, route: RouteConfig | None) -> str:
        """The device a message speaks for, from the topic alone (the broker authenticates who
        may publish where; a payload field proves nothing): the last level of
        ``<prefix>/in/<device>``, else the route's first ``+`` level, else the route's
        configured ``device``, else its filter with ``/`` as ``-``. May be invalid (empty,
        too long): the caller checks it with :func:`edged.config.device_id_error`."""
        head = f"{self.topics.prefix}/in/"
        if topic.startswith(head) and (route is None or route.topic == self.topics.inbound):
            return topic[len(head):]
        if route is None:
            return ""
        if (levels := wildcard_levels(route.topic, topic)):
            return levels[0]
        if route.device:
            return route.device
        return route.topic.replace("/", "-").replace("#", "all").strip("-") or "route"

    def decide(self, route: RouteConfig | None, envelope_agent: str | None) -> Decision:
        priority = route.priority if route else 5
        if envelope_agent:
            return Decision(envelope_agent, priority, 1.0, "envelope")
        if route is not None:
            return Decision(route.agent, priority, 1.0, "route")
        if self.classify:
            return Decision(AUTO, priority, 0.0, "classifier")
        return Decision(self.default_agent, priority, 1.0, "default")
