"""The Store's queries for search, fast search, word matching and change detection: thin methods over store_reads."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Iterator, Optional, Sequence

import numpy as np

from . import store_reads, store_writes
from .store_reads import Extent, RunInfo
from .vector_table import dim_disagreement


class StoreQueries:
    """Mixed into Store: each method runs one paged query (store_reads) on the Store's own connection
    (`_conn`), writes inside the Store's `atomic()`."""

    _conn: sqlite3.Connection

    # -- search (search/search.py, search/lexical.py) ------------------------------------------

    def nearest_variants(self, run: RunInfo, vector: np.ndarray, k: int,
                         extent: Optional[Extent]) -> list[tuple[int, int, float]]:
        """[(tile id, caption id, cosine distance)] of the k nearest variants of a run (sqlite-vec KNN)."""
        return store_reads.nearest_variants(self._conn, run.vector_table, vector, k, run.id, extent)

    def all_variants_by_distance(self, run: RunInfo, vector: np.ndarray,
                                 extent: Optional[Extent]) -> list[tuple[int, int, float]]:
        """Every variant of the run, nearest first: an exact scan past sqlite-vec's largest k."""
        return store_reads.all_variants_by_distance(self._conn, run.vector_table, vector, run.id, extent)

    def vector_dim_disagreement(self, run: RunInfo) -> Optional[str]:
        """A sentence when the run's embedder record and its vector table disagree (a damaged file), else None."""
        return dim_disagreement(self._conn, run.vector_table, run.id, run.dim)

    def hit_rows(self, tile_ids: Sequence[int], caption_ids: Sequence[int]) -> tuple[dict, dict]:
        """The tiles' windows and boxes and the captions' fields of a page of hits (store_reads.hit_rows)."""
        return store_reads.hit_rows(self._conn, tile_ids, caption_ids)

    def tile_at(self, run_id: int, x: float, y: float) -> Optional[int]:
        """Id of the run's smallest captioned tile containing (x, y), if any."""
        return store_reads.tile_at(self._conn, run_id, x, y)

    def word_matches(self, fts_query: str, run_id: int, extent: Optional[Extent],
                     limit: int) -> list[tuple[int, int]]:
        """[(tile id, caption id)] of the run's variants matching an FTS5 query, best BM25 first."""
        return store_reads.word_matches(self._conn, fts_query, run_id, extent, limit)

    # -- fast search (search/fastsearch.py) -------------------------------------------------------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction, so several reads see the file at the same moment."""
        with store_reads.snapshot(self._conn):
            yield

    def run_caption_ids(self, run_id: int, after: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(caption ids ascending, their tile ids) of a run's captions with ids above `after`."""
        return store_reads.run_caption_ids(self._conn, run_id, after)

    def tile_boxes(self, run_id: int, tile_ids: np.ndarray) -> np.ndarray:
        """(minx, miny, maxx, maxy) rows for ascending tile ids of a run."""
        return store_reads.tile_boxes(self._conn, run_id, tile_ids)

    # -- raster changes (indexing/changes.py) -----------------------------------------------------

    def raster_state(self, run_id: int) -> Optional[str]:
        """What the raster looked like when the run last read it (changes.raster_state), if recorded."""
        return store_reads.run_raster_state(self._conn, run_id)

    def set_raster_state(self, run_id: int, state: str) -> None:
        with self.atomic():
            store_writes.set_run_raster_state(self._conn, run_id, state)

    def finished_tiles_page(self, run_id: int, after: int, page: int) -> list[tuple]:
        """[(id, col_off, row_off, width, height, pixel_hash)] of a run's done or skipped tiles after `after`."""
        return store_reads.finished_tiles_page(self._conn, run_id, after, page)

    def save_pixel_check(self, hashes: dict, changed: Sequence[int] = ()) -> None:
        """Tiles' fresh pixel checksums (None: left out); `changed` tiles go back to pending. One transaction."""
        with self.atomic():
            store_writes.set_pixel_hashes(self._conn, [(h, t) for t, h in hashes.items() if h is not None])
            store_writes.requeue_tiles(self._conn, changed)
