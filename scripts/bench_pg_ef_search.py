"""Benchmark (not CI): recall@10 and latency of the PostgreSQL search path by `hnsw.ef_search`.

    nice -n 10 .venv/bin/python scripts/bench_pg_ef_search.py [--vectors 200000] [--ef 40 80 160 400 1000]

The synthetic index of bench-search (devtools/bench/synthetic.py) as a file, its exact top 10 of 100
queries as the yardstick, then copied into a throwaway PostgreSQL cluster (HNSW built after the
load) and searched through the product's path (search_vector) with each ef_search in turn: the one
setting vector_search.ef_search() would choose is replaced here, nothing else.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from tilescribe.devtools.bench.search_bench import measure_search, percentiles, recall
from tilescribe.devtools.bench.synthetic import build_synthetic_index
from tilescribe.devtools.pg_cluster import Cluster
from tilescribe.plugin.core.index.copying import copy_index
from tilescribe.plugin.core.index.opening import open_index
from tilescribe.plugin.core.index.postgres import vector_search
from tilescribe.plugin.core.index.store import Store
from tilescribe.plugin.core.search.search import SearchRequest, search_vector


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--ef", type=int, nargs="+", default=[40, 80, 160, 400, 1000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tilescribe-bench-") as tmp, Cluster() as cluster:
        path = Path(tmp) / "bench.tilescribe.sqlite"
        index = build_synthetic_index(path, args.vectors, n_queries=100)
        exact: list[list[float]] = []
        with Store(path) as store:
            base = measure_search(store, index.run_id, index.queries, 10, exact_scores=exact)
        result: dict = {"vectors": index.n_vectors, "file_fast_p50_ms": base["fast_p50_ms"],
                        "file_fast_recall_at_10": base["recall_at_10"],
                        "product_ef_search_k80": vector_search.ef_search(80)}
        url = cluster.url(cluster.create_database("ef"))
        with Store(path, readonly=True) as src, open_index(url, create=True) as dst:
            result["hnsw_build_s"] = copy_index(src, dst, batch=2000, index_memory="2GB").index_build_s
            run = dst.run_info(dst.latest_searchable_run())
            chosen = vector_search.ef_search
            for ef in args.ef:
                vector_search.ef_search = lambda k, ef=ef: ef
                seconds, recalls = [], []
                for query, yardstick in zip(index.queries, exact):
                    started = time.perf_counter()
                    hits = search_vector(dst, query, SearchRequest("bench", 10), run)
                    seconds.append(time.perf_counter() - started)
                    recalls.append(recall(yardstick, [h.score for h in hits], 10))
                p50, p95 = percentiles(seconds)
                result[f"ef_search_{ef}"] = {"p50_ms": p50, "p95_ms": p95,
                                             "recall_at_10": round(float(np.mean(recalls)), 4),
                                             "recall_at_10_min": float(np.min(recalls))}
            vector_search.ef_search = chosen
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
