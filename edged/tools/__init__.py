"""Tools: the Tool object, plugin discovery, the ACL, the runner and the plugin outlet.

Plugins import the public API from :mod:`edged.plugin`; ``tool`` and ``ToolContext`` are
re-exported here so that older plugins (``from edged.tools import ToolContext``) keep working.
"""

from ..plugin import ToolContext, ToolError, tool
from .base import ArgumentError, Tool, make_tool

__all__ = ["ArgumentError", "Tool", "ToolContext", "ToolError", "make_tool", "tool"]
