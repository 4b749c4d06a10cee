"""The index file: one SQLite database with sqlite-vec vectors and FTS5 words, owned by Store."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from ..captions import CaptionVariant
from ..errors import IndexFileError, TileScribeError
from ..provenance import parse_source
from ..raster.tiling import RasterInfo, Tile, Window
from .connection import APPLICATION_ID, connect, load_vec, migrate, now, prepare, tidy_wal
from .locking import IndexerLock
from .sqlite_errors import open_failure, write_failure
from .store_queries import StoreQueries
from .store_reads import RunInfo, VectorReader, run_infos, tiles_to_do_page, vec_table
from .store_writes import TileCaptions, write_captions

# What callers outside the index package use: Store, and the plain data it takes and gives.
__all__ = ["APPLICATION_ID", "RunInfo", "Store", "StoredTile", "TileCaptions", "VectorReader", "load_vec", "now"]


@dataclass(frozen=True)
class StoredTile:
    id: int
    run_id: int
    window: Window
    bbox: tuple[float, float, float, float]
    status: str
    reason: str


class Store(StoreQueries):
    """The index file: opens and migrates it and runs every query on it. Not shared between threads.

    Its connection is its own: code outside the index package asks the Store (its search and
    change-detection queries are in store_queries.py), never the SQL. postgres/store.py's PgStore
    has the same methods; `opening.open_index` picks one from `--db`.
    """

    backend = "sqlite"
    fast_search = True  # search/fastsearch.py may load the run's vectors into RAM

    def __init__(self, path: str | os.PathLike, *, create: bool = False, readonly: bool = False):
        self.path = Path(path)
        # Resolved once: caches key their runs by it, and a query would otherwise pay an lstat per
        # path component per index (the file opened stays the one read, whatever links change later).
        self.real_path = os.path.realpath(self.path)
        self._conn = connect(self.path, create=create, readonly=readonly)
        self.readonly = readonly
        self._depth = 0
        self._identity = _identity(self.path)  # the file opened, told apart from one put in its place
        self._wal: tuple[int, int] | None = None  # its WAL file, once written (close() may remove it)
        try:
            prepare(self._conn, self.path, readonly)
            if not readonly:
                migrate(self._conn, self.atomic)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise open_failure(self.path, exc) from exc
        except Exception:
            self._conn.close()
            raise

    def close(self) -> None:
        if isinstance(self._conn, _Closed):
            return
        conn, self._conn = self._conn, _Closed(self.path)
        ours = _identity(self.path) == self._identity
        with contextlib.suppress(sqlite3.Error):
            if not self.readonly and ours:
                # Everything into the index file itself: a copy of the .sqlite alone is then whole.
                # PASSIVE never waits for a reader (a search in QGIS); what it leaves, the next one does.
                conn.execute("pragma wal_checkpoint(PASSIVE)")
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        wal = Path(f"{self.path}-wal")
        if not ours and self._wal is not None and _identity(wal) == self._wal:
            # The file was deleted or replaced while open: SQLite leaves our WAL beside the path,
            # and whoever opens the file now there would replay our pages into it.
            with contextlib.suppress(OSError):
                wal.unlink()

    @staticmethod
    def tidy(path: str | os.PathLike) -> None:
        """Let SQLite remove an index's -wal and -shm once nobody has it open (connection.tidy_wal): for a
        process whose last connections to it were read-only (the QGIS worker, when it stops)."""
        tidy_wal(Path(path))

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction; nested calls become savepoints. All or nothing on error."""
        outermost, savepoint = self._depth == 0, f"sp{self._depth}"
        if outermost:
            self._check_still_the_file()
            try:
                self._conn.execute("begin immediate")
            except sqlite3.OperationalError as exc:
                failure = write_failure(self.path, exc, self._conn)
                if failure is None:
                    raise
                raise IndexFileError(str(failure)) from exc
            if self._wal is None:
                self._wal = _identity(Path(f"{self.path}-wal"))
        else:
            self._conn.execute(f"savepoint {savepoint}")
        self._depth += 1
        try:
            yield
            # Inside the try, as sqlite-utils does: a COMMIT that fails (a deferred constraint,
            # a busy or full disk) rolls back instead of leaving the transaction open.
            self._conn.execute("commit" if outermost else f"release {savepoint}")
        except BaseException:
            if self._conn.in_transaction:  # after disk full or an I/O error SQLite rolled back already
                if outermost:
                    self._conn.execute("rollback")
                else:
                    self._conn.execute(f"rollback to {savepoint}")
                    self._conn.execute(f"release {savepoint}")
            raise
        finally:
            self._depth -= 1

    def indexer_lock(self) -> IndexerLock:
        """One indexer per file (locking.py); the caller enters it."""
        return IndexerLock(self.path)

    def run_choice_lock(self):
        """Held while an indexer picks or creates its run: the indexer lock already makes it the only one."""
        return contextlib.nullcontext()

    def workers(self, run_id: int) -> None:
        """Who is indexing a run: not recorded in a file (its one indexer holds the lock file)."""
        return None

    def _check_still_the_file(self) -> None:
        """Refuse to write once the file at the path is not the one opened (deleted, or replaced).

        SQLite would go on writing into the unlinked file, lost on close, and into the WAL beside
        the path, which then belongs to the file now there: the next opener would replay our pages
        into another index. One stat per transaction.
        """
        if _identity(self.path) != self._identity:
            raise IndexFileError(
                f"Index {self.path} was deleted or replaced by another file while TileScribe had it "
                "open: nothing more was written to it. Open it again (for indexing, run the same "
                "command again), or restore the file.")

    # -- rasters, embedders, runs -------------------------------------------------------

    def upsert_raster(self, info: RasterInfo) -> int:
        row = self._conn.execute(
            "select id from rasters where path = ? and fingerprint = ?", (info.path, info.fingerprint)
        ).fetchone()
        if row:
            if info.source:
                with self.atomic():
                    self._record_source(row[0], info)
            return row[0]
        # The same file with the same grid and georeference, edited in place: the same raster,
        # so its runs go on (changes.py re-captions the tiles whose pixels changed).
        row = self._conn.execute(
            "select id from rasters where path = ? and width = ? and height = ? and band_count = ? and dtype = ?"
            " and crs_wkt = ? and transform = ? order by id desc limit 1",
            (info.path, info.width, info.height, info.band_count, info.dtype, info.crs_wkt,
             json.dumps(info.transform))).fetchone()
        if row:
            with self.atomic():
                self._conn.execute("update rasters set fingerprint = ? where id = ?", (info.fingerprint, row[0]))
                self._record_source(row[0], info)
            return row[0]
        with self.atomic():
            cur = self._conn.execute(
                "insert into rasters (path, fingerprint, width, height, band_count, dtype, crs_wkt,"
                " crs_label, transform, added_at, source) values (?,?,?,?,?,?,?,?,?,?,?)",
                (info.path, info.fingerprint, info.width, info.height, info.band_count, info.dtype,
                 info.crs_wkt, info.crs_label, json.dumps(info.transform), now(), info.source or None),
            )
        return cur.lastrowid

    def _source_column(self) -> str:
        """rasters.source, or NULL in a file of schema 5 read read-only (migration 6 not run)."""
        if not hasattr(self, "_has_source"):
            columns = {row[1] for row in self._conn.execute("pragma table_info(rasters)")}
            self._has_source = "source" in columns
        return "source" if self._has_source else "null"

    def _record_source(self, raster_id: int, info: RasterInfo) -> None:
        """A rendered raster's source as its file now records it (a file that lost it keeps the old one)."""
        if info.source:
            self._conn.execute("update rasters set source = ? where id = ?", (info.source, raster_id))

    def embedder_id(self, name: str, dim: int) -> int:
        """Id of an embedder, creating its vector table the first time it is seen."""
        row = self._conn.execute("select id from embedders where name = ? and dim = ?", (name, dim)).fetchone()
        if row:
            return row[0]
        with self.atomic():
            embedder_id = self._conn.execute(
                "insert into embedders (name, dim) values (?, ?)", (name, dim)
            ).lastrowid
            self._conn.execute(
                f"create virtual table {vec_table(embedder_id)} using vec0("
                f"caption_id integer primary key, embedding float[{int(dim)}] distance_metric=cosine,"
                " run_id integer, minx float, miny float, maxx float, maxy float, +tile_id integer)"
            )
        return embedder_id

    def create_run(self, raster_id: int, embedder_id: int, captioner: dict, prompt_version: str,
                   tile_size: int, overlap: int, variants: int, render: dict | None = None) -> int:
        with self.atomic():
            return self._conn.execute(
                "insert into runs (raster_id, embedder_id, captioner, prompt_version, tile_size,"
                " overlap, variants, started_at, render) values (?,?,?,?,?,?,?,?,?)",
                (raster_id, embedder_id, json.dumps(captioner, sort_keys=True), prompt_version,
                 tile_size, overlap, variants, now(), None if render is None else json.dumps(render, sort_keys=True)),
            ).lastrowid

    def find_run(self, raster_id: int, embedder_id: int, captioner: dict, prompt_version: str,
                 tile_size: int, overlap: int, variants: int) -> int | None:
        """The run these exact settings started before (to resume it), if any."""
        row = self._conn.execute(
            "select id from runs where raster_id = ? and embedder_id = ? and captioner = ? and"
            " prompt_version = ? and tile_size = ? and overlap = ? and variants = ?"
            " order by id desc limit 1",
            (raster_id, embedder_id, json.dumps(captioner, sort_keys=True), prompt_version,
             tile_size, overlap, variants),
        ).fetchone()
        return row[0] if row else None

    def set_run_render(self, run_id: int, render: dict) -> None:
        """Record how a run's tiles are rendered (runs from before renders were recorded adopt one)."""
        with self.atomic():
            self._conn.execute("update runs set render = ? where id = ?", (json.dumps(render, sort_keys=True), run_id))

    def finish_run(self, run_id: int) -> None:
        with self.atomic():
            self._conn.execute("update runs set finished_at = ? where id = ?", (now(), run_id))

    def run_info(self, run_id: int) -> RunInfo:
        found = run_infos(self._conn, self.path, _sql_int(run_id))
        if not found:
            raise IndexFileError(f"Index {self.path} has no run {run_id}: see `tilescribe info`.")
        return found[0]

    def raster_info(self, raster_id: int) -> dict:
        row = self._conn.execute(
            "select id, path, fingerprint, width, height, band_count, dtype, crs_wkt, crs_label,"
            f" transform, {self._source_column()} from rasters where id = ?", (raster_id,)
        ).fetchone()
        keys = ("id", "path", "fingerprint", "width", "height", "band_count", "dtype", "crs_wkt",
                "crs_label", "transform", "source")
        info = dict(zip(keys, row))
        info["transform"] = json.loads(info["transform"])
        info["source"] = parse_source(info["source"])
        return info

    # -- tiles and captions ---------------------------------------------------------------

    def add_tiles(self, run_id: int, tiles: Sequence[Tile]) -> None:
        """Record tiles of a run (pending, or skipped with the reason); known tiles stay as they are."""
        with self.atomic():
            self._conn.executemany(
                "insert or ignore into tiles (run_id, tile_key, col_off, row_off, width, height,"
                " minx, miny, maxx, maxy, status, reason, updated_at) values (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (run_id, t.key, *t.window.as_list(), *t.bbox,
                     "skipped" if t.skip_reason else "pending", t.skip_reason, now())
                    for t in tiles
                ],
            )

    def tile_id(self, run_id: int, key: str) -> int | None:
        row = self._conn.execute(
            "select id from tiles where run_id = ? and tile_key = ?", (run_id, key)
        ).fetchone()
        return row[0] if row else None

    def tiles(self, run_id: int, status: str | None = None) -> list[StoredTile]:
        sql = ("select id, run_id, col_off, row_off, width, height, minx, miny, maxx, maxy, status,"
               " reason from tiles where run_id = ?")
        params: tuple = (run_id,)
        if status:
            sql += " and status = ?"
            params += (status,)
        return [_stored_tile(row) for row in self._conn.execute(sql + " order by id", params)]

    def tiles_to_do(self, run_id: int, statuses: Sequence[str], after: int, page: int,
                    max_attempts: int | None) -> list[StoredTile]:
        """A page of tiles to caption (store_reads.tiles_to_do_page): one query, not one per tile."""
        return [_stored_tile(row) for row in tiles_to_do_page(self._conn, run_id, statuses, after, page, max_attempts)]

    def tile(self, tile_id: int) -> StoredTile | None:
        row = self._conn.execute(
            "select id, run_id, col_off, row_off, width, height, minx, miny, maxx, maxy, status,"
            " reason from tiles where id = ?", (_sql_int(tile_id),)
        ).fetchone()
        return _stored_tile(row) if row else None

    def save_captions(self, tile_id: int, variants: Sequence[CaptionVariant], vectors: np.ndarray,
                      raw: str = "", pixel_hash: Optional[str] = None) -> None:
        """Store a tile's variants, their vectors and pixel checksum, and mark it done: one transaction."""
        self.save_captions_many([TileCaptions(tile_id, variants, vectors, raw, pixel_hash)])

    def save_captions_many(self, entries: Sequence[TileCaptions]) -> None:
        """save_captions for many tiles in one transaction, with one insert per table (bulk loads)."""
        with self.atomic():
            write_captions(self._conn, entries, now())

    def mark_tile(self, tile_id: int, status: str, reason: str = "", raw: str = "",
                  pixel_hash: Optional[str] = None) -> None:
        """Set a tile's status (and its pixel checksum, if given); a failure also counts one more attempt."""
        with self.atomic():
            self._conn.execute(
                "update tiles set status = ?, reason = ?, raw = ?, updated_at = ?,"
                " attempts = attempts + (? = 'failed'), pixel_hash = coalesce(?, pixel_hash) where id = ?",
                (status, reason, raw, now(), status, pixel_hash, tile_id),
            )

    def captions_of(self, tile_id: int) -> list[CaptionVariant]:
        rows = self._conn.execute(
            "select one_sentence, feature, caption from captions where tile_id = ? order by variant",
            (tile_id,),
        )
        return [CaptionVariant(*row) for row in rows]

    def vectors_of(self, tile_id: int, run: RunInfo | None = None) -> np.ndarray:
        """The stored vectors of a tile's variants (for "find similar"); `run`: the tile's, if looked up."""
        if run is None:
            (run_id,) = self._conn.execute("select run_id from tiles where id = ?", (tile_id,)).fetchone()
            run = self.run_info(run_id)
        reader = self.vector_reader(run)
        caption_ids = [row[0] for row in self._conn.execute(
            "select id from captions where tile_id = ? order by variant", (tile_id,))]
        found, vectors = reader.read(np.array(caption_ids, dtype=np.int64))
        if len(found) != len(caption_ids):
            raise IndexFileError(f"Index {self.path} lacks vectors of tile {tile_id}; it may be damaged. "
                                 "Re-create it or restore a copy.")
        return vectors[np.searchsorted(found, caption_ids)]

    def write_failure(self, exc: BaseException) -> Optional[TileScribeError]:
        """What to tell the user about an SQLite error while writing this file (sqlite_errors); None: a bug."""
        return write_failure(self.path, exc, self._conn)

    def vector_reader(self, run: RunInfo) -> VectorReader:
        """Reads the run's float vectors by caption id (their one copy, in the vec0 table)."""
        return VectorReader(self._conn, self.path, run.vector_table, run.dim)

    # -- overview ---------------------------------------------------------------------------

    def runs(self) -> list[RunInfo]:
        return run_infos(self._conn, self.path)

    def rasters(self) -> list[dict]:
        return [self.raster_info(r[0]) for r in self._conn.execute("select id from rasters order by id")]

    def tile_counts(self, run_id: int) -> dict[str, int]:
        rows = self._conn.execute(
            "select status, count(*) from tiles where run_id = ? group by status", (run_id,)
        )
        counts = {"pending": 0, "done": 0, "skipped": 0, "failed": 0}
        counts.update(dict(rows.fetchall()))
        return counts

    def variant_count(self, run_id: int) -> int:
        return self._conn.execute(
            "select count(*) from captions c join tiles t on t.id = c.tile_id where t.run_id = ?",
            (run_id,),
        ).fetchone()[0]

    def vector_count(self, run_id: int) -> int:
        return self._conn.execute(
            f"select count(*) from {self.run_info(run_id).vector_table} where run_id = ?", (run_id,)
        ).fetchone()[0]

    def vector_state(self, run_id: int) -> tuple[int, int]:
        """(vectors stored, write version) of a run: one primary-key read, for staleness checks."""
        row = self._conn.execute("select vector_count, vector_version from runs where id = ?",
                                (_sql_int(run_id),)).fetchone()
        if row is None:
            raise IndexFileError(f"Index {self.path} has no run {run_id}: see `tilescribe info`.")
        return row[0], row[1]

    def searchable_runs(self) -> list[int]:
        """Ids of the runs that have captioned tiles, oldest first."""
        return [row[0] for row in self._conn.execute(
            "select distinct run_id from tiles where status = 'done' order by run_id")]

    def latest_searchable_run(self) -> int | None:
        row = self._conn.execute(
            "select run_id from tiles where status = 'done' order by run_id desc limit 1"
        ).fetchone()
        return row[0] if row else None


class _Closed:
    """The connection of a closed Store: every use says so, naming the file (not sqlite3's words)."""

    def __init__(self, path: Path):
        self._path = path

    @property
    def in_transaction(self) -> bool:
        return False

    def __getattr__(self, name):
        raise IndexFileError(f"Index {self._path} was already closed: open it again (a new Store) to use it.")


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`; None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _sql_int(value) -> int:
    """An id as SQLite can bind it: one beyond 64 bits (a typo) matches nothing instead of overflowing."""
    return value if -(1 << 63) <= value < (1 << 63) else -1


def _stored_tile(row) -> StoredTile:
    return StoredTile(row[0], row[1], Window(*row[2:6]), tuple(row[6:10]), row[10], row[11])
