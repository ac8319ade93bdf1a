"""Embedder overhead: edged's OnnxMiniLMEmbedder vs the raw onnxruntime call, in one run.

For batch 1 and batch 16 (short home-automation sentences, and 16 texts of ~128 tokens):
embeddings/s through ``Embedder.embed`` (tokenize, pad, run, mean-pool, normalise, to
lists) vs ``InferenceSession.run`` alone on the same batch already tokenized and padded, in
a session with onnxruntime's defaults (1 intra-op thread like edged). Calls alternate
between the two so that drift on the machine hits both alike. Also load time (edged:
tokenizer + session + one warm-up call; raw: tokenizer + session).

    .venv/bin/python bench/embed.py [--n 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._runner import Bench, Timing, time_call  # noqa: E402
from edged.models.embed import create_embedder  # noqa: E402

SPEC = "bundled:minilm-l6-int8"
SHORT = [
    "turn on the kitchen lights", "switch the kitchen lamp on", "what is the weather tomorrow",
    "close the garage door", "is the front door locked?", "set the thermostat to 21 degrees",
    "the living room window sensor reports open", "battery low on the hallway motion sensor",
    "remind me to water the plants at six", "play some music in the bedroom",
    "how much energy did the heat pump use today", "dim the lights in the dining room",
    "the freezer temperature is above minus ten", "who rang the doorbell at noon",
    "start the robot vacuum when nobody is home", "humidity in the bathroom is 85 percent",
]
LONG = [(s + ". ") * 16 for s in SHORT]  # ~100-130 tokens each


def interleaved(a: Callable[[], Any], b: Callable[[], Any], n: int,
                warmup: int = 3) -> tuple[Timing, Timing]:
    for _ in range(warmup):
        a()
        b()
    sa: list[float] = []
    sb: list[float] = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        a()
        t1 = clock()
        b()
        t2 = clock()
        sa.append(t1 - t0)
        sb.append(t2 - t1)
    return Timing.of(sa), Timing.of(sb)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="timed calls per case")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--load-rounds", type=int, default=6)
    args = ap.parse_args()

    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    emb = create_embedder(SPEC, threads=args.threads)
    d = emb.describe()
    model, tok_path = d["path"], d["tokenizer"]

    def raw_load() -> tuple[Any, Any]:
        tok = Tokenizer.from_file(tok_path)
        tok.no_padding()
        tok.enable_truncation(max_length=256)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(model, sess_options=opts,
                                    providers=["CPUExecutionProvider"])
        return tok, sess

    bench = Bench("embed")
    bench.param(spec=SPEC, model=model, n=args.n, threads=args.threads,
                onnxruntime=ort.__version__, numpy=np.__version__,
                raw="InferenceSession.run on pre-tokenized, padded input (onnxruntime "
                    "defaults, same thread count)")

    # -- load ---------------------------------------------------------------------------
    e_load: list[float] = []
    r_load: list[float] = []
    for i in range(args.load_rounds):  # alternate which goes first
        for which in (("raw", "edged") if i % 2 == 0 else ("edged", "raw")):
            t0 = time.perf_counter()
            if which == "raw":
                tok, sess = raw_load()
                r_load.append(time.perf_counter() - t0)
                del tok, sess
            else:
                emb.load()
                e_load.append(time.perf_counter() - t0)
                emb.unload()
    med = statistics.median
    bench.record("load raw (tokenizer + session)", med(r_load) * 1e3, "ms")
    bench.record("load edged (+ warm-up call)", med(e_load) * 1e3, "ms",
                 baseline=med(r_load) * 1e3, baseline_name="raw")

    # -- throughput ---------------------------------------------------------------------
    emb.load()
    tok, sess = raw_load()

    def feeds(texts: list[str]) -> dict[str, Any]:
        enc = tok.encode_batch(texts)
        width = max(len(e.ids) for e in enc)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(enc):
            ids[i, :len(e.ids)] = e.ids
            mask[i, :len(e.ids)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    cases = [("batch 1", [SHORT[0]]), ("batch 16", SHORT), ("batch 16 long", LONG)]
    for label, texts in cases:
        f = feeds(texts)
        n = args.n if label != "batch 16 long" else max(10, args.n // 10)
        t_edged, t_raw = interleaved(lambda t=texts: emb.embed(t),
                                     lambda f=f: sess.run(None, f), n)
        k = len(texts)
        tokens = int(f["attention_mask"].sum())
        bench.record(f"{label} raw ({tokens // k} tok/text)", k / t_raw.p50, "emb/s")
        bench.record(f"{label} edged", k / t_edged.p50, "emb/s",
                     baseline=k / t_raw.p50, baseline_name="raw")
        bench.record_timing(f"{label} edged time/call", t_edged, baseline=t_raw,
                            baseline_name="raw")
    # where the difference goes: tokenizing the 16 short texts alone
    bench.record_timing("tokenize 16 short texts",
                        time_call(lambda: tok.encode_batch(SHORT), n=args.n))
    emb.unload()
    bench.finish()


if __name__ == "__main__":
    main()
