"""Query -> ranked tiles: KNN over caption-variant vectors, score of a tile = its best variant."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np

from ..bounds import bounded
from ..captions import CaptionVariant
from ..embedding import Embedder
from ..errors import IndexFileError, QueryError
from ..index.embedder_identity import check_embedder
from ..index.store import RunInfo
from ..index.opening import AnyStore
from ..raster.tiling import Window
from .fast_cache import FAST_MIN_VECTORS, FastIndexCache
from .fastsearch import Best, FastIndex, pool_sizes
from .lexical import lexical_ranking, reciprocal_rank_fusion

MAX_QUERY_CHARS = 2000  # embedders truncate long input anyway; refuse pasted documents
MAX_K = 1000
KNN_LIMIT = 4096  # sqlite-vec's largest k
MODES = ("auto", "exact", "fast")
# Tiles taken from each ranking before fusing (k when k is larger); past rank 40 a tile gets
# under 0.6 of rank 1's share from that ranking (RRF_K = 60), so deeper lists change little.
FUSION_DEPTH = 40

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
    extent: Optional[Extent] = bounded(None, kind="extent")
    exclude_tiles: Sequence[int] = field(default=())
    # "exact": sqlite-vec KNN over every vector. "fast": in-memory first pass + exact
    # re-scoring (fastsearch.py); without a cache it loads the index for this one query.
    # "auto": fast for large runs once a cache holds a warm index, exact otherwise.
    mode: str = bounded("auto", choices=MODES)
    # Text queries: fuse the dense ranking with BM25 word matches over the caption variants
    # (reciprocal rank fusion). Off by default, the one place that says so (CLI and worker read
    # it): through search itself it loses on the RSICD proxy and the demo (docs/evaluation.md: Lexical fusion).
    lexical: bool = False


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise QueryError(f"Search mode {mode!r} is unknown: use one of {', '.join(MODES)}.")


def check_k(k: int) -> None:
    """A QueryError unless k is a number of results search can give."""
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise QueryError(f"k must be a whole number of results of at least 1 (got {k!r}).")
    if k > MAX_K:
        raise QueryError(f"k = {k} is too many results: ask for at most {MAX_K}.")


def check_query(query: str, k: int) -> str:
    """The query as it will be embedded, or a QueryError saying what to change."""
    check_k(k)
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


def check_extent(extent: Optional[Sequence[float]], name: str = "--extent") -> Optional[Extent]:
    """The extent as four finite numbers with min <= max, or a QueryError naming `name` (the
    CLI's option; search() itself says "the extent", as a worker request's field is called)."""
    if extent is None:
        return None
    try:
        values = tuple(float(v) for v in extent)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise QueryError(f"{name} must be four finite numbers MINX MINY MAXX MAXY (got {list(extent)}).")
    if values[0] > values[2] or values[1] > values[3]:
        raise QueryError(f"{name} must be MINX MINY MAXX MAXY with MINX <= MAXX and MINY <= MAXY.")
    return values


def resolve_run(store: AnyStore, run_id: Optional[int]) -> RunInfo:
    """The run to search (the latest with captions by default): looked up once per query."""
    if run_id is not None:
        return store.run_info(run_id)  # raises a clear error for an unknown run
    latest = store.latest_searchable_run()
    if latest is None:
        raise QueryError(
            f"Index {store.path} has no captioned tiles yet: index a raster or import captions first."
        )
    return store.run_info(latest)


def search(store: AnyStore, embedder: Embedder, request: SearchRequest,
           fast_cache: Optional[FastIndexCache] = None) -> list[SearchHit]:
    """Rank the tiles of one run for a text query."""
    query = check_query(request.query, request.k)
    check_extent(request.extent, "The extent")
    run = resolve_run(store, request.run_id)
    _check_embedder(store, run, embedder)
    vector = np.asarray(embedder.embed([query])[0], dtype=np.float32)
    if not request.lexical:
        return _hits(store, run, _dense(store, vector, request, run, fast_cache, request.k))
    return _hits(store, run, _fused(store, query, vector, request, run, fast_cache))


def search_vector(store: AnyStore, vector: np.ndarray, request: SearchRequest, run: RunInfo,
                  fast_cache: Optional[FastIndexCache] = None) -> list[SearchHit]:
    """Rank tiles of `run` (store.run_info) for a query vector (also used by "find similar")."""
    vector = np.asarray(vector, dtype=np.float32)
    return _hits(store, run, _dense(store, vector, request, run, fast_cache, request.k))


def _dense(store: AnyStore, vector: np.ndarray, request: SearchRequest, run: RunInfo,
           cache: Optional[FastIndexCache], depth: int) -> Best:
    """The `depth` best tiles by cosine; the fast path re-scores as many vectors as for request.k."""
    index = _fast_index(store, run, request.mode, cache)
    if index is None:
        return _best_variant_per_tile(store, run, vector, replace(request, k=depth))
    return index.search(store, vector, depth, request.extent, request.exclude_tiles,
                        rescored=pool_sizes(request.k, 0)[0])


def _fused(store: AnyStore, query: str, vector: np.ndarray, request: SearchRequest, run: RunInfo,
           cache: Optional[FastIndexCache]) -> Best:
    """Dense and BM25 rankings fused by reciprocal rank; each hit keeps the cosine of its variant."""
    depth = max(request.k, FUSION_DEPTH)
    dense = _dense(store, vector, request, run, cache, depth)
    words = lexical_ranking(store, run.id, query, depth, request.extent, request.exclude_tiles)
    best = {tile: (tile, caption, score) for tile, caption, score in dense}
    word_only = [(tile, caption) for tile, caption in words if tile not in best]
    if word_only:
        found, vectors = store.vector_reader(run).read(np.array([c for _, c in word_only], dtype=np.int64))
        cosines = dict(zip(found.tolist(), _cosines(vectors, vector)))
        best.update((tile, (tile, caption, cosines.get(caption, 0.0))) for tile, caption in word_only)
    fused = reciprocal_rank_fusion([[tile for tile, _, _ in dense], [tile for tile, _ in words]])
    return [best[tile] for tile, _ in fused[:request.k]]


def _cosines(vectors: np.ndarray, query: np.ndarray) -> list[float]:
    norms = np.linalg.norm(vectors, axis=1) * float(np.linalg.norm(query))
    return [float(x) for x in (vectors @ query) / np.where(norms == 0, 1.0, norms)]


def _fast_index(store: AnyStore, run: RunInfo, mode: str, cache: Optional[FastIndexCache]) -> Optional[FastIndex]:
    """The fast index to search with, or None for the exact search."""
    check_mode(mode)
    if mode == "exact" or not store.fast_search:
        return None  # PostgreSQL: its HNSW index is the fast path (index/postgres/vector_search.py)
    if mode == "fast":
        return cache.get(store, run, wait=True) if cache else FastIndex.load(store, run)
    # auto: loading a large index takes seconds, so only a cache that outlives queries pays off.
    if cache is None or store.vector_state(run.id)[0] < FAST_MIN_VECTORS:
        return None
    return cache.get(store, run)


def _check_embedder(store: AnyStore, run: RunInfo, embedder: Embedder) -> None:
    disagreement = store.vector_dim_disagreement(run)
    if disagreement:
        raise IndexFileError(f"Index {store.path} is damaged: {disagreement}. Restore a copy, or index the raster "
                             "again into a new file (--db).")
    if run.dim != embedder.dim:
        raise QueryError(
            f"Run {run.id} of {store.path} was embedded with {run.embedder} ({run.dim}-d); "
            f"the query embedder is {embedder.name} ({embedder.dim}-d). Search with --embedder "
            f"pointing at {run.embedder}."
        )
    check_embedder(store, run.embedder_id, embedder)  # same vectors, whatever the folder is called


def _best_variant_per_tile(store: AnyStore, run: RunInfo, vector: np.ndarray, request: SearchRequest):
    """[(tile_db_id, caption_id, similarity)] best first, one entry per tile, at most k."""
    excluded = set(request.exclude_tiles)
    k_variants = min(KNN_LIMIT, max(64, request.k * 8))
    while True:
        rows = store.nearest_variants(run, vector, k_variants, request.extent)
        _refuse_nan_distances(store, run, rows)
        best = _first_per_tile(rows, excluded, request.k)
        if len(best) >= request.k or len(rows) < k_variants:
            return best
        if k_variants == KNN_LIMIT:  # more than 4096 variants before k distinct tiles: rare; scan exactly
            rows = store.all_variants_by_distance(run, vector, request.extent)
            _refuse_nan_distances(store, run, rows)
            return _first_per_tile(rows, excluded, request.k)
        k_variants = min(KNN_LIMIT, k_variants * 4)


def _refuse_nan_distances(store: AnyStore, run: RunInfo, rows) -> None:
    """sqlite-vec gives no distance (None) for a NaN vector: say the file is damaged (was a TypeError)."""
    bad = [caption_id for _, caption_id, distance in rows if distance is None or not math.isfinite(distance)]
    if bad:
        raise IndexFileError(
            f"Index {store.path} holds vectors that are not numbers (NaN or infinite: captions {bad[:5]} of run "
            f"{run.id}): it is damaged or was changed by another program. Run `tilescribe check --db "
            f"{store.path}`, restore a copy, or index the raster again into a new file (--db).")


def _first_per_tile(rows, excluded: set, k: int) -> list[tuple[int, int, float]]:
    seen, best = set(excluded), []
    for tile_id, caption_id, distance in rows:
        if tile_id not in seen:
            seen.add(tile_id)
            best.append((tile_id, caption_id, 1.0 - distance))
            if len(best) == k:
                break
    return best


def _hits(store: AnyStore, run: RunInfo, best) -> list[SearchHit]:
    raster = store.raster_info(run.raster_id)
    tiles, captions = store.hit_rows([b[0] for b in best], [b[1] for b in best])
    hits = []
    gone = [c for t, c, _ in best if c not in captions or t not in tiles]
    if gone:  # caption rows deleted under their vectors (was a KeyError)
        raise IndexFileError(
            f"Index {store.path} has vectors whose captions are gone (captions {gone[:5]} of run {run.id}): it "
            f"is damaged or was changed by another program. Run `tilescribe check --db {store.path}`, restore a "
            "copy, or index the raster again into a new file (--db).")
    for rank, (tile_db_id, caption_id, score) in enumerate(best, start=1):
        window, bbox = Window(*tiles[tile_db_id][:4]), tuple(tiles[tile_db_id][4:])
        hits.append(SearchHit(
            rank=rank, tile_id=window.key, score=float(score), window=window, bbox=bbox,
            crs=raster["crs_label"], caption=CaptionVariant(*captions[caption_id]).display_text(),
            run_id=run.id, tile_db_id=tile_db_id, raster_path=raster["path"],
        ))
    return hits


def similar_tiles(store: AnyStore, tile_db_id: int, k: int = SearchRequest.k,
                  fast_cache: Optional[FastIndexCache] = None) -> list[SearchHit]:
    """Tiles whose captions read like this tile's: each of its variants is a query, best score wins."""
    check_k(k)
    tile = store.tile(tile_db_id)
    if tile is None or tile.status != "done":
        raise QueryError(f"Tile {tile_db_id} of {store.path} has no captions to compare with.")
    request = SearchRequest("similar", k=k, exclude_tiles=(tile_db_id,))
    best: dict[int, SearchHit] = {}
    run = store.run_info(tile.run_id)
    for vector in store.vectors_of(tile_db_id, run):
        for hit in search_vector(store, vector, request, run, fast_cache):
            if hit.tile_db_id not in best or hit.score > best[hit.tile_db_id].score:
                best[hit.tile_db_id] = hit
    ranked = sorted(best.values(), key=lambda h: -h.score)[:k]
    return [SearchHit(**{**h.__dict__, "rank": rank}) for rank, h in enumerate(ranked, start=1)]


def tile_at(store: AnyStore, run_id: int, x: float, y: float) -> Optional[int]:
    """Id of the run's captioned tile containing point (x, y) in the raster's CRS, if any."""
    return store.tile_at(run_id, x, y)
