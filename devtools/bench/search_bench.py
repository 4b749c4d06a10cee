"""bench-search: exact vs fast latency and the fast path's recall, on synthetic and real caption vectors."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ...plugin.core.search.fast_cache import FastIndexCache
from ...plugin.core.search.search import SearchRequest, search_vector
from ...plugin.core.index.store import Store
from .synthetic import SyntheticCaptions, build_synthetic_index, create_run, write_tiles

# Forced re-scoring pools for the real-vs-synthetic comparison (a pool holding fewer
# than k distinct tiles is grown x4, as in production).
SWEEP_POOLS = (20, 40, 80, 160)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentiles(seconds: Sequence[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds."""
    values = np.asarray(seconds) * 1000
    return round(float(np.percentile(values, 50)), 2), round(float(np.percentile(values, 95)), 2)


def recall(exact: Sequence[float], fast: Sequence[float], k: int) -> float:
    """Share of the exact top k matched by fast results scoring at least the exact k-th (ties count).

    Scores, not tile ids: with equal scores (identical captions) either tile is right
    (the convention of ann-benchmarks). Fast scores are exact cosines, so this is fair.
    """
    if not exact:
        return 1.0
    bar = exact[min(k, len(exact)) - 1] - 1e-5
    return min(len(exact), sum(score >= bar for score in fast[:k])) / min(k, len(exact))


def measure_search(store: Store, run_id: int, queries: np.ndarray, k: int = 10,
                   exact_scores: Optional[list] = None) -> dict:
    """Exact and fast search of each query in turn (same load for both); latency, recall, index size.

    `exact_scores`, when given, gets each query's exact top-k scores (the yardstick of other backends).
    """
    started = time.perf_counter()
    run = store.run_info(run_id)
    cache = FastIndexCache()
    index = cache.get(store, run, wait=True)
    load_s = time.perf_counter() - started
    exact_s, fast_s, recalls, overlaps = [], [], [], []
    for query in queries:
        t0 = time.perf_counter()
        exact = search_vector(store, query, SearchRequest("bench", k, mode="exact"), run)
        t1 = time.perf_counter()
        fast = search_vector(store, query, SearchRequest("bench", k, mode="fast"), run, cache)
        t2 = time.perf_counter()
        exact_s.append(t1 - t0)
        fast_s.append(t2 - t1)
        recalls.append(recall([h.score for h in exact], [h.score for h in fast], k))
        if exact_scores is not None:
            exact_scores.append([h.score for h in exact])
        overlaps.append(len({h.tile_db_id for h in exact} & {h.tile_db_id for h in fast}) / max(1, len(exact)))
    (exact_p50, exact_p95), (fast_p50, fast_p95) = percentiles(exact_s), percentiles(fast_s)
    return {"exact_p50_ms": exact_p50, "exact_p95_ms": exact_p95, "fast_p50_ms": fast_p50,
            "fast_p95_ms": fast_p95, "speedup_p50": round(exact_p50 / max(fast_p50, 1e-9), 1),
            f"recall_at_{k}": round(float(np.mean(recalls)), 4), f"recall_at_{k}_min": float(np.min(recalls)),
            f"tile_overlap_at_{k}": round(float(np.mean(overlaps)), 4),
            "fast_load_s": round(load_s, 2), "fast_index_mb": round(index.nbytes / 1e6, 1)}


def bench_synthetic(n_vectors: int, *, dim: int = 384, queries: int = 100, k: int = 10, seed: int = 0,
                    folder: Optional[str] = None, progress: Optional[Callable[[int], None]] = None,
                    worker_texts: Sequence[str] = ()) -> dict:
    """Build a synthetic index in a temporary folder, then measure_search (and bench_worker) on it."""
    with tempfile.TemporaryDirectory(prefix="tilescribe-bench-", dir=folder) as tmp:
        path = Path(tmp) / "bench.tilescribe.sqlite"
        index = build_synthetic_index(path, n_vectors, dim=dim, n_queries=queries, seed=seed, progress=progress)
        index_bytes = path.stat().st_size
        with Store(path) as store:
            result = measure_search(store, index.run_id, index.queries, k)
        if worker_texts:
            result.update(bench_worker(path, worker_texts, k))
    return {"vectors": index.n_vectors, "dim": dim, "variants_per_tile": 5, "queries": len(index.queries),
            "k": k, **result, "build_s": round(index.build_s, 1), "index_bytes": index_bytes,
            "file_mb": round(index_bytes / 1e6),
            "peak_rss_mb": round(peak_rss_mb())}


