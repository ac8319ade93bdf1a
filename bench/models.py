"""Model runtimes in worker processes vs in the daemon, side by side in one run.

Every figure compares the same pool with ``worker = true`` (the default: each model in its
own supervised process) against ``worker = false`` (in the daemon), plus the raw library:

- per-call overhead of the worker hop (a token count, and a 1-token generation);
- the time of a 64-token generation (target <= 1.05x in-process);
- load time (target <= 1.2x in-process, cold: a fresh interpreter that imports the runtime);
- embed call overhead (one sentence, MiniLM; target <= 1 ms);
- recovery after ``kill -9`` of a worker mid-generation: until the next answer;
- the daemon's RSS with no model loaded (the house assistant, its embedder in a worker;
  target <= 60 MB), and the process tree's RSS after an unload vs before the load (target
  within +5 MB);
- event-loop lag p99 while generating.

    .venv/bin/python bench/models.py [--tokens 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._runner import ROOT, Bench  # noqa: E402
from edged.config import ModelConfig, ResourcesConfig  # noqa: E402
from edged.models import GenerationRequest  # noqa: E402
from edged.models.bundled import resolve  # noqa: E402
from edged.models.pool import ModelPool  # noqa: E402

PROMPT = "Write a short note about keeping bees in a city garden."
MESSAGES = [{"role": "user", "content": PROMPT}]
EMBEDDER = "bundled:minilm-l6-int8"
ONNX_FIXTURE = ROOT / "tests" / "data" / "tiny-llama-onnx"
med = statistics.median


def cfg(worker: bool, path: str) -> ModelConfig:
    return ModelConfig(backend="llama_cpp", path=path, context=512, threads=1, worker=worker)


def tree_rss() -> int:
    me = psutil.Process()
    total = me.memory_info().rss
    for c in me.children(recursive=True):
        try:
            total += c.memory_info().rss
        except psutil.Error:
            pass
    return total


async def calls(pool: ModelPool, n: int) -> dict[str, float]:
    """Median seconds of small calls (the hop dominates) and of a 64-token generation."""
    await pool.count_tokens("m", "warm")
    count, one = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        await pool.count_tokens("m", "turn on the kitchen lights")
        count.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await pool.generate("m", GenerationRequest(prompt="Hello", max_tokens=1))
        one.append(time.perf_counter() - t0)
    return {"count": med(count), "one_token": med(one)}


async def generation(pool: ModelPool, tokens: int) -> tuple[float, int, float]:
    """(seconds, tokens, loop lag p99) of one streamed generation of ``tokens`` tokens."""
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
    gen = await pool.generate("m", GenerationRequest(
        messages=MESSAGES, max_tokens=tokens, stop=["\u0000"]), on_token=lambda _p: None)
    dt = time.perf_counter() - t0
    stop.set()
    await tick
    lags.sort()
    return dt, gen.completion_tokens, lags[int(len(lags) * 0.99) - 1] if lags else 0.0


def cold_load(worker: bool, path: str) -> float:
    """Load seconds in a fresh interpreter (the runtime not imported yet), as a daemon's
    first load: in-process that includes importing llama_cpp; a worker imports it too."""
    code = (
        "import asyncio, time, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from edged.config import ModelConfig, ResourcesConfig\n"
        "from edged.models.pool import ModelPool\n"
        "async def main():\n"
        f"    p = ModelPool({{'m': ModelConfig(backend='llama_cpp', path={path!r}, "
        f"context=512, threads=1, worker={worker})}}, ResourcesConfig())\n"
        "    t0 = time.perf_counter(); await p.load('m'); print(time.perf_counter() - t0)\n"
        "    await p.close()\n"
        "asyncio.run(main())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


async def warm_load(pool: ModelPool) -> float:
    await pool.unload("m")
    t0 = time.perf_counter()
    await pool.load("m")
    return time.perf_counter() - t0


async def recovery(path: str, tokens: int) -> float:
    """kill -9 of the worker mid-generation -> the next request answered (seconds)."""
    pool = ModelPool({"m": cfg(True, path)}, ResourcesConfig(restart_backoff_s=0.0))
    await pool.load("m")
    started = asyncio.Event()
    task = asyncio.create_task(pool.generate("m", GenerationRequest(
        messages=MESSAGES, max_tokens=tokens), on_token=lambda _p: started.set()))
    await started.wait()
    pid = next(m["pid"] for m in pool.describe())
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    try:
        await task
    except Exception:  # noqa: BLE001 - the crash is expected
        pass
    await pool.generate("m", GenerationRequest(prompt="Hello", max_tokens=1))
    dt = time.perf_counter() - t0
    await pool.close()
    return dt


def embed_overhead(n: int) -> tuple[float, float]:
    """(in-process, worker) median seconds to embed one short sentence."""
    from edged.models.embed import create_embedder
    from edged.models.process import WorkerEmbedder

    local = create_embedder(EMBEDDER)
    local.load()
    remote = WorkerEmbedder(EMBEDDER)
    remote.load()
    a, b = [], []
    for i in range(n + 5):  # alternate, so drift hits both alike; 5 warm-up rounds
        text = [f"turn on the kitchen lights {i}"]
        t0 = time.perf_counter()
        local.embed(text)
        t1 = time.perf_counter()
        remote.embed(text)
        t2 = time.perf_counter()
        if i >= 5:
            a.append(t1 - t0)
            b.append(t2 - t1)
    local.unload()
    remote.unload()
    return med(a), med(b)


def daemon_rss() -> tuple[float, float, list[str]]:
    """The house assistant's daemon (agents, plugins, memory, embedder in a worker, no
    model loaded) after start: (daemon MB, embedder worker MB, native modules it imported)."""
    from tests.harness import Broker, DaemonProcess, write_config

    work = Path(tempfile.mkdtemp(prefix="edged-bench-rss-"))
    (work / "state").mkdir()
    broker = Broker().start()
    house = (ROOT / "examples" / "house.toml").read_text()
    extra = house[house.index("[models.small]"):].replace(
        'dirs = ["plugins"]', f"dirs = [{json.dumps(str(ROOT / 'plugins'))}]").replace(
        "[memory]\n", f'[memory]\npath = "{work / "state" / "memory.db"}"\n')
    conf = write_config(work / "edged.toml", broker, db=work / "state" / "edged.db",
                        extra=extra)
    d = DaemonProcess(conf, work).start(timeout=120)
    try:
        time.sleep(2.0)  # settle after start (status, first ticks)
        p = psutil.Process(d.pid)
        own = p.memory_info().rss / 2**20
        kids = sum(c.memory_info().rss for c in p.children(recursive=True)) / 2**20
        maps = Path(f"/proc/{d.pid}/maps").read_text()
        native = sorted({n for n in ("libllama", "libonnxruntime", "libggml", "numpy")
                         if n in maps})
    finally:
        d.terminate()
        broker.cleanup()
    return own, kids, native


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=50)
    args = ap.parse_args()
    bench = Bench("models")
    bench.param(tokens=args.tokens, rounds=args.rounds, calls=args.calls, threads=1,
                prompt=PROMPT)
    path = resolve("bundled:smollm2-135m")

    async def run() -> dict[str, list[float]]:
        r: dict[str, list[float]] = {k: [] for k in (
            "in_count", "wk_count", "in_one", "wk_one", "in_gen", "wk_gen", "in_warm",
            "wk_warm", "lag", "before", "after")}
        inproc = ModelPool({"m": cfg(False, path)}, ResourcesConfig(idle_unload_s=0))
        worker = ModelPool({"m": cfg(True, path)}, ResourcesConfig(idle_unload_s=0))
        await inproc.load("m")
        await worker.load("m")
        for _ in range(args.rounds):  # alternate so drift hits both sides alike
            a, b = await calls(inproc, args.calls), await calls(worker, args.calls)
            r["in_count"].append(a["count"])
            r["wk_count"].append(b["count"])
            r["in_one"].append(a["one_token"])
            r["wk_one"].append(b["one_token"])
            g_in = await generation(inproc, args.tokens)
            g_wk = await generation(worker, args.tokens)
            assert g_in[1] == g_wk[1], (g_in, g_wk)  # the same tokens were generated
            r["in_gen"].append(g_in[0])
            r["wk_gen"].append(g_wk[0])
            r["lag"].append(g_wk[2])
            r["in_warm"].append(await warm_load(inproc))
            r["wk_warm"].append(await warm_load(worker))
        await inproc.close()
        await worker.unload("m")
        for _ in range(3):
            r["before"].append(tree_rss())
            await worker.load("m")
            await worker.generate("m", GenerationRequest(messages=MESSAGES, max_tokens=16))
            await worker.unload("m")
            r["after"].append(tree_rss())
        await worker.close()
        return r

    r = asyncio.run(run())
    ms = 1e3
    bench.record("call overhead: count tokens, in-process", med(r["in_count"]) * ms, "ms")
    bench.record("call overhead: count tokens, worker", med(r["wk_count"]) * ms, "ms",
                 baseline=med(r["in_count"]) * ms, baseline_name="in-process")
    hop = (med(r["wk_count"]) - med(r["in_count"])) * ms
    bench.record("worker hop per call (target <= 2 ms)", hop, "ms")
    bench.record("1-token generation, worker", med(r["wk_one"]) * ms, "ms",
                 baseline=med(r["in_one"]) * ms, baseline_name="in-process")
    bench.record(f"{args.tokens}-token generation, worker (target <= 1.05x)",
                 med(r["wk_gen"]) * ms, "ms", baseline=med(r["in_gen"]) * ms,
                 baseline_name="in-process")
    bench.record("event-loop lag p99 while generating", max(r["lag"]) * ms, "ms")

    cold_in = [cold_load(False, path) for _ in range(args.rounds)]
    cold_wk = [cold_load(True, path) for _ in range(args.rounds)]
    bench.record("load, cold (target <= 1.2x)", med(cold_wk) * ms, "ms",
                 baseline=med(cold_in) * ms, baseline_name="in-process, cold")
    bench.record("load, runtime already imported in-process", med(r["wk_warm"]) * ms, "ms",
                 baseline=med(r["in_warm"]) * ms, baseline_name="in-process, warm")

    e_in, e_wk = embed_overhead(args.calls * 4)
    bench.record("embed one sentence, worker", e_wk * ms, "ms", baseline=e_in * ms,
                 baseline_name="in-process")
    bench.record("embed hop per call (target <= 1 ms)", (e_wk - e_in) * ms, "ms")

    rec = [asyncio.run(recovery(path, args.tokens)) for _ in range(3)]
    bench.record("kill -9 mid-generation -> next answer", med(rec) * ms, "ms")

    mb = 2**20
    bench.record("process tree RSS before load", med(r["before"]) / mb, "MB")
    bench.record("process tree RSS after unload (target +5 MB)", med(r["after"]) / mb, "MB",
                 baseline=med(r["before"]) / mb, baseline_name="before load")
    if ONNX_FIXTURE.joinpath("genai_config.json").exists():
        # the committed tiny random Llama: per-token overhead of the hop, not model speed
        async def onnx() -> tuple[float, float]:
            pools = [ModelPool({"m": ModelConfig(backend="onnx_genai", path=str(ONNX_FIXTURE),
                                                 context=512, worker=w)}, ResourcesConfig())
                     for w in (False, True)]
            times: list[list[float]] = [[], []]
            for _ in range(args.rounds):
                for i, p in enumerate(pools):
                    times[i].append((await generation(p, args.tokens))[0])
            for p in pools:
                await p.close()
            return med(times[0]), med(times[1])
        o_in, o_wk = asyncio.run(onnx())
        bench.record(f"onnx_genai {args.tokens} tokens (tiny fixture), worker", o_wk * ms,
                     "ms", baseline=o_in * ms, baseline_name="in-process")
    own, kids, native = daemon_rss()
    bench.record("daemon RSS, house assistant, no model loaded (target <= 60 MB)", own, "MB",
                 native_libraries_mapped=native)
    bench.record("its embedder worker RSS (MiniLM)", kids, "MB")
    bench.finish()


if __name__ == "__main__":
    main()
