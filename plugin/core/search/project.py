"""One query over many indexes: every raster of a project ranked together.

Each index (a file, one per raster or holding several rasters, or a PostgreSQL index: its URL or
libpq service, target.py) is searched at the latest captioned run of each of its rasters; the
hits of all of them are merged into one ranking by cosine (the same embedder made every vector,
so their scores are comparable). An index made with another embedder is never mixed in
silently: it is refused with its name, or left out when the caller asks
(`other_embedders="skip"`), to be searched on its own.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from ..embedding import Embedder
from ..errors import ModelError, QueryError, TileScribeError
from ..index.opening import AnyStore, open_server_index
from ..index.sqlite_errors import read_failure
from ..index.store import RunInfo, Store
from ..index.target import index_label, is_server_index
from ..raster.sources import unique_paths
from .fast_cache import FAST_MIN_VECTORS, FastIndexCache
from .fastsearch import FastIndex, pool_sizes
from .search import (SearchHit, SearchRequest, _best_variant_per_tile, _check_embedder, _fused, _hits,
                     check_extent, check_mode, check_query)

INDEX_GLOB = "*.tilescribe.sqlite"
OTHER_EMBEDDERS = ("refuse", "skip")
# In a project search a run of this many vectors is worth a warm in-memory index: twenty
# exact scans of 10k vectors cost ~100 ms together, twenty fast ones a few ms.
PROJECT_FAST_MIN_VECTORS = 5_000
MAX_OPEN_STORES = 32  # open index files kept by a StorePool (a file handle and page cache each)
# Runs below FAST_MIN_VECTORS are held in RAM as a fast index plus their float32 unit vectors
# (~1.8 kB per vector; MemoryRun): a fast index alone re-scores by reading ~100 vectors from
# SQLite per query (~3 ms), and twenty runs of 10k vectors then cost more than one of 1M.
MEMORY_RUNS_BYTES = 768 << 20


@dataclass(frozen=True)
class ProjectHit(SearchHit):
    """A hit with the index it came from (a file's path, or a PostgreSQL index's label: no password);
    `raster_path` names its raster."""

    index: str = ""

    def to_json(self) -> dict:
        return dict(super().to_json(), index=self.index)


@dataclass
class ProjectResult:
    hits: list[ProjectHit]
    searched: list[tuple[str, int]] = field(default_factory=list)  # (index file or label, run id)
    skipped: list[str] = field(default_factory=list)  # why an index or run was left out, one line each
    other_embedders: dict[str, str] = field(default_factory=dict)  # index file -> the embedder it was made with


def index_files(paths: Iterable[os.PathLike | str]) -> list[Path | str]:
    """The indexes named, a folder standing for every *.tilescribe.sqlite inside it (sorted); a
    PostgreSQL index (URL or service) as given; each once, in the order given. A QueryError for a
    path that is none of these."""
    found: list[Path | str] = []
    for given in paths:
        if is_server_index(given):
            found.append(str(given).strip())
            continue
        path = Path(given)
        if path.is_dir():
            inside = sorted(p for p in path.glob(INDEX_GLOB) if p.is_file())
            if not inside:
                raise QueryError(f"{path} is a folder; give an index file, or a folder holding some: it holds no "
                                 f"{INDEX_GLOB} (index its rasters first with `tilescribe index`).")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        elif path.exists():  # never opened: SQLite reading /dev/zero or a named pipe would block
            raise QueryError(f"{path} is not a regular file (a device or a named pipe): give index files "
                             "(*.tilescribe.sqlite) or folders holding them.")
        else:
            raise QueryError(f"Index {path} does not exist: give index files (*.tilescribe.sqlite) or folders "
                             "holding them.")
    return unique_paths(found)


def index_name(index: Path | str) -> str:
    """How a hit, a note or an error names an index: its path, or a PostgreSQL label (no password)."""
    return index_label(index) if isinstance(index, str) else str(index)


def latest_runs_per_raster(store: AnyStore) -> list[RunInfo]:
    """The latest run with captioned tiles of each raster of the index, oldest raster first.

    Told by each run's stored vector count (a primary-key read per run): `searchable_runs()`
    scans the tiles table, 16 ms per query at a million vectors.
    """
    latest: dict[int, RunInfo] = {}
    for run in store.runs():  # oldest first: a later run of a raster replaces it
        if store.vector_state(run.id)[0] > 0:
            latest[run.raster_id] = run
    return [latest[raster] for raster in sorted(latest)]


class MemoryRun:
    """One medium run in RAM: its fast index picks candidates (a scan of a few bytes per vector), then
    their exact cosines come from the run's float32 unit vectors held beside it, not from the file.

    Scanning every float32 vector instead costs the memory bandwidth: 20 runs of 10k vectors
    are 300 MB read per query (~55 ms here); re-scoring from the file costs ~2 ms of SQLite reads per run.
    """

    def __init__(self, fast: FastIndex, vectors: np.ndarray):
        self.fast, self.vectors = fast, vectors  # vectors[i] belongs to fast.rows["caption_id"][i]
        self.state = fast.state
        # Stage 2 widened once (exact: int8 to float32): a medium run's stage 1 keeps every row, and
        # widening all of them again per query cost more than the product itself (~10 % more RAM).
        self._stage2 = fast.rows["stage2"].astype(np.float32)

    @property
    def nbytes(self) -> int:
        return self.fast.nbytes + self.vectors.nbytes + self._stage2.nbytes

    def _candidates(self, projected: np.ndarray, allowed, rescored: int, survivors: int) -> np.ndarray:
        """FastIndex._candidates' rows, the same scores in the same order; when stage 1 keeps every
        row, without its copies (gathering all rows, widening stage 2)."""
        fast = self.fast
        if allowed is not None or survivors < fast.rows.n:
            return fast._candidates(projected, allowed, rescored, survivors)
        stage1 = fast.rows["stage1"]
        d1, d2 = stage1.shape[1], self._stage2.shape[1]
        second = stage1 @ projected[:d1] + self._stage2 @ projected[d1:d1 + d2]
        return fast._top(second, rescored)

    @classmethod
    def load(cls, store: Store, run: RunInfo) -> "MemoryRun":
        with store.snapshot():
            fast = FastIndex.load(store, run)
            ids = fast.rows["caption_id"]
            found, vectors = store.vector_reader(run).read(ids)
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(found) != len(ids) or not np.array_equal(found, ids):  # align by caption id
            aligned = np.zeros((len(ids), vectors.shape[1]), dtype=np.float32)
            aligned[np.searchsorted(ids, found)] = vectors
            vectors = aligned
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.where(norms == 0, 1.0, norms)
        fast.state = store.vector_state(run.id)
        return cls(fast, vectors)

    def search(self, query: np.ndarray, k: int, extent=None, exclude=()) -> list[tuple[int, int, float]]:
        """[(tile id, caption id, cosine)] best first, one per tile, at most k."""
        fast = self.fast
        query = np.asarray(query, dtype=np.float32)
        unit = query / (float(np.linalg.norm(query)) or 1.0)
        allowed = fast._allowed_rows(extent, exclude)
        total = fast.rows.n if allowed is None else len(allowed)
        rescored, survivors = pool_sizes(k, total)
        projected = fast.projection.query(query)
        tiles, caption_ids, tile_ids = fast.rows["tile"], fast.rows["caption_id"], fast.tiles["id"]
        while True:
            if rescored >= total:
                candidates = np.arange(fast.rows.n) if allowed is None else allowed
            else:
                candidates = self._candidates(projected, allowed, rescored, survivors)
            scores = self.vectors[candidates] @ unit
            result, seen = [], set()
            for at in np.argsort(-scores, kind="stable"):
                row = candidates[at]
                tile = int(tiles[row])
                if tile not in seen:
                    seen.add(tile)
                    result.append((int(tile_ids[tile]), int(caption_ids[row]), float(scores[at])))
                    if len(result) == k:
                        return result
            if rescored >= total:
                return result
            rescored, survivors = rescored * 4, survivors * 4


class MemoryRuns:
    """MemoryRuns of the last runs searched, within `max_bytes` (least recently used dropped)."""

    def __init__(self, max_bytes: int = MEMORY_RUNS_BYTES):
        self.max_bytes = max_bytes
        self._runs: OrderedDict[tuple[str, int], MemoryRun] = OrderedDict()
        self._bytes = 0  # their total, kept as they come and go (summing twenty runs per get cost ~0.5 ms)
        self._lock = threading.Lock()

    def get(self, store: Store, run: RunInfo) -> MemoryRun:
        key = (store.real_path, run.id)
        with self._lock:
            found = self._runs.pop(key, None)
            if found is not None:
                self._bytes -= found.nbytes
        if found is None or found.state != tuple(store.vector_state(run.id)):
            found = MemoryRun.load(store, run)
        with self._lock:
            self._runs[key] = found
            self._bytes += found.nbytes
            while len(self._runs) > 1 and self._bytes > self.max_bytes:
                self._bytes -= self._runs.popitem(last=False)[1].nbytes
        return found

    @property
    def nbytes(self) -> int:
        return self._bytes


class StorePool:
    """Read-only stores kept open between queries, the least recently used closed beyond `max_open`.

    A file replaced or deleted since it was opened is opened again (its inode changed); a PostgreSQL
    index whose connection broke (a server restart) is connected again.
    """

    def __init__(self, max_open: int = MAX_OPEN_STORES):
        self.max_open = max_open
        self._open: OrderedDict[str, tuple[tuple[int, int], AnyStore]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: os.PathLike | str) -> AnyStore:
        if is_server_index(path):
            key, identity = str(path).strip(), (0, 0)
        else:
            key = os.path.realpath(path)
            stat = os.stat(key)
            identity = (stat.st_dev, stat.st_ino)
        with self._lock:
            entry = self._open.pop(key, None)
            if entry is not None and (entry[0] != identity or not getattr(entry[1], "usable", True)):
                entry[1].close()
                entry = None
            if entry is None:
                store = open_server_index(key, readonly=True) if is_server_index(key) else Store(path, readonly=True)
                entry = (identity, store)
            self._open[key] = entry
            while len(self._open) > self.max_open:
                _, (_, oldest) = self._open.popitem(last=False)
                oldest.close()
            return entry[1]

    def __len__(self) -> int:
        return len(self._open)

    def close(self) -> list[str]:
        """Closes every open index; returns their paths."""
        with self._lock:
            for _, store in self._open.values():
                store.close()
            paths = list(self._open)
            self._open.clear()
        return paths


def search_project(paths: Sequence[os.PathLike | str], embedder: Embedder, request: SearchRequest, *,
                   pool: Optional[StorePool] = None, fast_cache: Optional[FastIndexCache] = None,
                   other_embedders: str = "refuse", extent_crs: Optional[str] = None,
                   memory: Optional[MemoryRuns] = None) -> ProjectResult:
    """Rank the tiles of every raster of every index for a text query, in one ranking.

    `paths` are index files, folders of them, or PostgreSQL indexes (URL or libpq service).
    `request.extent` is in `extent_crs` (any CRS rasterio reads: "EPSG:4326", WKT) and is
    transformed to each raster's CRS; without `extent_crs` it is taken in each raster's own CRS.
    `request.run_id` is not used: each raster is searched at its latest captioned run.
    With `memory` (kept between queries, as the worker does), runs too small for a fast index
    are scanned exactly in RAM; with `fast_cache`, larger ones through their fast index.
    """
    query = check_query(request.query, request.k)
    check_extent(request.extent, "The extent")
    check_mode(request.mode)  # the in-memory path below never reaches search's own check
    if other_embedders not in OTHER_EMBEDDERS:
        raise QueryError(f"other_embedders must be one of {', '.join(OTHER_EMBEDDERS)} (got {other_embedders!r}).")
    files = index_files(paths)
    own_pool = pool is None
    if pool is None:
        pool = StorePool(max_open=max(len(files), 1))
    try:
        result = ProjectResult([])
        targets, mismatched = [], []
        for path in files:
            name = index_name(path)
            try:
                store = _open(pool, path)
                runs = _guarded(path, latest_runs_per_raster, store)
            except TileScribeError as exc:
                given = {_identity(p) for p in paths if is_server_index(p) or not Path(p).is_dir()}
                if _identity(path) in given:  # named by the user: refused, as one index is
                    raise
                # Found in a folder: one damaged or foreign file must not stop the project's search.
                result.skipped.append(f"{name}: left out: {exc}")
                continue
            if not runs:
                result.skipped.append(f"{name}: no captioned tiles yet")
            for run in runs:
                problem = _embedder_problem(store, run, embedder)
                if problem:
                    mismatched.append(f"{name} (run {run.id}: {problem})")
                    result.other_embedders[name] = f"{run.embedder}, {run.dim}-d"
                else:
                    targets.append((path, run, store))
        if mismatched and other_embedders == "refuse":
            raise QueryError(
                f"{len(mismatched)} of the indexes were made with another embedding model than the query's "
                f"({embedder.name}), so their scores cannot be ranked with the others: "
                + "; ".join(mismatched) + ". Search them on their own with the model they were made with "
                "(--embedder), or leave them out (--skip-other-embedders).")
        result.skipped += [f"{m}: another embedder, left out" for m in mismatched]
        if not targets:
            raise QueryError("None of the indexes has captioned tiles made with this embedder: "
                             + ("; ".join(result.skipped) or "no index given") + ".")
        vector = np.asarray(embedder.embed([query])[0], dtype=np.float32)
        ranked: list[tuple[tuple, SearchHit, str]] = []
        reopen = len(files) > pool.max_open  # a pool smaller than the project closed the first ones
        for path, run, store in targets:
            if reopen:
                store = _open(pool, path)
            extent = request.extent
            if extent is not None and extent_crs:
                extent = _extent_in(store, run, request.extent, extent_crs)
                if isinstance(extent, str):
                    result.skipped.append(f"{index_name(path)} (run {run.id}): {extent}")
                    continue
            one = replace(request, extent=extent)
            hits = _guarded(path, _search_run, store, query, vector, one, run, fast_cache, memory)
            result.searched.append((index_name(path), run.id))
            for position, hit in enumerate(hits):
                # Dense: cosines of one embedder compare across indexes. Fused: each list is a
                # reciprocal-rank order, so the lists are interleaved by position, then cosine.
                key = (position, -hit.score) if request.lexical else (-hit.score, position)
                ranked.append((key, hit, index_name(path)))
        ranked.sort(key=lambda item: item[0])
        result.hits = [ProjectHit(**{**hit.__dict__, "rank": rank}, index=index)
                       for rank, (_, hit, index) in enumerate(ranked[:request.k], start=1)]
        return result
    finally:
        if own_pool:
            pool.close()


def _search_run(store: AnyStore, query: str, vector: np.ndarray, request: SearchRequest, run: RunInfo,
                cache: Optional[FastIndexCache], memory: Optional[MemoryRuns]) -> list[SearchHit]:
    return _hits(store, run, _ranked(store, query, vector, request, run, cache, memory))


def _ranked(store: AnyStore, query: str, vector: np.ndarray, request: SearchRequest, run: RunInfo,
            cache: Optional[FastIndexCache], memory: Optional[MemoryRuns] = None):
    if request.lexical:
        return _fused(store, query, vector, request, run, cache)
    if not isinstance(store, Store):  # PostgreSQL: the server's HNSW index is the fast path, as for one index
        return _best_variant_per_tile(store, run, vector, request)
    if (memory is not None and request.mode != "exact"
            and store.vector_state(run.id)[0] < FAST_MIN_VECTORS):
        return memory.get(store, run).search(vector, request.k, request.extent, request.exclude_tiles)
    index = _project_fast_index(store, run, request.mode, cache)
    if index is None:
        return _best_variant_per_tile(store, run, vector, request)
    return index.search(store, vector, request.k, request.extent, request.exclude_tiles,
                        rescored=pool_sizes(request.k, 0)[0])


def _project_fast_index(store: Store, run: RunInfo, mode: str, cache: Optional[FastIndexCache]):
    """As search's auto mode, with a lower bar: many medium runs add up to one large one."""
    if mode != "auto" or cache is None:
        from .search import _fast_index

        return _fast_index(store, run, mode, cache)
    if store.vector_state(run.id)[0] < PROJECT_FAST_MIN_VECTORS:
        return None
    return cache.get(store, run)


