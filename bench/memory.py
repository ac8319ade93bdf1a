"""Memory store: insert rate, top-5 recall latency and database size at 10k and 100k memories.

Memories are spread over ``--devices`` device scopes (10 by default, so 100k memories are
10k per device) and inserted interleaved across devices, the way they arrive in a running
daemon. Vectors are random unit vectors of 384 dims (MiniLM's size: embedding 100k texts
would take ~15 min and does not change the search cost, which is a scan of the scope's
vectors); the query embedding itself is timed separately with the bundled MiniLM.

Compared in the same run with the raw baseline, a bare sqlite-vec ``vec0`` table of the
same shape (partition key + metadata) queried directly:

- insert: ``MemoryStore.add`` (memories row + vector, one transaction each, as
  ``memory.remember`` does; and batched 1000 per transaction, as consolidation does) vs raw
  vec0 inserts batched 1000 per transaction;
- top-5 within one device: ``MemoryStore.search`` (vector KNN + the memories rows) and the
  full recall path (15 candidates, recency/importance weighting, top 5) vs the raw KNN query.

    .venv/bin/python bench/memory.py [--sizes 10000 100000] [--devices 10] [--queries 200]
"""

from __future__ import annotations

import argparse
import random
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._runner import Bench, Timing  # noqa: E402
from edged.memory.recall import rank  # noqa: E402
from edged.memory.store import MemoryStore, connect, pack  # noqa: E402

DIM = 384
KINDS = ["fact", "preference", "decision", "episode"]


def unit_vectors(n: int, seed: int) -> list[list[float]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, DIM)).astype("float32")
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.tolist()


def build_edged(path: Path, vecs: list[list[float]], devices: int) -> float:
    """Fill through MemoryStore.add, 1000 per transaction; returns memories/s."""
    store = MemoryStore(path)
    store.open()
    store.use_embedder("bench-random-384", DIM)
    t0 = time.perf_counter()
    for start in range(0, len(vecs), 1000):
        with store.tx():
            for i in range(start, min(start + 1000, len(vecs))):
                store.add(f"dev{i % devices:03d}", KINDS[i % 4], f"memory text number {i}",
                          vecs[i], importance=(i % 10) / 10, sources=[f"r{i}"],
                          ts=1.7e9 + i)
    rate = len(vecs) / (time.perf_counter() - t0)
    store.close()
    return rate


def build_raw(path: Path, vecs: list[list[float]], devices: int) -> float:
    conn = connect(path)
    conn.execute(f"CREATE VIRTUAL TABLE v USING vec0(memory_id INTEGER PRIMARY KEY, "
                 f"scope TEXT PARTITION KEY, embedding float[{DIM}] distance_metric=cosine, "
                 f"kind TEXT, ts FLOAT)")
    t0 = time.perf_counter()
    for start in range(0, len(vecs), 1000):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO v(memory_id, scope, embedding, kind, ts) VALUES (?,?,?,?,?)",
            [(i + 1, f"dev{i % devices:03d}", struct.pack(f"{DIM}f", *vecs[i]), KINDS[i % 4],
              1.7e9 + i) for i in range(start, min(start + 1000, len(vecs)))])
        conn.execute("COMMIT")
    rate = len(vecs) / (time.perf_counter() - t0)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return rate


def single_adds(path: Path, vecs: list[list[float]], devices: int) -> float:
    """memory.remember's path: one transaction (one commit) per memory."""
    store = MemoryStore(path)
    store.open()
    store.use_embedder("bench-random-384", DIM)
    t0 = time.perf_counter()
    for i, v in enumerate(vecs):
        store.add(f"dev{i % devices:03d}", KINDS[i % 4], f"single {i}", v)
    rate = len(vecs) / (time.perf_counter() - t0)
    store.close()
    return rate


def db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--name", default="memory")
    args = ap.parse_args()
    bench = Bench(args.name)
    bench.param(sizes=args.sizes, devices=args.devices, queries=args.queries, dim=DIM,
                vectors="random unit (see doc)", insert_order="interleaved by device")
    work = Path(tempfile.mkdtemp(prefix="edged-bench-memory-"))
    try:
        for n in args.sizes:
            label = f"{n // 1000}k"
            vecs = unit_vectors(n, seed=n)
            edged_db, raw_db = work / f"e{n}" / "memory.db", work / f"r{n}" / "raw.db"
            raw_db.parent.mkdir(parents=True)
            r_raw = build_raw(raw_db, vecs, args.devices)
            r_edged = build_edged(edged_db, vecs, args.devices)
            bench.record(f"{label}: raw vec0 insert (1000/tx)", r_raw, "mem/s")
            bench.record(f"{label}: edged add (1000/tx)", r_edged, "mem/s", baseline=r_raw,
                         baseline_name="raw")
            bench.record(f"{label}: database size", db_bytes(edged_db) / 2**20, "MB",
                         baseline=db_bytes(raw_db) / 2**20, baseline_name="raw vec0 only")
            store = MemoryStore(edged_db)
            store.open()
            store.gen = 1  # the embedder registered at build time
            raw = connect(raw_db)
            queries = unit_vectors(args.queries, seed=n + 1)
            scope = "dev003"
            t_raw, t_search, t_recall, t_kind = [], [], [], []
            clock = time.perf_counter
            for q in queries:  # interleaved, so machine drift hits all alike
                blob = pack(q)
                t0 = clock()
                hits = raw.execute("SELECT memory_id, distance FROM v WHERE embedding MATCH ? "
                                   "AND k = 5 AND scope = ?", (blob, scope)).fetchall()
                t1 = clock()
                rows = store.search(q, scope, k=5)
                t2 = clock()
                best = rank(store.search(q, scope, k=15), time.time())[:5]
                t3 = clock()
                store.search(q, scope, k=5, kinds=["preference"])
                t4 = clock()
                assert len(hits) == len(rows) == len(best) == 5
                assert [h[0] for h in hits] == [r.id for r in rows]  # same neighbours
                t_raw.append(t1 - t0)
                t_search.append(t2 - t1)
                t_recall.append(t3 - t2)
                t_kind.append(t4 - t3)
            raw_t = Timing.of(t_raw)
            per_scope = n // args.devices
            bench.record_timing(f"{label}: raw vec0 top-5 in a scope of {per_scope}", raw_t)
            bench.record_timing(f"{label}: edged search top-5", Timing.of(t_search),
                                baseline=raw_t, baseline_name="raw")
            bench.record_timing(f"{label}: edged recall (15 -> weighted top-5)",
                                Timing.of(t_recall), baseline=raw_t, baseline_name="raw")
            bench.record_timing(f"{label}: edged search top-5, kind filter",
                                Timing.of(t_kind), baseline=raw_t, baseline_name="raw")
            store.close()
            raw.close()
        # the single-transaction path on a small store, and the query embedding
        r_single = single_adds(work / "single" / "memory.db", unit_vectors(1000, 7),
                               args.devices)
        bench.record("add, one transaction each (memory.remember)", r_single, "mem/s")
        try:
            from edged.models.embed import create_embedder

            e = create_embedder("bundled:minilm-l6-int8")
            e.load()
            e.embed(["warm up"])
            ts = []
            for i in range(50):
                t0 = time.perf_counter()
                e.embed([f"how warm do I like the bedroom {i}"])
                ts.append(time.perf_counter() - t0)
            bench.record_timing("query embedding (MiniLM int8, 1 thread)", Timing.of(ts))
        except Exception as ex:  # noqa: BLE001 - the embed extra is optional
            print(f"(query embedding not measured: {ex})", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bench.finish()


if __name__ == "__main__":
    random.seed(0)
    main()
