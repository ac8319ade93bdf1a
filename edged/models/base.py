"""The model backend interface: one class per runtime (llama_cpp, onnx_genai, openai).

Backends are synchronous on purpose: the pool runs each loaded model on its own worker
thread, so a backend never blocks the event loop and never needs to know about asyncio.
Streaming goes through an ``on_token`` callback that the pool hands over to the loop.
Heavy runtimes are imported inside ``load()`` (via :func:`edged.extras.require`), never at
module import.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import ModelConfig


class ModelError(Exception):
    """A model could not be loaded or failed to generate; the message is for the operator."""


class NotSupported(ModelError):
    pass


class ModelUnavailable(ModelError):
    """The model cannot answer now: its worker crashed or was stopped, or it is failed. No
    answer came back, so nothing downstream ran on it."""


class Unreachable(ModelError):
    """A remote model could not be reached (connection, timeout, 5xx or 429 after retries):
    the caller may treat the server as offline, unlike a rejected request."""

    status: int | None = None

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class GenerationRequest:
    """What to generate. Exactly one of ``messages`` (chat, with the model's template) or
    ``prompt`` (plain completion, no template) is set."""

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # Constrained decoding: a JSON schema (every backend), or a backend-specific grammar
    # (GBNF for llama_cpp, Lark for onnx_genai); at most one of the two.
    json_schema: dict[str, Any] | None = None
    grammar: str | None = None
    # OpenAI tool calling (remote backends): tool specs and an optional tool_choice
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("set exactly one of messages or prompt")
        if self.json_schema is not None and self.grammar is not None:
            raise ValueError("set at most one of json_schema or grammar")


@dataclass(slots=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length | error
    seconds: float
    model: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{id, name, arguments}]

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


TokenCallback = Callable[[str], None]


class Backend(abc.ABC):
    """One model of one runtime. Not thread-safe: the pool calls it from one thread."""

    kind: str = ""

    def __init__(self, alias: str, cfg: ModelConfig, path: str) -> None:
        self.alias = alias
        self.cfg = cfg
        self.path = path  # resolved file or folder (empty for remote backends)
        self.loaded = False

    @abc.abstractmethod
    def load(self) -> None:
        """Load weights (blocking). Raise ModelError with a clear message on failure."""

    @abc.abstractmethod
    def unload(self) -> None:
        """Drop every reference to the weights so that memory can be returned."""

    @abc.abstractmethod
    def generate(self, req: GenerationRequest, on_token: TokenCallback | None = None
                 ) -> Generation:
        """Generate (blocking); call ``on_token`` with each piece of text as it comes."""

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int: ...

    def embed(self, texts: list[str]) -> list[list[float]]:
        raise NotSupported(f"model {self.alias!r} ({self.kind}) has no embeddings")

    def memory_estimate(self) -> int:
        """Bytes this model needs when loaded: weights + KV cache for the context."""
        return file_size(self.path) + kv_cache_estimate(self.cfg.context)

    def set_threads(self, n: int) -> None:
        """Use fewer threads (thermal policy); backends that cannot change it ignore it."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"alias": self.alias, "backend": self.kind, "path": self.path,
                "size_bytes": file_size(self.path), "loaded": self.loaded}


def file_size(path: str) -> int:
    """Size of a file, or of all files under a folder; 0 when absent or remote."""
    if not path or not os.path.exists(path):
        return 0
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def kv_cache_estimate(context: int, bytes_per_token: int = 48 * 1024) -> int:
    """A conservative KV-cache size for small models (~48 KiB a token at fp16 for a
    135M-1B model); a budget check must over- rather than under-estimate."""
    return context * bytes_per_token
