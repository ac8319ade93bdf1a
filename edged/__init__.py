"""edged: an event-driven AI daemon for edge gateways (MQTT in, small-model agents, MQTT out).

Importing ``edged`` stays light: heavy runtimes (llama.cpp, ONNX Runtime) load only when a
backend that needs them is used, and ``tool`` (the plugin API, :mod:`edged.plugin`) is
imported on first use, so that a model worker process (``edged.models.worker``) starts
without it (``edged.plugin`` is a leaf module: it never imports the tools package).
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .plugin import tool


def __getattr__(name: str) -> Any:
    if name == "tool":  # `from edged import tool`
        from .plugin import tool

        return tool
    raise AttributeError(f"module 'edged' has no attribute {name!r}")


__all__ = ["__version__", "tool"]
