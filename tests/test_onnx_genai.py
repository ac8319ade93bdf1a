"""The onnx_genai backend against the real ONNX Runtime GenAI runtime.

The model is the committed tests/data/tiny-llama-onnx (a randomly initialised 2-layer Llama,
~320 KiB, made by scripts/make_tiny_onnx_model.py): its text is gibberish, so these tests
check mechanics (template, streaming, stops, limits, seeds, constrained decoding), never
content. No mocks.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime_genai")

from edged.config import ModelConfig  # noqa: E402
from edged.models import create_backend  # noqa: E402
from edged.models.base import GenerationRequest, ModelError, file_size  # noqa: E402
from edged.models.onnx_genai import OnnxGenAIBackend, _StopFilter  # noqa: E402

FIXTURE = Path(__file__).parent / "data" / "tiny-llama-onnx"
REPO = Path(__file__).resolve().parent.parent


def make(path: Path | str = FIXTURE, **kw: Any) -> OnnxGenAIBackend:
    cfg = ModelConfig(backend="onnx_genai", path=str(path), worker=False, **kw)
    b = create_backend("tiny", cfg)
    assert isinstance(b, OnnxGenAIBackend)
    return b


@pytest.fixture(scope="module")
def llm() -> Iterator[OnnxGenAIBackend]:
    b = make(context=1024, threads=1)
    b.load()
    try:
        yield b
    finally:
        b.unload()


# -- a small JSON-schema validator (enough for the schemas below) --------------------------

_TYPES: dict[str, Any] = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
}


def validate(value: Any, schema: dict[str, Any], where: str = "$") -> None:
    t = schema.get("type")
    if t == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r}"
    elif t == "number":
        assert isinstance(value, int | float) and not isinstance(value, bool), where
    elif t is not None:
        assert isinstance(value, _TYPES[t]), f"{where}: {value!r} is not {t}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if "minimum" in schema:
        assert value >= schema["minimum"], where
    if "maximum" in schema:
        assert value <= schema["maximum"], where
    if "maxLength" in schema:
        assert len(value) <= schema["maxLength"], where
    if "minItems" in schema:
        assert len(value) >= schema["minItems"], where
    if "maxItems" in schema:
        assert len(value) <= schema["maxItems"], where
    if t == "array" and "items" in schema:
        for i, v in enumerate(value):
            validate(v, schema["items"], f"{where}[{i}]")
    if t == "object":
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            assert k in value, f"{where}: required {k!r} missing in {value!r}"
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(props), f"{where}: extra keys in {value!r}"
        for k, v in value.items():
            if k in props:
                validate(v, props[k], f"{where}.{k}")


SCHEMAS = [
    {   # enum string + bounded integer + boolean, all required
        "type": "object",
        "properties": {
            "color": {"type": "string", "enum": ["red", "green", "blue"]},
            "count": {"type": "integer", "minimum": 0, "maximum": 100},
            "on": {"type": "boolean"},
        },
        "required": ["color", "count", "on"],
        "additionalProperties": False,
    },
    {   # a device command: bounded string, array of enums, a number, an optional field
        "type": "object",
        "properties": {
            "device": {"type": "string", "maxLength": 8},
            "actions": {"type": "array", "items": {"type": "string", "enum": ["on", "off"]},
                        "minItems": 1, "maxItems": 3},
            "level": {"type": "number", "minimum": 0, "maximum": 1},
            "note": {"type": "string", "maxLength": 4},
        },
        "required": ["device", "actions", "level"],
        "additionalProperties": False,
    },
    {   # nested object and enum of mixed values
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "reading": {
                "type": "object",
                "properties": {"room": {"type": "string", "enum": ["kitchen", "hall"]},
                               "celsius": {"type": "integer", "minimum": -20, "maximum": 50}},
                "required": ["room", "celsius"],
                "additionalProperties": False,
            },
        },
        "required": ["ok", "reading"],
        "additionalProperties": False,
    },
]


# -- load / unload / errors ------------------------------------------------------------------


def test_fixture_is_small_and_complete() -> None:
    names = {p.name for p in FIXTURE.iterdir()}
    assert {"genai_config.json", "model.onnx", "tokenizer.json", "tokenizer_config.json"} <= names
    assert file_size(str(FIXTURE)) < 1024 * 1024


def test_load_unload_reload() -> None:
    b = make()
    assert not b.loaded
    with pytest.raises(ModelError, match="not loaded"):
        b.generate(GenerationRequest(prompt="hi", max_tokens=2))
    b.load()
    assert b.loaded
    assert b.describe()["loaded"] is True
    g = b.generate(GenerationRequest(prompt="hi", max_tokens=3))
    assert g.completion_tokens <= 3
    b.unload()
    assert not b.loaded and b._model is None and b._tokenizer is None
    with pytest.raises(ModelError, match="not loaded"):
        b.count_tokens("hi")
    b.set_threads(2)  # applies at the next load
    b.load()
    assert b.generate(GenerationRequest(prompt="hi", max_tokens=3)).model == "tiny"
    b.unload()


def test_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    b = make(missing)
    with pytest.raises(ModelError, match=re.escape(str(missing))):
        b.load()
    with pytest.raises(ModelError, match="<empty>"):
        make("").load()


def test_not_a_genai_folder(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="genai_config.json") as e:
        make(tmp_path).load()
    assert str(tmp_path) in str(e.value)
    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="not a folder"):
        make(f).load()


def test_broken_folder_is_a_model_error(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "m")
    (tmp_path / "m" / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="cannot load"):
        make(tmp_path / "m").load()


def test_import_does_not_load_the_runtime() -> None:
    code = textwrap.dedent("""
        import sys
        import edged, edged.models, edged.models.onnx_genai
        from edged.config import ModelConfig
        from edged.models import create_backend
        b = create_backend("m", ModelConfig(backend="onnx_genai", path=sys.argv[1]))
        b.memory_estimate(); b.describe(); b.set_threads(2)
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("onnxruntime_genai",
                     "onnxruntime", "numpy"))
        print(bad)
        sys.exit(1 if bad else 0)
    """)
    r = subprocess.run([sys.executable, "-c", code, str(FIXTURE)], capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# -- generation ---------------------------------------------------------------------------


def test_generate_prompt(llm: OnnxGenAIBackend) -> None:
    g = llm.generate(GenerationRequest(prompt="The quick brown fox", max_tokens=12))
    assert g.prompt_tokens == llm.count_tokens("The quick brown fox")
    assert 0 < g.completion_tokens <= 12
    assert g.finish_reason in ("stop", "length")
    assert isinstance(g.text, str) and g.seconds > 0 and g.model == "tiny"
    # greedy is deterministic
    assert llm.generate(GenerationRequest(prompt="The quick brown fox", max_tokens=12)) \
        .text == g.text


def test_generate_messages_applies_chat_template(llm: OnnxGenAIBackend) -> None:
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Turn on the light"}]
    g = llm.generate(GenerationRequest(messages=messages, max_tokens=8))
    templated = ("<|im_start|>system\nYou are terse.<|im_end|>\n"
                 "<|im_start|>user\nTurn on the light<|im_end|>\n<|im_start|>assistant\n")
    assert g.prompt_tokens == llm.count_tokens(templated)
    assert g.prompt_tokens > llm.count_tokens("You are terse.Turn on the light")
    assert g.completion_tokens <= 8


def test_no_chat_template_is_a_model_error(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "m")
    cfg_file = tmp_path / "m" / "tokenizer_config.json"
    data = json.loads(cfg_file.read_text())
    del data["chat_template"]
    cfg_file.write_text(json.dumps(data))
    b = make(tmp_path / "m")
    b.load()
    try:
        with pytest.raises(ModelError, match="chat template"):
            b.generate(GenerationRequest(messages=[{"role": "user", "content": "hi"}]))
        assert b.generate(GenerationRequest(prompt="hi", max_tokens=2)).completion_tokens <= 2
    finally:
        b.unload()


@pytest.mark.parametrize("max_tokens", [1, 5, 17])
def test_max_tokens_respected(llm: OnnxGenAIBackend, max_tokens: int) -> None:
    g = llm.generate(GenerationRequest(prompt="Hello, world!", max_tokens=max_tokens))
    assert g.finish_reason == "length"
    assert g.completion_tokens == max_tokens


def test_context_bounds_generation(llm: OnnxGenAIBackend) -> None:
    prompt = "light " * 450
    n = llm.count_tokens(prompt)
    assert n < 1024
    g = llm.generate(GenerationRequest(prompt=prompt, max_tokens=5000))
    assert g.finish_reason == "length"
    assert g.prompt_tokens + g.completion_tokens <= 1024
    with pytest.raises(ModelError, match="context is 1024"):
        llm.generate(GenerationRequest(prompt="light " * 3000, max_tokens=4))


def test_streaming_pieces_make_the_text(llm: OnnxGenAIBackend) -> None:
    for req in (GenerationRequest(prompt="Hello", max_tokens=40),
                GenerationRequest(prompt="Hello", max_tokens=40, temperature=1.0, seed=3),
                GenerationRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=30)):
        pieces: list[str] = []
        g = llm.generate(req, on_token=pieces.append)
        assert len(pieces) > 1
        assert "".join(pieces) == g.text


def test_stop_string_truncates_and_stops(llm: OnnxGenAIBackend) -> None:
    for prompt in ("Hello, world!", "Please summarise", "The", "Turn on"):
        base = llm.generate(GenerationRequest(prompt=prompt, max_tokens=40))
        if len(base.text) > 12:
            break
    else:
        pytest.fail("no greedy output long enough to test stop strings")
    stop = base.text[6:9]
    expect = base.text[:base.text.find(stop)]
    pieces: list[str] = []
    g = llm.generate(GenerationRequest(prompt=prompt, max_tokens=40,
                                       stop=["never-there", stop]), on_token=pieces.append)
    assert g.text == expect
    assert "".join(pieces) == expect
    assert g.finish_reason == "stop"
    assert g.completion_tokens < base.completion_tokens


def test_stop_filter_holds_back_partial_matches() -> None:
    pieces: list[str] = []
    f = _StopFilter(["END", "\n\n"], pieces.append)
    assert not f.feed("abc E")
    assert pieces == ["abc "]  # "E" may start "END"
    assert not f.feed("x ")
    assert not f.feed("EN")
    assert f.feed("D tail")
    assert f.text == "abc Ex " and "".join(pieces) == f.text
    f2 = _StopFilter([], None)
    f2.feed("a")
    f2.feed("b")
    f2.close()
    assert f2.text == "ab"
    f3 = _StopFilter(["xy"], None)
    f3.feed("ax")
    f3.close()
    assert f3.text == "ax"


def test_seed_determinism(llm: OnnxGenAIBackend) -> None:
    def run(seed: int) -> str:
        return llm.generate(GenerationRequest(prompt="Hello", max_tokens=30, temperature=0.9,
                                              top_p=0.95, seed=seed)).text
    assert run(7) == run(7)
    assert run(2**40 + 7) == run(2**40 + 7)  # folded into the runtime's int32
    assert len({run(s) for s in range(5)}) > 1


# -- constrained decoding -----------------------------------------------------------------


@pytest.mark.parametrize("schema", SCHEMAS, ids=["flat", "command", "nested"])
def test_json_schema_output_always_validates(llm: OnnxGenAIBackend,
                                             schema: dict[str, Any]) -> None:
    texts = set()
    for seed in range(8):
        req = GenerationRequest(messages=[{"role": "user", "content": "Reply in JSON"}],
                                max_tokens=200, temperature=1.0, seed=seed, json_schema=schema)
        pieces: list[str] = []
        g = llm.generate(req, on_token=pieces.append)
        assert g.finish_reason == "stop"
        assert "".join(pieces) == g.text
        validate(json.loads(g.text), schema)
        texts.add(g.text)
    assert len(texts) > 1  # sampled, not one lucky string
    # greedy too
    g = llm.generate(GenerationRequest(prompt="{", max_tokens=200, json_schema=schema))
    validate(json.loads(g.text), schema)


def test_json_schema_cut_by_max_tokens_is_an_error(llm: OnnxGenAIBackend) -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string"}},
              "required": ["text"]}
    with pytest.raises(ModelError, match="cut at max_tokens=3"):
        llm.generate(GenerationRequest(prompt="x", max_tokens=3, json_schema=schema))


def test_lark_grammar(llm: OnnxGenAIBackend) -> None:
    seen = set()
    for seed in range(8):
        g = llm.generate(GenerationRequest(prompt="Answer:", max_tokens=10, temperature=1.0,
                                           seed=seed, grammar='start: "yes" | "no"'))
        assert g.text in ("yes", "no")
        assert g.finish_reason == "stop"
        seen.add(g.text)
    assert seen == {"yes", "no"}
    grammar = 'start: "set " ROOM " " NUM\nROOM: "kitchen" | "hall"\nNUM: /[0-9]{1,2}/'
    for seed in range(4):
        g = llm.generate(GenerationRequest(prompt="Command:", max_tokens=20, temperature=1.0,
                                           seed=seed, grammar=grammar))
        assert re.fullmatch(r"set (kitchen|hall) [0-9]{1,2}", g.text), g.text


def test_bad_grammar_or_schema_is_a_model_error(llm: OnnxGenAIBackend) -> None:
    with pytest.raises(ModelError, match="lark_grammar"):
        llm.generate(GenerationRequest(prompt="x", grammar="start: undefined_rule"))
    with pytest.raises(ModelError, match="json_schema"):
        llm.generate(GenerationRequest(prompt="x", json_schema={"type": "nonsense"}))
    # the backend is still usable afterwards
    assert llm.generate(GenerationRequest(prompt="x", max_tokens=2)).completion_tokens <= 2


def test_guidance_needs_tokenizer_json(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "m")
    b = make(tmp_path / "m")
    b.load()
    try:
        (tmp_path / "m" / "tokenizer.json").unlink()
        with pytest.raises(ModelError, match="tokenizer.json"):
            b.generate(GenerationRequest(prompt="x", grammar='start: "a"'))
        assert b.generate(GenerationRequest(prompt="x", max_tokens=2)).completion_tokens <= 2
    finally:
        b.unload()


# -- tokens and resources -----------------------------------------------------------------


def test_count_tokens(llm: OnnxGenAIBackend) -> None:
    assert llm.count_tokens("") == 0
    n = llm.count_tokens("hello world")
    assert 0 < n <= len("hello world")
    assert llm.count_tokens("hello world " * 10) > n
    assert llm.count_tokens("<|im_end|>") == 1  # special tokens are parsed


def test_memory_estimate() -> None:
    b = make(context=2048)
    est = b.memory_estimate()
    size = file_size(str(FIXTURE))
    # weights + exact KV: 2 (K, V) x 2 layers x 2 KV heads x 16 head size x 4 bytes x 2048
    assert est == size + 2 * 2 * 2 * 16 * 4 * 2048
    assert make("/nonexistent/model").memory_estimate() > 0
