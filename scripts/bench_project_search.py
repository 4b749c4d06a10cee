"""Project search latency: one query over 20 indexes of 10k vectors plus one large one, next to the large one alone.

Usage: .venv/bin/python scripts/bench_project_search.py [--small 20] [--small-vectors 10000]
                                                      [--large 1000000] [--queries 50] [--k 10]

Builds (once, cached in build/bench-project/) synthetic indexes (devtools/bench/synthetic.py:
caption vectors clustered like real all-MiniLM-L6-v2 captions), then, in one process and
with the worker's settings (a StorePool keeping the files open, medium runs' vectors in RAM
(MemoryRuns), the worker's fast-index cache warmed first, as after the first query in QGIS),
times per query vector:
  project      search_project over all the indexes (the merged ranking the worker returns)
  project_exact the same with mode "exact" (sqlite-vec scans only, no warm index)
  large_alone  search() of the large index alone (what one-index search costs today)
The query embedding (a few ms with all-MiniLM-L6-v2) is left out of both: each query is a
synthetic paraphrase vector. Prints p50/p95 in ms and the memory the warm indexes hold.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "bench-project"


class VectorEmbedder:
    """Hands out the given query vectors in turn, under the synthetic indexes' embedder name."""

    def __init__(self, name: str, vectors: np.ndarray):
        self.name, self.dim, self._vectors, self._next = name, vectors.shape[1], vectors, 0

    def set(self, i: int) -> None:
        self._next = i

    def embed(self, texts):
        if len(texts) != 1:  # the embedder probe: synthetic indexes are unchecked, any answer will do
            return np.zeros((len(texts), self.dim), dtype=np.float32)
        return self._vectors[self._next % len(self._vectors)][None, :]


def build(n_vectors: int, seed: int, n_queries: int):
    from tilescribe.devtools.bench.synthetic import build_synthetic_index

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"synthetic-{n_vectors}-seed{seed}.tilescribe.sqlite"
    queries_file = path.with_suffix(".queries.npy")
    if not (path.is_file() and queries_file.is_file()):
        partial = path.with_suffix(".partial")
        for stale in CACHE.glob(partial.name + "*"):
            stale.unlink()
        started = time.perf_counter()
        index = build_synthetic_index(partial, n_vectors, seed=seed, n_queries=n_queries)
        for suffix in ("-wal", "-shm"):
            Path(f"{partial}{suffix}").unlink(missing_ok=True)
        partial.rename(path)
        np.save(queries_file, index.queries)
        print(f"built {path.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return path, np.load(queries_file)


def percentiles(seconds) -> tuple[float, float]:
    values = np.asarray(seconds) * 1000
    return round(float(np.percentile(values, 50)), 1), round(float(np.percentile(values, 95)), 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--small-vectors", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)

    from tilescribe.devtools.bench.search_bench import recall
    from tilescribe.plugin.core.embedding import DEFAULT_EMBEDDER
    from tilescribe.plugin.core.index.store import Store
    from tilescribe.plugin.core.search.fast_cache import FastIndexCache
    from tilescribe.plugin.core.search.project import MemoryRuns, StorePool, latest_runs_per_raster, search_project
    from tilescribe.plugin.core.search.search import SearchRequest, search
    from tilescribe.plugin.worker.server import FAST_CACHE_BYTES, FAST_CACHE_RUNS

    started = time.perf_counter()
    large, queries = build(args.large, seed=1000, n_queries=args.queries)
    smalls = [build(args.small_vectors, seed=s, n_queries=10)[0] for s in range(args.small)]
    build_s = time.perf_counter() - started
    files = smalls + [large]
    embedder = VectorEmbedder(DEFAULT_EMBEDDER, queries)
    pool, cache = StorePool(), FastIndexCache(max_runs=FAST_CACHE_RUNS, max_bytes=FAST_CACHE_BYTES)
    memory = MemoryRuns()

    t0 = time.perf_counter()  # warm, as the worker is after its first query: every fast index loaded
    search_project(files, embedder, SearchRequest("warm", args.k), pool=pool, fast_cache=cache, memory=memory)
    cache.join()
    for path in files:
        for run in latest_runs_per_raster(pool.get(path)):
            if pool.get(path).vector_state(run.id)[0] >= 50_000:
                cache.get(pool.get(path), run, wait=True)
    warm_s = time.perf_counter() - t0

    timings = {"project": [], "project_exact": [], "large_alone": []}
    sources, recalls = [], []
    large_store = Store(large, readonly=True)
    for i in range(len(queries)):
        embedder.set(i)
        t = time.perf_counter()
        result = search_project(files, embedder, SearchRequest("q", args.k), pool=pool, fast_cache=cache,
                                memory=memory)
        timings["project"].append(time.perf_counter() - t)
        sources.append(sum(h.index == str(large) for h in result.hits))
        t = time.perf_counter()
        exact = search_project(files, embedder, SearchRequest("q", args.k, mode="exact"), pool=pool)
        timings["project_exact"].append(time.perf_counter() - t)
        recalls.append(recall([h.score for h in exact.hits], [h.score for h in result.hits], args.k))
        t = time.perf_counter()
        search(large_store, embedder, SearchRequest("q", args.k), cache)
        timings["large_alone"].append(time.perf_counter() - t)
    large_store.close()
    report = {
        "indexes": len(files), "small_indexes": args.small, "small_vectors": args.small_vectors,
        "large_vectors": args.large, "total_vectors": args.small * args.small_vectors + args.large,
        "queries": len(queries), "k": args.k,
        **{f"{name}_p50_ms": percentiles(values)[0] for name, values in timings.items()},
        **{f"{name}_p95_ms": percentiles(values)[1] for name, values in timings.items()},
        f"project_recall_at_{args.k}_vs_exact": round(float(np.mean(recalls)), 4),
        "hits_from_large_mean": round(float(np.mean(sources)), 2),
        "warm_indexes_mb": round(sum(i.nbytes for i in cache._ready.values()) / 1e6, 1),
        "memory_runs_mb": round(memory.nbytes / 1e6, 1),
        "warm_indexes": len(cache._ready), "open_files": len(pool),
        "warm_s": round(warm_s, 1), "build_or_load_s": round(build_s, 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
