"""Dense search on the PostgreSQL index: pgvector's HNSW for the k nearest, an exact scan where it
could drop results.

- No extent: HNSW (cosine) with `hnsw.iterative_scan = strict_order`, so the run filter keeps the
  scan going until k rows match, and `hnsw.ef_search` raised (ef_search()). Should it still
  return fewer than k rows while the run holds more vectors, the exact scan answers instead.
- An extent: the exact scan over the tiles the GiST index finds in the box. HNSW visits the nearest
  vectors of the whole table and filters afterwards, so a small box drops results (or scans the
  table through the graph); the box's tiles are far fewer than the index, and exact is exact.
HNSW is approximate: recall@10 below 1 is possible without an extent (bench-search measures it).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from psycopg import sql

from ..store_reads import RunInfo
from .schema import vector_table

EF_SEARCH_MIN, EF_SEARCH_MAX = 100, 1000  # above pgvector's default 40 (see ef_search); its largest


def ef_search(k: int) -> int:
    """HNSW's candidate list for k results: twice k, at least EF_SEARCH_MIN, at most EF_SEARCH_MAX.

    Measured on random unit 64-d vectors (the hard case; captions cluster): with 20,000, pgvector's
    default 40 gave recall@10 0.30; with 10,000 and this setting, recall@10, @64, @100 and @1000 were
    1.00, 5-11 ms a query (2 busy cores, load ~9).
    """
    return min(EF_SEARCH_MAX, max(EF_SEARCH_MIN, 2 * int(k)))


def table_of(run: RunInfo) -> str:
    return vector_table(run.embedder_id)


def sql_count(table: str) -> sql.Composed:
    return sql.SQL("select count(*) from {} where run_id = %s").format(sql.Identifier(table))


def extent_filter(store: Any, run_id: int, extent) -> tuple[str, tuple]:
    """SQL (starting with ' and') and parameters keeping tiles `t` whose box meets the extent (GiST)."""
    if extent is None:
        return "", ()
    srid = store._one("select ra.srid from runs r join rasters ra on ra.id = r.raster_id where r.id = %s",
                      (run_id,))[0]
    return " and t.geom && ST_MakeEnvelope(%s, %s, %s, %s, %s)", (*map(float, extent), srid)


def nearest(store: Any, run: RunInfo, vector: np.ndarray, k: int, extent) -> list[tuple[int, int, float]]:
    """[(tile id, caption id, cosine distance)] of the k nearest variants of the run."""
    if extent is not None:
        return exact(store, run, vector, k, extent)
    conn = store._conn
    with conn.transaction():
        conn.execute(sql.SQL("set local hnsw.ef_search = {}").format(
            sql.Literal(ef_search(k))))
        if store.iterative_scans():  # older pgvector: fewer rows under the run filter, then the exact scan
            conn.execute("set local hnsw.iterative_scan = strict_order")
        rows = conn.execute(sql.SQL(
            "select tile_id, caption_id, embedding <=> %s as d from {} where run_id = %s"
            " order by embedding <=> %s limit %s").format(sql.Identifier(table_of(run))),
            (vector, run.id, vector, k)).fetchall()
    if len(rows) < k and len(rows) < store.vector_state(run.id)[0]:
        return exact(store, run, vector, k, None)
    return rows


def exact(store: Any, run: RunInfo, vector: np.ndarray, k: Optional[int],
          extent) -> list[tuple[int, int, float]]:
    """Every (or the k nearest) variant of the run by exact cosine distance, nearest first."""
    where, params = extent_filter(store, run.id, extent)
    join = " join tiles t on t.id = v.tile_id" if extent is not None else ""
    limit = " limit %s" if k is not None else ""
    # `+ 0`: an expression the HNSW index cannot serve, so the planner scans exactly.
    query = sql.SQL("select v.tile_id, v.caption_id, (v.embedding <=> %s) + 0 as d from {} v" + join +
                    " where v.run_id = %s" + where + " order by d, v.caption_id" + limit)
    return store._conn.execute(query.format(sql.Identifier(table_of(run))),
                               (vector, run.id, *params, *((k,) if k is not None else ()))).fetchall()


class VectorReader:
    """Reads a run's float vectors by caption id (for "find similar", fusion and the check)."""

    def __init__(self, store: Any, run: RunInfo):  # store: the PgStore (not imported: it imports this)
        self._store, self.table, self.dim = store, table_of(run), run.dim

    def read(self, caption_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, ascending; their float32 vectors) for these caption ids."""
        rows = self._store._rows(sql.SQL("select caption_id, embedding from {} where caption_id = any(%s)"
                                         " order by caption_id").format(sql.Identifier(self.table)),
                                 ([int(i) for i in np.asarray(caption_ids).ravel()],))
        ids = np.array([row[0] for row in rows], dtype=np.int64)
        vectors = np.array([_array(row[1]) for row in rows], dtype=np.float32).reshape(-1, self.dim)
        return ids, vectors


def _array(value) -> np.ndarray:
    """A vector column's value as numpy (the adapter gives its Vector type, or numpy)."""
    return value.to_numpy() if hasattr(value, "to_numpy") else np.asarray(value)
