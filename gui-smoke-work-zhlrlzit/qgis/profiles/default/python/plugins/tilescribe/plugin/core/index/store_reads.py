"""The index's read queries (search, fast search, word matching): each a paged query, never one per tile.

Beside store_writes.py; Store (store.py) opens the file and owns its schema.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from ..errors import IndexFileError

Extent = tuple[float, float, float, float]  # minx, miny, maxx, maxy in the raster's CRS


def vec_table(embedder_id: int) -> str:
    """The sqlite-vec table holding one embedder's vectors (one per embedder, every run)."""
    return f"caption_vec_{int(embedder_id)}"


@dataclass(frozen=True)
class RunInfo:
    """One indexing run as recorded: its raster, embedder, captioner, grid and rendering.

    Read once per query (search.py passes it down) instead of re-read by each step.
    """

    id: int
    raster_id: int
    embedder_id: int
    embedder: str  # the embedder's name
    dim: int
    captioner: dict  # the captioner's description (model, family, settings)
    prompt_version: str
    tile_size: int
    overlap: int
    variants: int
    started_at: str
    finished_at: Optional[str]  # None: not finished (running, stopped or crashed)
    render: Optional[dict]  # None: recorded before render settings were stored

    @property
    def vector_table(self) -> str:
        return vec_table(self.embedder_id)

    def to_dict(self) -> dict:
        """Plain data for JSON (`tilescribe info --format json`, the worker's answers)."""
        return asdict(self)


_RUN_SELECT = (
    "select r.id, r.raster_id, r.embedder_id, e.name, e.dim, r.captioner, r.prompt_version, r.tile_size,"
    " r.overlap, r.variants, r.started_at, r.finished_at, r.render from runs r"
    " join embedders e on e.id = r.embedder_id")


def run_rows(conn: sqlite3.Connection, run_id: Optional[int] = None) -> list[tuple]:
    """Every run's record as stored, oldest first, or just `run_id`'s (none when it does not exist)."""
    if run_id is None:
        return conn.execute(f"{_RUN_SELECT} order by r.id").fetchall()
    return conn.execute(f"{_RUN_SELECT} where r.id = ?", (run_id,)).fetchall()


def parse_run_row(row: tuple) -> RunInfo:
    """A run record as a RunInfo; ValueError naming the run and column when its JSON is damaged."""
    values = list(row)
    for at, column, optional in ((5, "captioner", False), (12, "render", True)):
        if optional and values[at] is None:
            continue
        try:
            values[at] = json.loads(values[at])
        except (TypeError, ValueError):
            values[at] = None
        if not isinstance(values[at], dict):
            raise ValueError(f"the record of run {row[0]} is damaged ({column} is not a JSON object)")
    return RunInfo(*values)


def run_infos(conn: sqlite3.Connection, path: Path, run_id: Optional[int] = None) -> list[RunInfo]:
    """Every run, oldest first, or just `run_id` (an empty list when it does not exist)."""
    try:
        return [parse_run_row(row) for row in run_rows(conn, run_id)]
    except ValueError as exc:
        raise IndexFileError(f"Index {path} cannot be read: {exc}. Restore a copy, or index the raster "
                             "again into a new file (--db).") from None


def ids_param(ids) -> str:
    """Many ids as one SQL parameter (`in (select value from json_each(?))`): no variable limit."""
    return json.dumps([int(i) for i in ids])


TILE_COLUMNS = "id, run_id, col_off, row_off, width, height, minx, miny, maxx, maxy, status, reason"


def tiles_to_do_page(conn: sqlite3.Connection, run_id: int, statuses: Sequence[str], after: int, page: int,
                     max_attempts: Optional[int]) -> list[tuple]:
    """One page of a run's tiles in these states, in id order after `after` (TILE_COLUMNS).

    Failed tiles already tried `max_attempts` times are left out (None: none are).
    """
    limit = max_attempts if max_attempts is not None else 1 << 62
    marks = ", ".join("?" for _ in statuses)
    return conn.execute(
        f"select {TILE_COLUMNS} from tiles where run_id = ? and status in ({marks}) and id > ?"
        " and (status != 'failed' or attempts < ?) order by id limit ?",
        (run_id, *statuses, after, limit, page)).fetchall()


