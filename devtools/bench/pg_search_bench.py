"""bench-search --backend postgres: pgvector's HNSW beside the SQLite fast path, same vectors, same queries.

The synthetic index (synthetic.py) is built as a file and measured as bench-search always does
(exact and fast); then `tilescribe copy`'s code loads it into PostgreSQL (COPY binary for the
vectors, the HNSW graph built once after the load: plugin/core/index/postgres/bulk.py) and the same
queries run through the product's search path there. Recall@k of both is against the file's exact
search. PostgreSQL is a throwaway cluster (devtools/pg_cluster.py) unless --pg names a database;
there the loaded schema (bench_<vectors>_<dim>_<seed>) is kept, and a second run reuses it.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from ...plugin.core.index.copying import copy_index
from ...plugin.core.index.opening import open_index
from ...plugin.core.index.store import Store
from ...plugin.core.search.search import SearchRequest, search_vector
from .search_bench import measure_search, peak_rss_mb, percentiles, recall
from .synthetic import build_synthetic_index

WARMUP_QUERIES = 5  # first queries read the graph from disk into the page cache: not what a team sees


@contextlib.contextmanager
def _database(pg: Optional[str]) -> Iterator[tuple[str, str]]:
    """(URL, what it is): the given database, or a database in a throwaway cluster."""
    if pg:
        yield pg, "given"
        return
    from ..pg_cluster import Cluster

    with Cluster() as cluster:
        yield cluster.url(cluster.create_database("bench")), "throwaway cluster (fsync off, shared_buffers 128MB)"


def _with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def bench_postgres(n_vectors: int, *, dim: int = 384, queries: int = 100, k: int = 10, seed: int = 0,
                   folder: Optional[str] = None, pg: Optional[str] = None, build_memory: str = "2GB",
                   progress: Optional[Callable[[str], None]] = None) -> dict:
    say = progress or (lambda message: None)
    with tempfile.TemporaryDirectory(prefix="tilescribe-bench-", dir=folder) as tmp:
        path = Path(tmp) / "bench.tilescribe.sqlite"
        index = build_synthetic_index(path, n_vectors, dim=dim, n_queries=queries, seed=seed,
                                      progress=lambda n: say(f"  sqlite: {n:,} of {n_vectors:,} vectors written"))
        sqlite = {"build_s": round(index.build_s, 1), "file_bytes": path.stat().st_size}
        exact_scores: list[list[float]] = []
        with Store(path) as store:
            sqlite.update(measure_search(store, index.run_id, index.queries, k, exact_scores=exact_scores))
        with _database(pg) as (url, where):
            target = _with_schema(url, f"bench_{index.n_vectors}_{dim}_{seed}")
            with Store(path, readonly=True) as src, open_index(target, create=True) as dst:
                started = time.perf_counter()
                report = copy_index(src, dst, batch=2000, index_memory=build_memory,
                                    progress=lambda run, seen, total: say(f"  postgres: {seen:,} of {total:,} tiles"))
                load_s = time.perf_counter() - started - report.index_build_s
                postgres = {"server": where, "cached": not report.wrote_anything,
                            "load_s": None if not report.wrote_anything else round(load_s, 1),
                            "hnsw_build_s": report.index_build_s or None, "build_memory": build_memory,
                            # below postgres/bulk.py's BULK_MIN_VECTORS the graph grows row by row, inside load_s
                            "hnsw_built": ("earlier (the kept schema)" if not report.wrote_anything else
                                           "after the load" if report.index_build_s else "during the load")}
                postgres.update(_measure(dst, index.queries, exact_scores, k))
                from ...plugin.core.index.postgres.bulk import sizes

                postgres.update(sizes(dst))
    return {"vectors": index.n_vectors, "dim": dim, "variants_per_tile": 5, "queries": len(index.queries), "k": k,
            "sqlite": sqlite, "postgres": postgres, "peak_rss_mb": round(peak_rss_mb())}


def _measure(store, queries: np.ndarray, exact_scores: list[list[float]], k: int) -> dict:
    """The product's search path on PostgreSQL (HNSW, cosine): latency of each query, recall against exact."""
    run = store.run_info(store.latest_searchable_run())
    for query in queries[:WARMUP_QUERIES]:
        search_vector(store, query, SearchRequest("bench", k), run)
    seconds, recalls = [], []
    for query, exact in zip(queries, exact_scores):
        started = time.perf_counter()
        hits = search_vector(store, query, SearchRequest("bench", k), run)
        seconds.append(time.perf_counter() - started)
        recalls.append(recall(exact, [h.score for h in hits], k))
    p50, p95 = percentiles(seconds)
    return {"hnsw_p50_ms": p50, "hnsw_p95_ms": p95, f"recall_at_{k}": round(float(np.mean(recalls)), 4),
            f"recall_at_{k}_min": float(np.min(recalls)), "warmup_queries": WARMUP_QUERIES}
