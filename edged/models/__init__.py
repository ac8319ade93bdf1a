"""Model runtimes behind one interface (base.Backend), one file per backend, and the pool.

Local runtimes (llama.cpp, ONNX Runtime GenAI) run in supervised worker processes by default
(:mod:`.process`); the OpenAI-compatible backend is plain HTTP and runs in the daemon.
"""

from __future__ import annotations

import importlib

from ..config import ModelConfig
from .base import (
    Backend,
    Generation,
    GenerationRequest,
    ModelError,
    ModelUnavailable,
    NotSupported,
    Unreachable,
)
from .bundled import resolve

_BACKENDS = {
    "llama_cpp": "edged.models.llama_cpp:LlamaCppBackend",
    "onnx_genai": "edged.models.onnx_genai:OnnxGenAIBackend",
    "openai": "edged.models.openai:OpenAIBackend",
}
NATIVE = ("llama_cpp", "onnx_genai")  # runtimes whose crash would take the process down


def create_local_backend(alias: str, cfg: ModelConfig, path: str) -> Backend:
    """The backend object that runs in this process (nothing is loaded yet)."""
    module, cls = _BACKENDS[cfg.backend].split(":")
    backend_cls: type[Backend] = getattr(importlib.import_module(module), cls)
    return backend_cls(alias, cfg, path)


def create_backend(alias: str, cfg: ModelConfig) -> Backend:
    """The backend for a configured model: a worker process for native runtimes unless
    ``worker = false``, else in this process. Nothing is loaded yet."""
    path = resolve(cfg.path) if cfg.path else ""
    if cfg.backend in NATIVE and cfg.worker:
        from .process import WorkerBackend

        return WorkerBackend(alias, cfg, path,
                             inner=lambda: create_local_backend(alias, cfg, path))
    return create_local_backend(alias, cfg, path)


__all__ = ["Backend", "Generation", "GenerationRequest", "ModelError", "ModelUnavailable",
           "NotSupported",
           "Unreachable", "create_backend", "create_local_backend", "resolve"]