def _embedder_problem(store: AnyStore, run: RunInfo, embedder: Embedder) -> str:
    try:
        _check_embedder(store, run, embedder)
    except (QueryError, ModelError):
        return f"made with {run.embedder}, {run.dim}-d"
    return ""


def _extent_in(store: AnyStore, run: RunInfo, extent, extent_crs: str):
    """The extent transformed to the run's raster CRS, or why it cannot apply there (a raster
    without a CRS, or one with no transform from `extent_crs`: an engineering CRS)."""
    from rasterio.crs import CRS
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import CRSError, RasterioError
    from rasterio.warp import transform_bounds

    raster_wkt = store.raster_info(run.raster_id)["crs_wkt"]
    if not raster_wkt:
        return "raster without CRS, the extent cannot apply"
    try:
        source, target = CRS.from_user_input(extent_crs), CRS.from_user_input(raster_wkt)
    except CRSError as exc:
        raise QueryError(f"The extent's CRS {extent_crs!r} is not a CRS: {exc}. Give e.g. EPSG:4326.") from None
    if source == target:
        return tuple(extent)
    try:
        with _quiet_gdal():
            return tuple(transform_bounds(source, target, *extent, densify_pts=21))
    except (CPLE_BaseError, RasterioError, ValueError) as exc:  # CPLE_NotSupportedError: no coordinate operation
        return (f"no transform from {extent_crs} to its raster's CRS ({str(exc).splitlines()[0][:160]}), "
                "left out: give --extent in that raster's CRS and search it on its own")


def _quiet_gdal():
    """GDAL's own `ERROR 6:` line on stderr, whose failure the caller says in its own words."""
    from rasterio.env import Env

    return Env(CPL_LOG="/dev/null")


def _identity(index: os.PathLike | str) -> str:
    """What tells a named index from one found in a folder: a file's real path, a server index as given."""
    return str(index).strip() if is_server_index(index) else os.path.realpath(index)


def _open(pool: StorePool, path: Path | str) -> AnyStore:
    try:
        return pool.get(path)
    except sqlite3.DatabaseError as exc:
        raise read_failure(path, exc) or TileScribeError(f"Index {path} cannot be opened: {exc}.") from None


def _guarded(path: Path | str, call, *args):
    """`call(*args)`, with a damaged index's SQLite error told as the CLI tells it, naming the file."""
    try:
        return call(*args)
    except sqlite3.DatabaseError as exc:
        failure = read_failure(path, exc)
        if failure is None:
            raise
        raise failure from None
