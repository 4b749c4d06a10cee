"""Fast search of one large run: a PCA-projected in-memory first pass, then exact re-scoring from the file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import IndexFileError
from ..index.store import RunInfo, Store, VectorReader

# Every vector is held in RAM as its projection on the run's leading principal components
# (PCA of unit vectors): the first STAGE1_DIMS as float32, scored for every vector (a million:
# 128 MB streamed per query); the next STAGE2_DIMS as int8, re-ranking the stage-1 survivors;
# TAIL_DIMS more as int8, which with the others rank the pool before the exact reads. Past
# 192 components the synthetic vectors keep 6 % of their variance (real captions less): the
# approximate cosine's error is then ~0.005 (1 sigma), which the exact reads absorb. 300 bytes a
# vector in all (1M: 300 MB). Measured with bench-search; see docs/performance.md.
STAGE1_DIMS = 32
STAGE2_DIMS = 64
TAIL_DIMS = 96
PCA_SAMPLE = 20_000
READ_CHUNK = 50_000
# An int8 step is 1/127 of the sample's largest |component|, times this margin for later appends.
INT8_MARGIN = 1.5
# Vectors read back from the file for the exact score, by the approximate score: of the best
# max(EXACT_TILES_MIN, EXACT_TILES_PER_HIT * k) tiles those within a margin of the k-th best,
# and of each its best VARIANTS_PER_TILE variants within the margin of its best. The margin is
# MARGIN_SIGMAS x the approximate score's expected error for this query (dropped components,
# int8 rounding): ~0.03 on synthetic vectors, so at 1M and k = 10 ~45 vectors are read instead
# of ~120, recall unchanged (a read costs 10-20 us). Three variants, not two: variants closer
# than the error can swap.
EXACT_TILES_MIN = 50
EXACT_TILES_PER_HIT = 5
VARIANTS_PER_TILE = 3
MARGIN_SIGMAS = 8.0

Best = list[tuple[int, int, float]]  # (tile id, caption id, cosine), best first, one per tile


def pool_sizes(k: int, n: int, rescored: Optional[int] = None) -> tuple[int, int]:
    """(pool ranked by the approximate cosine, stage-1 survivors) for k tiles out of n vectors.

    Chosen with bench-search: at a million synthetic vectors, 33,000 survivors (n / 30) and a
    pool of 2,000 give recall@10 of 0.999; at k = 50 (pool 10,000) 100,000 survivors gave 0.9992
    and 150,000 gave 1.0, hence a share growing with the pool; at 200,000 vectors 10,000 missed
    one of 2,000 top tiles, 15,000 none, hence at least 8 per pooled vector. Real caption vectors needed
    about twice the pool of synthetic ones for the same recall (--real-captions), hence 2,000.
    """
    rescored = rescored or max(2000, 200 * k)
    return rescored, max(8 * rescored, n * max(rescored, 2000) // 60_000)


@dataclass(frozen=True)
class Projection:
    """Unit vectors, centred, onto the leading principal components of a sample of the run's vectors.

    Components past `float_dims` are stored as int8: `step` is each one's quantisation step
    (1 for the float ones). A query is projected uncentred and times the step, so that a
    row's projection @ the query's = its cosine minus mean @ query (the same for every row).
    """

    mean: np.ndarray
    basis: np.ndarray  # (dim, dims) float32, leading component first
    step: np.ndarray  # (dims,) float32
    float_dims: int
    tail_variance: float = 0.0  # the sample's mean variance along a component left out

    @classmethod
    def fit(cls, sample: np.ndarray, dims: int, float_dims: int) -> "Projection":
        sample = _unit(np.asarray(sample, dtype=np.float32)).astype(np.float64)
        dim = sample.shape[1]
        if not len(sample):  # a run without vectors yet: any basis will do
            mean, basis, tail = np.zeros(dim), np.eye(dim, dims), np.inf
        else:
            mean = sample.mean(axis=0)
            centred = sample - mean
            values, vectors = np.linalg.eigh(centred.T @ centred)  # eigenvalues ascending
            basis = vectors[:, ::-1][:, :dims]
            tail = float(values[:dim - dims].mean()) / len(sample) if dims < dim else 0.0
            if len(sample) < 4 * dim:  # too few to tell the spread left out: no margin
                tail = np.inf
        peak = np.abs((sample - mean) @ basis).max(axis=0) if len(sample) else np.ones(dims)
        # A component the sample does not spread along (fewer vectors than dimensions: round-off,
        # down to 1e-46, which float32 makes 0) gets step 1: its values round to 0, not to inf.
        step = np.where(peak > 1e-6 * peak.max(initial=0.0), peak * INT8_MARGIN / 127, 1.0)
        step[:float_dims] = 1.0
        return cls(mean.astype(np.float32), np.ascontiguousarray(basis, dtype=np.float32),
                   step.astype(np.float32), float_dims, max(tail, 0.0))

    def rows(self, vectors: np.ndarray) -> np.ndarray:
        """(n, dims) float32 projections; columns past the float ones in int8 steps, unrounded."""
        return ((_unit(np.asarray(vectors, dtype=np.float32)) - self.mean) @ self.basis) / self.step

    def query(self, query: np.ndarray) -> np.ndarray:
        return (np.asarray(query, dtype=np.float32) @ self.basis) * self.step

    def margin(self, query: np.ndarray) -> float:
        """MARGIN_SIGMAS x the expected error of this query's approximate scores: the query's
        length outside the basis times the spread left there, and the int8 rounding."""
        if not np.isfinite(self.tail_variance):
            return np.inf
        query = np.asarray(query, dtype=np.float64)
        inside = query @ self.basis
        outside = max(0.0, float(query @ query - inside @ inside))
        rounding = (inside * self.step)[self.float_dims:]
        return MARGIN_SIGMAS * float(np.sqrt(self.tail_variance * outside + rounding @ rounding / 12))


class Columns:
    """Equal-length numpy columns that grow by appending; spare capacity keeps appends cheap."""

    def __init__(self, **columns: np.ndarray):
        self.n = len(next(iter(columns.values())))
        self._data = columns

    def __getitem__(self, name: str) -> np.ndarray:
        return self._data[name][:self.n]

    def append(self, **columns: np.ndarray) -> None:
        added = len(next(iter(columns.values())))
        capacity = len(next(iter(self._data.values())))
        if self.n + added > capacity:
            capacity = max(self.n + added, capacity + capacity // 4 + 1024)
            for name, old in self._data.items():
                new = np.empty((capacity, *old.shape[1:]), dtype=old.dtype)
                new[:self.n] = old[:self.n]
                self._data[name] = new
        for name, values in columns.items():
            self._data[name][self.n:self.n + added] = values
        self.n += added

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self._data.values())


class FastIndex:
    """One run's vectors, projected, in RAM; knows the run's write state to tell when it is stale."""

    def __init__(self, run: RunInfo, state: tuple[int, int], projection: Projection,
                 rows: Columns, tiles: Columns):
        self.run, self.state, self.projection = run, state, projection
        self.run_id = run.id
        self.rows = rows    # stage1, stage2, tail (projected), caption_id, tile (position in `tiles`)
        self.tiles = tiles  # id, bbox
        self._rng = np.random.default_rng(0)

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.tiles.nbytes + self.projection.basis.nbytes

    @classmethod
    def load(cls, store: Store, run: RunInfo) -> "FastIndex":
        """Read and project every vector of the run (in chunks: memory stays at the projected size)."""
        run_id, dim = run.id, run.dim
        with store.snapshot():
            state = store.vector_state(run_id)
            caption_ids, tile_ids = store.run_caption_ids(run_id)
            sample = np.sort(np.random.default_rng(0).permutation(caption_ids)[:PCA_SAMPLE])
            reader = store.vector_reader(run)
            projection = Projection.fit(reader.read(sample)[1], min(dim, STAGE1_DIMS + STAGE2_DIMS + TAIL_DIMS),
                                        STAGE1_DIMS)
            stage1, stage2, tail = _projected_rows(store, reader, caption_ids, projection)
            tile_list, tile_pos = np.unique(tile_ids, return_inverse=True)
            tiles = Columns(id=tile_list, bbox=store.tile_boxes(run_id, tile_list))
        rows = Columns(stage1=stage1, stage2=stage2, tail=tail, caption_id=caption_ids,
                       tile=tile_pos.astype(np.int32))
        return cls(run, (len(caption_ids), state[1]), projection, rows, tiles)

    def refresh(self, store: Store) -> bool:
        """Catch up with the file: True when current (new tiles appended), False when it needs a reload."""
        state = store.vector_state(self.run_id)
        if state[1] == self.state[1]:
            return True
        with store.snapshot():
            state = store.vector_state(self.run_id)
            last = int(self.rows["caption_id"][-1]) if self.rows.n else 0
            caption_ids, tile_ids = store.run_caption_ids(self.run_id, after=last)
            if self.rows.n + len(caption_ids) != state[0] or np.isin(tile_ids, self.tiles["id"]).any():
                return False  # captions were replaced or deleted: appending cannot express that
            stage1, stage2, tail = _projected_rows(store, store.vector_reader(self.run), caption_ids,
                                                   self.projection)
            new_tiles, tile_pos = np.unique(tile_ids, return_inverse=True)
            boxes = store.tile_boxes(self.run_id, new_tiles)
        self.rows.append(stage1=stage1, stage2=stage2, tail=tail, caption_id=caption_ids,
                         tile=(tile_pos + self.tiles.n).astype(np.int32))
        self.tiles.append(id=new_tiles, bbox=boxes)
        self.state = (self.rows.n, state[1])
        return True

    def search(self, store: Store, query: np.ndarray, k: int, extent=None, exclude: Sequence[int] = (),
               rescored: Optional[int] = None) -> Best:
        """The k best tiles, each with its best variant; `rescored` overrides the candidate count."""
        query = np.asarray(query, dtype=np.float32)
        allowed = self._allowed_rows(extent, exclude)
        total = self.rows.n if allowed is None else len(allowed)
        rescored, survivors = pool_sizes(k, total, rescored)
        projected = self.projection.query(query)
        while True:
            if rescored >= total:  # every allowed vector: exact
                candidates = np.arange(self.rows.n) if allowed is None else allowed
            else:
                candidates = self._candidates(projected, allowed, rescored, survivors)
            best = self._rescore(store, candidates, query, projected, k)
            if len(best) >= k or rescored >= total:
                return best
            # Few distinct tiles among the candidates (tiles with many similar variants): widen.
            rescored, survivors = rescored * 4, survivors * 4

    def _allowed_rows(self, extent, exclude: Sequence[int]) -> Optional[np.ndarray]:
        """Rows of tiles meeting the extent and not excluded; None when every row is allowed."""
        if extent is None and not len(exclude):
            return None
        keep = np.ones(self.tiles.n, dtype=bool)
        if extent is not None:
            minx, miny, maxx, maxy = extent
            box = self.tiles["bbox"]
            keep &= (box[:, 2] >= minx) & (box[:, 0] <= maxx) & (box[:, 3] >= miny) & (box[:, 1] <= maxy)
        if len(exclude):
            keep &= ~np.isin(self.tiles["id"], np.asarray(list(exclude), dtype=np.int64))
        return np.flatnonzero(keep[self.rows["tile"]])

    def _candidates(self, projected: np.ndarray, allowed, rescored: int, survivors: int) -> np.ndarray:
        stage1, stage2 = self.rows["stage1"], self.rows["stage2"]
        d1, d2 = stage1.shape[1], stage2.shape[1]
        scan = stage1 if allowed is None else _gather(stage1, allowed)
        first = scan @ projected[:d1]
        top = self._top(first, survivors)
        rows = top if allowed is None else allowed[top]
        second = first[top] + _gather(stage2, rows) @ projected[d1:d1 + d2]
        return rows[self._top(second, rescored)]

    def _top(self, scores: np.ndarray, m: int) -> np.ndarray:
        """Positions of at least the m highest scores (a few percent more at most).

        A threshold taken from a random sample avoids argpartition over every row,
        which at a million rows costs as much as the stage-1 scan itself.
        """
        n = len(scores)
        if m >= n:
            return np.arange(n)
        if n >= 200_000 and m >= 1000:
            sample = scores[self._rng.integers(0, n, 20_000)]
            rank = min(len(sample) - 1, int(len(sample) * 1.08 * m / n))
            threshold = np.partition(sample, len(sample) - 1 - rank)[len(sample) - 1 - rank]
            top = np.flatnonzero(scores >= threshold)
            if m <= len(top) <= 1.5 * m:
                return top
        return np.argpartition(scores, n - m)[n - m:]

    def _rescore(self, store: Store, rows: np.ndarray, query: np.ndarray, projected: np.ndarray, k: int) -> Best:
        """Exact cosine of the candidates, read from the file by caption id; best variant per tile.

        Of a large pool only the best few by the approximate score are read (_best_approx).
        """
        if len(rows) > exact_tiles(k) * VARIANTS_PER_TILE:
            rows = self._best_approx(rows, projected, self.projection.margin(query), k)
        caption_ids = self.rows["caption_id"][rows]
        order = np.argsort(caption_ids)
        rows, caption_ids = rows[order], caption_ids[order]
        scores = np.full(len(rows), -np.inf, dtype=np.float32)
        reader = store.vector_reader(self.run)
        for start in range(0, len(rows), READ_CHUNK):  # chunks: an exact pass never holds every float
            chunk = caption_ids[start:start + READ_CHUNK]
            found, vectors = reader.read(chunk)
            scores[start + np.searchsorted(chunk, found)] = _cosine(vectors, query)
        ranked = np.argsort(-scores, kind="stable")
        ranked = ranked[np.isfinite(scores[ranked])]
        _, first = np.unique(self.rows["tile"][rows[ranked]], return_index=True)
        chosen = ranked[np.sort(first)][:k]
        tile_ids = self.tiles["id"][self.rows["tile"][rows[chosen]]]
        return [(int(t), int(caption_ids[i]), float(scores[i])) for t, i in zip(tile_ids, chosen)]

    def _approx(self, rows: np.ndarray, projected: np.ndarray) -> np.ndarray:
        """Approximate cosines (less mean @ query) of these rows, from every component held."""
        d1, d2 = self.rows["stage1"].shape[1], self.rows["stage2"].shape[1]
        return (_gather(self.rows["stage1"], rows) @ projected[:d1]
                + _gather(self.rows["stage2"], rows) @ projected[d1:d1 + d2]
                + _gather(self.rows["tail"], rows) @ projected[d1 + d2:])

    def _best_approx(self, rows: np.ndarray, projected: np.ndarray, margin: float, k: int) -> np.ndarray:
        """The pool's rows worth an exact read, by the approximate score: of the best
        exact_tiles(k) tiles, those within the margin of the k-th best; of each, its best
        VARIANTS_PER_TILE variants within the margin of its best.

        Whole tiles, not top variants: a tile with thousands of near-identical variants must
        not crowd the other tiles out.
        """
        approx, tiles = self._approx(rows, projected), self.rows["tile"][rows]
        order = np.lexsort((-approx, tiles))  # by tile, best variant first
        approx, tiles = approx[order], tiles[order]
        firsts = np.r_[0, np.flatnonzero(np.diff(tiles)) + 1]
        sizes = np.diff(np.r_[firsts, len(order)])
        tile_best = approx[firsts]
        best_tiles = np.argsort(-tile_best, kind="stable")[:exact_tiles(k)]
        bar = tile_best[best_tiles[min(k, len(best_tiles)) - 1]] - margin
        chosen = np.zeros(len(firsts), dtype=bool)
        chosen[best_tiles] = True
        rank = np.arange(len(order)) - np.repeat(firsts, sizes)
        keep = (np.repeat(chosen, sizes) & (rank < VARIANTS_PER_TILE)
                & (approx >= np.maximum(bar, np.repeat(tile_best, sizes) - margin)))
        return rows[order[keep]]


def exact_tiles(k: int) -> int:
    return max(EXACT_TILES_MIN, EXACT_TILES_PER_HIT * k)


def _cosine(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    # As sqlite-vec's cosine distance: vectors are normalised here, whatever the embedder did.
    norms = np.linalg.norm(vectors, axis=1) * float(np.linalg.norm(query))
    return (vectors @ query) / np.where(norms == 0, 1.0, norms)


def _gather(columns: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """These rows as float32. np.take, not columns[rows]: 2x faster on 2-d arrays (33,000 rows
    of 64 int8 at 1M: 1.2 against 2.6 ms); int8 widened, numpy has no int8 x float product."""
    return np.take(columns, rows, axis=0).astype(np.float32, copy=False)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def _projected_rows(store: Store, reader: VectorReader, caption_ids: np.ndarray,
                    projection: Projection) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stage-1 float32, stage-2 int8, tail int8) projections of these captions' vectors, read a
    chunk at a time.

    Never all floats at once: the peak is the projected size plus one chunk.
    """
    dims = projection.basis.shape[1]
    d1 = min(STAGE1_DIMS, dims)
    d2 = min(STAGE2_DIMS, dims - d1)
    stage1 = np.empty((len(caption_ids), d1), dtype=np.float32)
    stage2 = np.empty((len(caption_ids), d2), dtype=np.int8)
    tail = np.empty((len(caption_ids), dims - d1 - d2), dtype=np.int8)
    for start in range(0, len(caption_ids), READ_CHUNK):
        chunk = caption_ids[start:start + READ_CHUNK]
        found, vectors = reader.read(chunk)
        if len(found) != len(chunk):
            raise IndexFileError(f"Index {store.path} lacks vectors of some captions (ids {int(chunk[0])}.."
                                 f"{int(chunk[-1])}); it may be damaged. Re-create it or restore a copy.")
        projected = projection.rows(vectors)
        stop = start + len(chunk)
        stage1[start:stop] = projected[:, :d1]
        steps = _int8(projected[:, d1:])
        stage2[start:stop], tail[start:stop] = steps[:, :d2], steps[:, d2:]
    return stage1, stage2, tail


def _int8(steps: np.ndarray) -> np.ndarray:
    """Projections in int8 steps, rounded (in place); a later vector beyond the sample's range saturates."""
    np.clip(steps, -127, 127, out=steps)
    return np.rint(steps, out=steps).astype(np.int8)