def extent_filter(extent: Optional[Extent], prefix: str = "") -> tuple[str, tuple]:
    """SQL (starting with ' and') and parameters keeping rows whose box meets the extent."""
    if extent is None:
        return "", ()
    minx, miny, maxx, maxy = extent
    p = prefix
    return (f" and {p}maxx >= ? and {p}minx <= ? and {p}maxy >= ? and {p}miny <= ?", (minx, maxx, miny, maxy))


def nearest_variants(conn: sqlite3.Connection, table: str, vector: np.ndarray, k: int, run_id: int,
                     extent: Optional[Extent]) -> list[tuple[int, int, float]]:
    """[(tile id, caption id, cosine distance)] of the k nearest variants of a run (sqlite-vec KNN)."""
    where, params = extent_filter(extent)
    return conn.execute(
        f"select tile_id, caption_id, distance from {table} where embedding match ? and k = ?"
        f" and run_id = ?{where} order by distance", (vector.tobytes(), k, run_id, *params)).fetchall()


def all_variants_by_distance(conn: sqlite3.Connection, table: str, vector: np.ndarray, run_id: int,
                             extent: Optional[Extent]) -> list[tuple[int, int, float]]:
    """Every variant of the run, nearest first: an exact scan past sqlite-vec's largest k."""
    where, params = extent_filter(extent)
    return conn.execute(
        f"select tile_id, caption_id, vec_distance_cosine(embedding, ?) as d from {table}"
        f" where run_id = ?{where} order by d", (vector.tobytes(), run_id, *params)).fetchall()


def hit_rows(conn: sqlite3.Connection, tile_ids: Sequence[int], caption_ids: Sequence[int]) -> tuple[dict, dict]:
    """({tile id: (col_off, row_off, width, height, minx, miny, maxx, maxy)},
    {caption id: (one_sentence, feature, caption)}) of a page of hits, in two queries."""
    tiles = {row[0]: row[1:] for row in conn.execute(
        "select id, col_off, row_off, width, height, minx, miny, maxx, maxy from tiles"
        " where id in (select value from json_each(?))", (ids_param(tile_ids),))}
    captions = {row[0]: row[1:] for row in conn.execute(
        "select id, one_sentence, feature, caption from captions"
        " where id in (select value from json_each(?))", (ids_param(caption_ids),))}
    return tiles, captions


def tile_at(conn: sqlite3.Connection, run_id: int, x: float, y: float) -> Optional[int]:
    """Id of the run's smallest captioned tile containing (x, y), if any."""
    row = conn.execute(
        "select id from tiles where run_id = ? and status = 'done' and minx <= ? and maxx >= ?"
        " and miny <= ? and maxy >= ? order by (maxx - minx) * (maxy - miny), id limit 1",
        (run_id, x, x, y, y),
    ).fetchone()
    return row[0] if row else None


def word_matches(conn: sqlite3.Connection, fts_query: str, run_id: int, extent: Optional[Extent],
                 limit: int) -> list[tuple[int, int]]:
    """[(tile id, caption id)] of the run's variants matching an FTS5 query, best BM25 first."""
    where, params = extent_filter(extent, "t.")
    return conn.execute(
        "select c.tile_id, f.rowid from caption_fts f join captions c on c.id = f.rowid"
        f" join tiles t on t.id = c.tile_id where caption_fts match ? and t.run_id = ?{where}"
        " order by bm25(caption_fts) limit ?", (fts_query, run_id, *params, limit)).fetchall()


def embedders_of_dim(conn: sqlite3.Connection, dim: int) -> list[tuple[int, str, Optional[bytes]]]:
    """[(id, name, probe)] of the index's embedders making `dim`-d vectors."""
    return conn.execute("select id, name, probe from embedders where dim = ?", (dim,)).fetchall()


def embedder_record(conn: sqlite3.Connection, embedder_id: int) -> tuple[str, int, Optional[bytes]]:
    """(name, dim, probe) of one embedder."""
    return conn.execute("select name, dim, probe from embedders where id = ?", (embedder_id,)).fetchone()


