"""Lazy imports of optional runtimes, with a message that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {
    "llama_cpp": "llama",
    "onnxruntime_genai": "onnx",
    "onnxruntime": "embed",
    "tokenizers": "embed",
    "numpy": "embed",
}


class MissingExtra(ImportError):
    pass


def require(module: str) -> ModuleType:
    """Import ``module`` or raise MissingExtra telling which ``pip install 'edged[...]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra = EXTRAS.get(module.split(".")[0], "all")
        raise MissingExtra(
            f"{module} is not installed ({e}); install it with: pip install 'edged[{extra}]'"
        ) from e