def load_caption_groups(path: Path, per_image: int = 5) -> list[list[str]]:
    """Captions in the line format of ../shared/data/captions: `per_image` consecutive lines per image."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [lines[i:i + per_image] for i in range(0, len(lines) - per_image + 1, per_image)]


def bench_real(captions_file: Path, embedder, *, queries: int = 100, k: int = 10, seed: int = 0,
               folder: Optional[str] = None) -> dict:
    """Real embeddings: 4 captions of each image are a tile's variants, the 5th of some images a query.

    The index is small (a few thousand vectors), so the production candidate pool
    covers much of it; the sweep forces small pools on it and on a synthetic index
    of the same shape, to compare how hard the two are for the first pass.
    """
    groups = load_caption_groups(captions_file)
    vectors = embedder.embed([text for group in groups for text in group]).reshape(len(groups), 5, -1)
    picked = np.random.default_rng(seed).choice(len(groups), min(queries, len(groups)), replace=False)
    real = _sweep_index(folder, vectors[:, :4].reshape(-1, vectors.shape[2]), [g[:4] for g in groups],
                        vectors[picked, 4], k, embedder.name)
    synthetic = SyntheticCaptions(len(groups), 4, vectors.shape[2], seed)
    centres = synthetic.tile_centres(0, len(groups))
    fake = _sweep_index(folder, synthetic.variants_of(centres), [[f"synthetic {i}"] * 4 for i in range(len(groups))],
                        synthetic.variants_of(centres[picked], count=1), k, embedder.name)
    sweep = {str(pool): {"real": real.pop(f"pool_{pool}"), "synthetic": fake.pop(f"pool_{pool}")}
             for pool in SWEEP_POOLS}
    return {"captions": str(captions_file), "embedder": embedder.name, "tiles": len(groups),
            "vectors": len(groups) * 4, "queries": len(picked), **real, f"recall_at_{k}_by_rescored_pool": sweep}


def _sweep_index(folder, vectors: np.ndarray, texts: list[list[str]], queries: np.ndarray, k: int,
                 embedder_name: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="tilescribe-bench-", dir=folder) as tmp:
        with Store(Path(tmp) / "real.tilescribe.sqlite", create=True) as store:
            run_id, tile_ids = create_run(store, len(texts), len(texts[0]), vectors.shape[1], embedder_name)
            write_tiles(store, tile_ids, vectors, [t for group in texts for t in group])
            result = measure_search(store, run_id, queries, k)
            run = store.run_info(run_id)
            index = FastIndexCache().get(store, run, wait=True)
            for pool in SWEEP_POOLS:
                scores = []
                for query in queries:
                    exact = search_vector(store, query, SearchRequest("bench", k, mode="exact"), run)
                    fast = index.search(store, query, k, rescored=pool)
                    scores.append(recall([h.score for h in exact], [s for _, _, s in fast], k))
                result[f"pool_{pool}"] = round(float(np.mean(scores)), 4)
    return result


# A second worker with one thread per math library: on a busy machine a 2-thread
# OpenMP pool can stall a single query for hundreds of milliseconds.
WORKER_VARIANTS = {"worker": {}, "worker_1thread": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                                                    "MKL_NUM_THREADS": "1"}}


def bench_worker(db: Path, texts: Sequence[str], k: int = 10) -> dict:
    """Round-trip latency of text queries to a warm worker process (embedding included), per variant.

    One variant at a time: an idle worker's OpenMP threads keep spinning for a while
    and would slow the other down if they took turns.
    """
    result = {"worker_queries": len(texts)}
    for name, env in WORKER_VARIANTS.items():
        proc = subprocess.Popen([sys.executable, "-m", f"{__package__.rsplit('.', 1)[0]}.worker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                env={**os.environ, **env})
        try:
            json.loads(proc.stdout.readline())  # "ready"
            started = time.perf_counter()
            # "fast" loads the embedder and the fast index now, so the timed queries find them warm.
            _ask(proc, {"id": 0, "cmd": "search", "db": str(db), "query": texts[0], "k": k, "mode": "fast"})
            result[f"{name}_warmup_s"] = round(time.perf_counter() - started, 1)
            seconds = []
            for number, text in enumerate(texts, start=1):
                t0 = time.perf_counter()
                _ask(proc, {"id": number, "cmd": "search", "db": str(db), "query": text, "k": k})
                seconds.append(time.perf_counter() - t0)
        finally:
            proc.stdin.close()
            proc.wait(timeout=120)
        result[f"{name}_p50_ms"], result[f"{name}_p95_ms"] = percentiles(seconds)
    return result


def _ask(proc, request: dict) -> list:
    proc.stdin.write(json.dumps(request) + "\n")
    proc.stdin.flush()
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker exited (code {proc.poll()}): see its messages above")
        reply = json.loads(line)
        if reply.get("id") == request["id"] and "event" not in reply:
            if not reply.get("ok"):
                raise RuntimeError(f"worker error: {reply.get('error')}")
            return reply["result"]