def embedder_caption_sample(conn: sqlite3.Connection, embedder_id: int, limit: int) -> list[tuple]:
    """[(caption id, one_sentence, feature, caption, run id)]: the first captions this embedder embedded."""
    return conn.execute(
        "select c.id, c.one_sentence, c.feature, c.caption, t.run_id from captions c"
        " join tiles t on t.id = c.tile_id join runs r on r.id = t.run_id"
        " where r.embedder_id = ? order by c.id limit ?", (embedder_id, limit)).fetchall()


def run_raster_state(conn: sqlite3.Connection, run_id: int) -> Optional[str]:
    """What the raster looked like when the run last read it (changes.raster_state), if recorded."""
    return conn.execute("select raster_state from runs where id = ?", (run_id,)).fetchone()[0]


def finished_tiles_page(conn: sqlite3.Connection, run_id: int, after: int, page: int) -> list[tuple]:
    """[(id, col_off, row_off, width, height, pixel_hash)] of a run's done or skipped tiles after `after`."""
    return conn.execute(
        "select id, col_off, row_off, width, height, pixel_hash from tiles where run_id = ? and"
        " status in ('done', 'skipped') and id > ? order by id limit ?", (run_id, after, page)).fetchall()


@contextlib.contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction, so several reads see the file at the same moment."""
    if conn.in_transaction:
        yield
        return
    conn.execute("begin")
    try:
        yield
    finally:
        conn.execute("commit")


def run_caption_ids(conn: sqlite3.Connection, run_id: int, after: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(caption ids ascending, their tile ids) of a run's captions with ids above `after`."""
    cursor = conn.execute(
        "select c.id, c.tile_id from captions c join tiles t on t.id = c.tile_id"
        " where t.run_id = ? and c.id > ? order by c.id", (run_id, after),
    )
    # Straight into numpy: a list of a million row tuples would cost ~100 MB for a moment.
    pairs = np.fromiter(itertools.chain.from_iterable(cursor), dtype=np.int64).reshape(-1, 2)
    return np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])


def tile_boxes(conn: sqlite3.Connection, run_id: int, tile_ids: np.ndarray) -> np.ndarray:
    """(minx, miny, maxx, maxy) rows for ascending tile ids of a run."""
    rows = conn.execute(
        "select id, minx, miny, maxx, maxy from tiles where run_id = ? and id in"
        " (select value from json_each(?)) order by id", (run_id, ids_param(tile_ids)),
    ).fetchall()
    return np.array([row[1:] for row in rows], dtype=np.float64).reshape(-1, 4)

# A chunk holding at least this many of the wanted vectors is read whole (one 1.5 MB
# blob); fewer are read one by one through blob I/O, which with the memory-mapped file
# costs ~7 us a vector (bench-search's re-scoring: ~2 vectors per chunk).
WHOLE_CHUNK_MIN = 48


