"""Processing stages: the agents that turn a request into a reply."""

from .base import Context, Stage
from .echo import EchoAgent

__all__ = ["Context", "EchoAgent", "Stage"]
