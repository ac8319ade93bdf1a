"""Tools: the @tool decorator, plugin discovery, the ACL and the runner."""

from .base import ArgumentError, Tool, ToolContext, ToolError, make_tool, tool

__all__ = ["ArgumentError", "Tool", "ToolContext", "ToolError", "make_tool", "tool"]