class VectorReader:
    """The one float copy of each vector lives in a vec0 table; this reads it by caption id.

    vec0 stores vectors in chunks of 1,024 (`<table>_vector_chunks00.vectors`) and maps
    each rowid (= caption id) to (chunk_id, chunk_offset) in `<table>_rowids`. vec0's
    own point query costs 50-120 us a vector; reading at the offsets costs ~12 us a chunk
    touched (memory-mapped, warm), where a plain table's primary-key read was ~3 us a vector.
    Should a sqlite-vec version lay its tables out otherwise, vec0's point queries are used.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, table: str, dim: int, *, finite: bool = True):
        self._conn, self.path, self.table, self.dim = conn, path, table, dim
        self.finite = finite  # False: vectors that are not numbers are returned (check reports them itself)
        self.stride = 4 * dim
        self._blob_io = hasattr(conn, "blobopen")  # Python 3.11+
        try:
            conn.execute(f"select chunk_id, chunk_offset from {table}_rowids limit 0")
            conn.execute(f"select vectors from {table}_vector_chunks00 limit 0")
            self.by_offset = True
        except sqlite3.OperationalError:  # another sqlite-vec layout: slower, still right
            self.by_offset = False

    def read(self, caption_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, ascending; their float32 vectors) for these caption ids."""
        if not self.by_offset:
            return self._read_by_point_queries(np.unique(np.asarray(caption_ids, dtype=np.int64)))
        ids, chunks, offsets = self._locate(np.asarray(caption_ids, dtype=np.int64))
        vectors = np.empty((len(ids), self.dim), dtype=np.float32)
        order = np.lexsort((offsets, chunks))
        bounds = np.flatnonzero(np.diff(chunks[order])) + 1
        for group in np.split(order, bounds) if len(order) else ():
            vectors[group] = self._chunk_vectors(int(chunks[group[0]]), offsets[group])
        return self._finite(ids, vectors)

    def _finite(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The vectors read, or the message exact search gives for NaN ones: the fast path and the
        in-memory runs read here, and silently dropped (or ranked) such vectors."""
        bad = ~np.isfinite(vectors).all(axis=1) if self.finite else None
        if bad is not None and bad.any():
            raise IndexFileError(
                f"Index {self.path} holds vectors that are not numbers (NaN or infinite: captions "
                f"{ids[bad][:5].tolist()} of {self.table}): it is damaged or was changed by another program. "
                f"Run `tilescribe check --db {self.path}`, restore a copy, or index the raster again into a new "
                "file (--db).")
        return ids, vectors

    def _read_by_point_queries(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found, blobs = [], []
        for caption_id in ids.tolist():
            row = self._conn.execute(f"select embedding from {self.table} where caption_id = ?",
                                    (caption_id,)).fetchone()
            if row is not None:
                found.append(caption_id)
                blobs.append(row[0])
        return self._finite(np.array(found, dtype=np.int64),
                            np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(-1, self.dim))

    def _locate(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rowid, chunk id, offset) of the wanted ids that exist, by rowid ascending."""
        if not len(wanted):
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty
        low, high = int(wanted.min()), int(wanted.max())
        if len(wanted) * 4 >= high - low:  # dense (a whole run): one range scan, then keep the wanted
            cursor = self._conn.execute(f"select rowid, chunk_id, chunk_offset from {self.table}_rowids"
                                       " where rowid between ? and ? order by rowid", (low, high))
        else:
            cursor = self._conn.execute(f"select rowid, chunk_id, chunk_offset from {self.table}_rowids"
                                       " where rowid in (select value from json_each(?)) order by rowid",
                                       (ids_param(wanted),))
        rows = np.array(cursor.fetchall(), dtype=np.int64).reshape(-1, 3)
        rows = rows[np.isin(rows[:, 0], wanted)]
        return rows[:, 0], rows[:, 1], rows[:, 2]

    def _chunk_vectors(self, chunk_id: int, offsets: np.ndarray) -> np.ndarray:
        if len(offsets) >= WHOLE_CHUNK_MIN or not self._blob_io:
            row = self._conn.execute(f"select vectors from {self.table}_vector_chunks00 where rowid = ?",
                                    (chunk_id,)).fetchone()
            data = row[0] if row else b""
            self._check(chunk_id, offsets, len(data))
            whole = np.frombuffer(data, dtype=np.float32).reshape(-1, self.dim)
            return whole[offsets]
        try:
            blob = self._conn.blobopen(f"{self.table}_vector_chunks00", "vectors", chunk_id, readonly=True)
        except sqlite3.OperationalError:  # no such chunk row
            self._check(chunk_id, offsets, 0)
        with blob:
            self._check(chunk_id, offsets, len(blob))
            parts = []
            for offset in offsets:
                blob.seek(int(offset) * self.stride)
                parts.append(blob.read(self.stride))
        return np.frombuffer(b"".join(parts), dtype=np.float32).reshape(-1, self.dim)

    def _check(self, chunk_id: int, offsets: np.ndarray, size: int) -> None:
        if not size or size % self.stride or (len(offsets) and (int(offsets.max()) + 1) * self.stride > size):
            raise IndexFileError(
                f"Index {self.path} cannot be read (vector chunk {chunk_id} of {self.table} holds "
                f"{size} bytes, not whole {self.dim}-d vectors): it is damaged. Index the raster again "
                "into a new file (--db), or restore a copy."
            )
