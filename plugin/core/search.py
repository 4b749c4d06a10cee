"""Query -> ranked tiles: KNN over caption-variant vectors, score of a tile = its best variant."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .captions import CaptionVariant
from .embedder_identity import check_embedder
from .embedding import Embedder
from .errors import QueryError
from .fast_cache import FAST_MIN_VECTORS, FastIndexCache
from .fastsearch import FastIndex
from .store import Store, vec_table
from .tiling import Window

MAX_QUERY_CHARS = 2000  # embedders truncate long input anyway; refuse pasted documents
MAX_K = 1000
KNN_LIMIT = 4096  # sqlite-vec's largest k
MODES = ("auto", "exact", "fast")

Extent = tuple[float, float, float, float]  # minx, miny, maxx, maxy in the raster's CRS


@dataclass(frozen=True)
class SearchHit:
    rank: int
    tile_id: str  # stable key of the tile's window
    score: float  # cosine similarity of the best-matching variant
    window: Window
    bbox: Extent
    crs: str
    caption: str  # the best-matching variant's text
    run_id: int
    tile_db_id: int
    raster_path: str = ""

    def to_json(self) -> dict:
        return {
            "rank": self.rank,
            "tile_id": self.tile_id,
            "score": round(self.score, 6),
            "window": self.window.as_list(),
            "bbox": list(self.bbox),
            "crs": self.crs,
            "caption": self.caption,
            "run_id": self.run_id,
            "raster": self.raster_path,
        }


@dataclass(frozen=True)
class SearchRequest:
    query: str
    k: int = 10
    run_id: Optional[int] = None
    extent: Optional[Extent] = None
    exclude_tiles: Sequence[int] = field(default=())
    # "exact": sqlite-vec KNN over every vector. "fast": in-memory first pass + exact
    # re-scoring (fastsearch.py); without a cache it loads the index for this one query.
    # "auto": fast for large runs once a cache holds a warm index, exact otherwise.
    mode: str = "auto"


def check_query(query: str, k: int) -> str:
    """The query as it will be embedded, or a QueryError saying what to change."""
    if not isinstance(k, int) or k <= 0:
        raise QueryError(f"k must be a whole number of results of at least 1 (got {k!r}).")
    if k > MAX_K:
        raise QueryError(f"k = {k} is too many results: ask for at most {MAX_K}.")
    cleaned = "".join(ch if ch.isprintable() else " " for ch in (query or ""))
    cleaned = " ".join(cleaned.split())
    if not cleaned:
        raise QueryError("The query is empty: describe what you look for, e.g. \"a bridge over a river\".")
    if len(cleaned) > MAX_QUERY_CHARS:
        raise QueryError(
            f"The query is {len(cleaned)} characters long; keep it under {MAX_QUERY_CHARS} "
            "(a sentence or two describing a place)."
        )
    return cleaned


def searchable_runs(store: Store) -> list[int]:
    """Ids of the runs that have captioned tiles, oldest first."""
    return [row[0] for row in store.conn.execute(
        "select distinct run_id from tiles where status = 'done' order by run_id")]


def check_extent(extent: Optional[Sequence[float]]) -> Optional[Extent]:
    """The extent as four finite numbers with min <= max, or a QueryError saying what to change."""
    if extent is None:
        return None
    try:
        values = tuple(float(v) for v in extent)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise QueryError(f"--extent must be four finite numbers MINX MINY MAXX MAXY (got {list(extent)}).")
    if values[0] > values[2] or values[1] > values[3]:
        raise QueryError("--extent must be MINX MINY MAXX MAXY with MINX <= MAXX and MINY <= MAXY.")
    return values


def resolve_run(store: Store, run_id: Optional[int]) -> int:
    if run_id is not None:
        store.run_info(run_id)  # raises a clear error for an unknown run
        return run_id
    latest = store.latest_searchable_run()
    if latest is None:
        raise QueryError(
            f"Index {store.path} has no captioned tiles yet: index a raster or import captions first."
        )
    return latest


def search(store: Store, embedder: Embedder, request: SearchRequest,
           fast_cache: Optional[FastIndexCache] = None) -> list[SearchHit]:
    """Rank the tiles of one run for a text query."""
    query = check_query(request.query, request.k)
    check_extent(request.extent)
    run_id = resolve_run(store, request.run_id)
    _check_embedder(store, run_id, embedder)
    vector = embedder.embed([query])[0]
    return search_vector(store, vector, request, run_id, fast_cache)


def search_vector(store: Store, vector: np.ndarray, request: SearchRequest, run_id: int,
                  fast_cache: Optional[FastIndexCache] = None) -> list[SearchHit]:
    """Rank tiles for a query vector (also used by "find similar")."""
    vector = np.asarray(vector, dtype=np.float32)
    index = _fast_index(store, run_id, request.mode, fast_cache)
    if index is None:
        best = _best_variant_per_tile(store, run_id, vector, request)
    else:
        best = index.search(store, vector, request.k, request.extent, request.exclude_tiles)
    return _hits(store, run_id, best)


def _fast_index(store: Store, run_id: int, mode: str, cache: Optional[FastIndexCache]) -> Optional[FastIndex]:
    """The fast index to search with, or None for the exact search."""
    if mode not in MODES:
        raise QueryError(f"Search mode {mode!r} is unknown: use one of {', '.join(MODES)}.")
    if mode == "exact":
        return None
    if mode == "fast":
        return cache.get(store, run_id, wait=True) if cache else FastIndex.load(store, run_id)
    # auto: loading a large index takes seconds, so only a cache that outlives queries pays off.
    if cache is None or store.vector_state(run_id)[0] < FAST_MIN_VECTORS:
        return None
    return cache.get(store, run_id)


def _check_embedder(store: Store, run_id: int, embedder: Embedder) -> None:
    run = store.run_info(run_id)
    if run["dim"] != embedder.dim:
        raise QueryError(
            f"Run {run_id} of {store.path} was embedded with {run['embedder']} ({run['dim']}-d); "
            f"the query embedder is {embedder.name} ({embedder.dim}-d). Search with --embedder "
            f"pointing at {run['embedder']}."
        )
    check_embedder(store, run["embedder_id"], embedder)  # same vectors, whatever the folder is called


def _best_variant_per_tile(store: Store, run_id: int, vector: np.ndarray, request: SearchRequest):
    """[(tile_db_id, caption_id, similarity)] best first, one entry per tile, at most k."""
    table = vec_table(store.run_info(run_id)["embedder_id"])
    where, params = _filters(run_id, request.extent)
    excluded = set(request.exclude_tiles)
    k_variants = min(KNN_LIMIT, max(64, request.k * 8))
    while True:
        rows = store.conn.execute(
            f"select tile_id, caption_id, distance from {table} where embedding match ? and k = ?"
            f" and {where} order by distance",
            (vector.tobytes(), k_variants, *params),
        ).fetchall()
        best = _first_per_tile(rows, excluded, request.k)
        if len(best) >= request.k or len(rows) < k_variants:
            return best
        if k_variants == KNN_LIMIT:
            return _scan_best_per_tile(store, table, where, params, vector, excluded, request.k)
        k_variants = min(KNN_LIMIT, k_variants * 4)


def _filters(run_id: int, extent: Optional[Extent]) -> tuple[str, tuple]:
    where, params = "run_id = ?", (run_id,)
    if extent is not None:
        minx, miny, maxx, maxy = extent
        where += " and maxx >= ? and minx <= ? and maxy >= ? and miny <= ?"
        params += (minx, maxx, miny, maxy)
    return where, params


def _first_per_tile(rows, excluded: set, k: int) -> list[tuple[int, int, float]]:
    seen, best = set(excluded), []
    for tile_id, caption_id, distance in rows:
        if tile_id not in seen:
            seen.add(tile_id)
            best.append((tile_id, caption_id, 1.0 - distance))
            if len(best) == k:
                break
    return best


def _scan_best_per_tile(store, table, where, params, vector, excluded, k):
    # More than 4096 variants before k distinct tiles: rare; scan exactly instead.
    rows = store.conn.execute(
        f"select tile_id, caption_id, vec_distance_cosine(embedding, ?) as d from {table}"
        f" where {where} order by d",
        (vector.tobytes(), *params),
    ).fetchall()
    return _first_per_tile(rows, excluded, k)


def _hits(store: Store, run_id: int, best) -> list[SearchHit]:
    run = store.run_info(run_id)
    raster = store.raster_info(run["raster_id"])
    hits = []
    for rank, (tile_db_id, caption_id, score) in enumerate(best, start=1):
        tile = store.tile(tile_db_id)
        row = store.conn.execute(
            "select one_sentence, feature, caption from captions where id = ?", (caption_id,)
        ).fetchone()
        hits.append(SearchHit(
            rank=rank, tile_id=tile.window.key, score=float(score), window=tile.window,
            bbox=tile.bbox, crs=raster["crs_label"], caption=CaptionVariant(*row).display_text(),
            run_id=run_id, tile_db_id=tile_db_id, raster_path=raster["path"],
        ))
    return hits


def similar_tiles(store: Store, tile_db_id: int, k: int = 10,
                  fast_cache: Optional[FastIndexCache] = None) -> list[SearchHit]:
    """Tiles whose captions read like this tile's: each of its variants is a query, best score wins."""
    tile = store.tile(tile_db_id)
    if tile is None or tile.status != "done":
        raise QueryError(f"Tile {tile_db_id} of {store.path} has no captions to compare with.")
    request = SearchRequest("similar", k=k, exclude_tiles=(tile_db_id,))
    best: dict[int, SearchHit] = {}
    for vector in store.vectors_of(tile_db_id):
        for hit in search_vector(store, vector, request, tile.run_id, fast_cache):
            if hit.tile_db_id not in best or hit.score > best[hit.tile_db_id].score:
                best[hit.tile_db_id] = hit
    ranked = sorted(best.values(), key=lambda h: -h.score)[:k]
    return [SearchHit(**{**h.__dict__, "rank": rank}) for rank, h in enumerate(ranked, start=1)]


def tile_at(store: Store, run_id: int, x: float, y: float) -> Optional[int]:
    """Id of the run's captioned tile containing point (x, y) in the raster's CRS, if any."""
    row = store.conn.execute(
        "select id from tiles where run_id = ? and status = 'done' and minx <= ? and maxx >= ?"
        " and miny <= ? and maxy >= ? order by (maxx - minx) * (maxy - miny), id limit 1",
        (run_id, x, x, y, y),
    ).fetchone()
    return row[0] if row else None
