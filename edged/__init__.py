"""edged: an event-driven AI daemon for edge gateways (MQTT in, small-model agents, MQTT out).

Importing ``edged`` stays light: heavy runtimes (llama.cpp, ONNX Runtime) load only when a
backend that needs them is used.
"""

__version__ = "0.1.0"

from .tools.base import tool  # noqa: E402  - the plugin API: `from edged import tool`

__all__ = ["__version__", "tool"]
