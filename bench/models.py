"""Model runtime overhead: edged's backends and pool vs the raw library calls, in one run.

For each runtime: load time and generation tokens/s through edged (pool: worker thread,
priority queue, streaming hand-over to the event loop) vs the raw library call, RSS before
load / loaded / after unload (edged trims the C heap), and event-loop lag p99 while edged
generates. Targets: time ratio <= 1.05, RSS after unload within +10 MB of before, lag p99 <=
20 ms.

    .venv/bin/python bench/models.py [--tokens 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._runner import Bench  # noqa: E402
from edged.config import ModelConfig, ResourcesConfig  # noqa: E402
from edged.models import GenerationRequest  # noqa: E402
from edged.models.bundled import resolve  # noqa: E402
from edged.models.pool import ModelPool, rss_bytes, trim_heap  # noqa: E402

PROMPT = "Write a short note about keeping bees in a city garden."
MESSAGES = [{"role": "user", "content": PROMPT}]
ONNX_FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "data" / "tiny-llama-onnx"


def raw_llama(path: str, tokens: int) -> tuple[float, float]:
    """(load seconds, tokens/s) with llama_cpp directly."""
    import llama_cpp

    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=path, n_ctx=512, n_threads=1, n_threads_batch=1,
                          verbose=False)
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = llm.create_chat_completion(messages=MESSAGES, max_tokens=tokens, temperature=0.0)
    dt = time.perf_counter() - t0
    n = out["usage"]["completion_tokens"]
    llm.close()
    del llm
    trim_heap()
    return load, n / dt


def raw_onnx(path: str, tokens: int) -> tuple[float, float]:
    """(load seconds, tokens/s) with onnxruntime_genai directly (greedy, same prompt)."""
    import json

    import onnxruntime_genai as og

    t0 = time.perf_counter()
    config = og.Config(path)
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": 1, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    tok = og.Tokenizer(model)
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids = tok.encode(tok.apply_chat_template(json.dumps(MESSAGES), add_generation_prompt=True))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + tokens, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(ids)
    stream = tok.create_stream()
    n = 0
    while not gen.is_done():
        gen.generate_next_token()
        stream.decode(int(gen.get_next_tokens()[0]))
        n += 1
    dt = time.perf_counter() - t0
    del gen, tok, model
    return load, n / dt


async def edged_run(cfg: ModelConfig, tokens: int) -> dict[str, float]:
    pool = ModelPool({"m": cfg}, ResourcesConfig(idle_unload_s=0))
    trim_heap()
    before = rss_bytes()
    t0 = time.perf_counter()
    await pool.load("m")
    load = time.perf_counter() - t0
    loaded = rss_bytes()
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.005)
            lags.append(max(0.0, loop.time() - t - 0.005))

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    gen = await pool.generate("m", GenerationRequest(messages=MESSAGES, max_tokens=tokens),
                              on_token=lambda _p: None)
    dt = time.perf_counter() - t0
    stop.set()
    await tick
    await pool.unload("m")
    after = rss_bytes()
    await pool.close()
    lags.sort()
    return {"load": load, "tps": gen.completion_tokens / dt, "before": before,
            "loaded": loaded, "after": after,
            "lag_p99": lags[int(len(lags) * 0.99) - 1] if lags else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    bench = Bench("models")
    bench.param(tokens=args.tokens, rounds=args.rounds, threads=1, prompt=PROMPT)

    path = resolve("bundled:smollm2-135m")
    cfg = ModelConfig(backend="llama_cpp", path=path, context=512, threads=1)
    raw_load, raw_tps, ed = [], [], []
    for _ in range(args.rounds):  # alternate so drift hits both sides alike
        load, tps = raw_llama(path, args.tokens)
        raw_load.append(load)
        raw_tps.append(tps)
        ed.append(asyncio.run(edged_run(cfg, args.tokens)))
    med = statistics.median
    e_load, e_tps = med(r["load"] for r in ed), med(r["tps"] for r in ed)
    bench.record("llama.cpp raw load", med(raw_load) * 1e3, "ms")
    bench.record("llama.cpp edged load", e_load * 1e3, "ms", baseline=med(raw_load) * 1e3,
                 baseline_name="raw")
    bench.record("llama.cpp raw tokens/s", med(raw_tps), "tok/s")
    # ratio as time (raw speed / edged speed): <= 1.05 is the target
    bench.record("llama.cpp edged tokens/s", e_tps, "tok/s", time_ratio=med(raw_tps) / e_tps)
    bench.record("edged time ratio (generation)", med(raw_tps) / e_tps, "x")
    last = ed[-1]
    mb = 2**20
    bench.record("RSS before load", last["before"] / mb, "MB")
    bench.record("RSS loaded", last["loaded"] / mb, "MB")
    bench.record("RSS after unload", last["after"] / mb, "MB",
                 baseline=last["before"] / mb, baseline_name="before")
    bench.record("RSS after - before", (last["after"] - last["before"]) / mb, "MB")
    bench.record("event-loop lag p99 while generating",
                 max(r["lag_p99"] for r in ed) * 1e3, "ms")

    if ONNX_FIXTURE.joinpath("genai_config.json").exists():
        # the committed tiny random Llama: measures per-token overhead, not model speed
        ocfg = ModelConfig(backend="onnx_genai", path=str(ONNX_FIXTURE), context=512)
        raw_o, ed_o = [], []
        for _ in range(args.rounds):
            raw_o.append(raw_onnx(str(ONNX_FIXTURE), args.tokens))
            ed_o.append(asyncio.run(edged_run(ocfg, args.tokens)))
        r_tps = med(r[1] for r in raw_o)
        o_tps = med(r["tps"] for r in ed_o)
        bench.record("onnx_genai raw load", med(r[0] for r in raw_o) * 1e3, "ms")
        bench.record("onnx_genai edged load", med(r["load"] for r in ed_o) * 1e3, "ms",
                     baseline=med(r[0] for r in raw_o) * 1e3, baseline_name="raw")
        bench.record("onnx_genai raw tokens/s (tiny)", r_tps, "tok/s")
        bench.record("onnx_genai edged tokens/s (tiny)", o_tps, "tok/s")
        bench.record("onnx_genai time ratio (generation)", r_tps / o_tps, "x")
        bench.record("onnx_genai loop lag p99", max(r["lag_p99"] for r in ed_o) * 1e3, "ms")
    bench.finish()


if __name__ == "__main__":
    main()
