"""Model runtimes behind one interface (base.Backend), one file per backend, and the pool."""

from __future__ import annotations

import importlib

from ..config import ModelConfig
from .base import Backend, Generation, GenerationRequest, ModelError, NotSupported, Unreachable
from .bundled import resolve

_BACKENDS = {
    "llama_cpp": "edged.models.llama_cpp:LlamaCppBackend",
    "onnx_genai": "edged.models.onnx_genai:OnnxGenAIBackend",
    "openai": "edged.models.openai:OpenAIBackend",
}


def create_backend(alias: str, cfg: ModelConfig) -> Backend:
    """The backend object for a configured model (nothing is loaded yet)."""
    module, cls = _BACKENDS[cfg.backend].split(":")
    backend_cls = getattr(importlib.import_module(module), cls)
    path = resolve(cfg.path) if cfg.path else ""
    return backend_cls(alias, cfg, path)  # type: ignore[no-any-return]


__all__ = ["Backend", "Generation", "GenerationRequest", "ModelError", "NotSupported",
           "Unreachable", "create_backend", "resolve"]
