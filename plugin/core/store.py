"""The index file: one SQLite database with sqlite-vec vectors and FTS5 words, owned by Store."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .captions import CaptionVariant
from .errors import IndexFileError
from .index_settings import INDEX_SUFFIX
from .untrusted import bound_query_time, refuse_foreign_objects
from .migrations import MIGRATIONS, SCHEMA_VERSION, older_schema_message
from .sqlite_errors import open_failure
from .store_reads import RunInfo, VectorReader, run_infos, tiles_to_do_page, vec_table
from .store_writes import TileCaptions, write_captions
from .tiling import RasterInfo, Tile, Window

# "TSCR": marks a file as a TileScribe index, so another program's SQLite file is refused.
APPLICATION_ID = 0x54534352
SQLITE_HEADER = b"SQLite format 3\x00"
# Vectors are read by offset inside sqlite-vec's chunk blobs; memory-mapped, walking a
# blob's overflow pages costs pointer reads instead of one read() per page (store_reads.py).
# SQLite caps it at its build's maximum (2 GB in common builds); beyond it reads stay correct.
MMAP_BYTES = 1 << 31


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_vec(conn: sqlite3.Connection, path: Path) -> None:
    """Load sqlite-vec, and only it: extension loading is switched off again at once."""
    try:
        import sqlite_vec

        conn.enable_load_extension(True)
        try:
            sqlite_vec.load(conn)
        finally:
            conn.enable_load_extension(False)
    except (ImportError, AttributeError, sqlite3.OperationalError) as exc:
        raise IndexFileError(
            f"Cannot load sqlite-vec to open {path} ({exc}). Run TileScribe from the "
            "environment `make setup` creates (.venv), whose Python can load SQLite extensions."
        ) from exc


@dataclass(frozen=True)
class StoredTile:
    id: int
    run_id: int
    window: Window
    bbox: tuple[float, float, float, float]
    status: str
    reason: str


class Store:
    """Opens, migrates and writes one index file. Not shared between threads."""

    def __init__(self, path: str | os.PathLike, *, create: bool = False, readonly: bool = False):
        self.path = Path(path)
        self._check_file(create)
        uri = f"{self.path.resolve().as_uri()}?mode={'ro' if readonly else 'rwc'}"  # escapes '#', '?', '%'
        if readonly and _on_read_only_media(self.path):
            uri += "&immutable=1"  # a WAL index there cannot get its -shm file; nobody writes it
        try:
            self.conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            self.conn.execute("pragma busy_timeout = 5000")
            bound_query_time(self.conn)  # a received file must not hang a command (untrusted.py)
            self.conn.execute(f"pragma mmap_size = {MMAP_BYTES}")
        except sqlite3.Error as exc:
            raise IndexFileError(f"Cannot open index {self.path}: {exc}.") from exc
        self.readonly = readonly
        self._depth = 0
        try:
            load_vec(self.conn, self.path)
            self._check_schema()
            if not readonly:
                self.conn.execute("pragma journal_mode = wal")
                self.conn.execute("pragma synchronous = normal")
                self._migrate()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise open_failure(self.path, exc) from exc
        except Exception:
            self.conn.close()
            raise

    def _check_file(self, create: bool) -> None:
        if self.path.is_dir():
            raise IndexFileError(f"{self.path} is a folder; give an index file (*{INDEX_SUFFIX}).")
        if not self.path.exists() or self.path.stat().st_size == 0:
            if not create:
                raise IndexFileError(
                    f"Index file not found: {self.path}. Create it with `tilescribe index` "
                    "or `tilescribe import-captions`."
                )
            if not self.path.parent.is_dir():
                raise IndexFileError(f"Folder for the index file does not exist: {self.path.parent}.")
            return
        with open(self.path, "rb") as handle:
            if handle.read(16) != SQLITE_HEADER:
                raise IndexFileError(
                    f"{self.path} is not a TileScribe index (not an SQLite file). "
                    "Pick a *.tilescribe.sqlite file, or a new file name to create one."
                )

    def _check_schema(self) -> None:
        app_id = self.conn.execute("pragma application_id").fetchone()[0]
        version = self.conn.execute("pragma user_version").fetchone()[0]
        has_tables = self.conn.execute("select count(*) from sqlite_schema").fetchone()[0] > 0
        if app_id != APPLICATION_ID and (has_tables or app_id):
            raise IndexFileError(
                f"{self.path} is an SQLite file of another program, not a TileScribe index. "
                "Pick a *.tilescribe.sqlite file, or a new file name to create one."
            )
        refuse_foreign_objects(self.conn, self.path)  # views, triggers: never ours (issue 22)
        if version < 0:  # no TileScribe writes one: migrating from it ran migrations from the end (issue 22)
            raise IndexFileError(
                f"Index {self.path} records schema version {version}, which no TileScribe writes: the file "
                "was changed by another program or is damaged. Nothing was written to it. Restore a copy, "
                "or index the raster again into a new file (--db).")
        if version > SCHEMA_VERSION:
            raise IndexFileError(
                f"Index {self.path} was written by a newer TileScribe (schema {version}, this "
                f"version reads up to {SCHEMA_VERSION}). Update TileScribe to open it."
            )
        if self.readonly and version < SCHEMA_VERSION:
            raise IndexFileError(older_schema_message(self.path, version, SCHEMA_VERSION))

    def _migrate(self) -> None:
        version = self.conn.execute("pragma user_version").fetchone()[0]
        if not 0 <= version < SCHEMA_VERSION:
            return
        with self.atomic():  # all steps or none: a step that fails leaves the file as it was
            for number in range(version, SCHEMA_VERSION):
                MIGRATIONS[number](self.conn)
                self.conn.execute(f"pragma application_id = {APPLICATION_ID}")
                self.conn.execute(f"pragma user_version = {number + 1}")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if not self.readonly:
                # Everything into the index file itself: a copy of the .sqlite alone is then whole.
                # PASSIVE never waits for a reader (a search in QGIS); what it leaves, the next one does.
                self.conn.execute("pragma wal_checkpoint(PASSIVE)")
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """A transaction; nested calls become savepoints. All or nothing on error."""
        outermost, savepoint = self._depth == 0, f"sp{self._depth}"
        self.conn.execute("begin immediate" if outermost else f"savepoint {savepoint}")
        self._depth += 1
        try:
            yield self.conn
            # Inside the try, as sqlite-utils does: a COMMIT that fails (a deferred constraint,
            # a busy or full disk) rolls back instead of leaving the transaction open.
            self.conn.execute("commit" if outermost else f"release {savepoint}")
        except BaseException:
            if self.conn.in_transaction:  # after disk full or an I/O error SQLite rolled back already
                if outermost:
                    self.conn.execute("rollback")
                else:
                    self.conn.execute(f"rollback to {savepoint}")
                    self.conn.execute(f"release {savepoint}")
            raise
        finally:
            self._depth -= 1

    # -- rasters, embedders, runs -------------------------------------------------------

    def upsert_raster(self, info: RasterInfo) -> int:
        row = self.conn.execute(
            "select id from rasters where path = ? and fingerprint = ?", (info.path, info.fingerprint)
        ).fetchone()
        if row:
            return row[0]
        # The same file with the same grid and georeference, edited in place: the same raster,
        # so its runs go on (changes.py re-captions the tiles whose pixels changed).
        row = self.conn.execute(
            "select id from rasters where path = ? and width = ? and height = ? and band_count = ? and dtype = ?"
            " and crs_wkt = ? and transform = ? order by id desc limit 1",
            (info.path, info.width, info.height, info.band_count, info.dtype, info.crs_wkt,
             json.dumps(info.transform))).fetchone()
        if row:
            with self.atomic():
                self.conn.execute("update rasters set fingerprint = ? where id = ?", (info.fingerprint, row[0]))
            return row[0]
        with self.atomic():
            cur = self.conn.execute(
                "insert into rasters (path, fingerprint, width, height, band_count, dtype, crs_wkt,"
                " crs_label, transform, added_at) values (?,?,?,?,?,?,?,?,?,?)",
                (info.path, info.fingerprint, info.width, info.height, info.band_count, info.dtype,
                 info.crs_wkt, info.crs_label, json.dumps(info.transform), now()),
            )
        return cur.lastrowid

    def embedder_id(self, name: str, dim: int) -> int:
        """Id of an embedder, creating its vector table the first time it is seen."""
        row = self.conn.execute("select id from embedders where name = ? and dim = ?", (name, dim)).fetchone()
        if row:
            return row[0]
        with self.atomic():
            embedder_id = self.conn.execute(
                "insert into embedders (name, dim) values (?, ?)", (name, dim)
            ).lastrowid
            self.conn.execute(
                f"create virtual table {vec_table(embedder_id)} using vec0("
                f"caption_id integer primary key, embedding float[{int(dim)}] distance_metric=cosine,"
                " run_id integer, minx float, miny float, maxx float, maxy float, +tile_id integer)"
            )
        return embedder_id

    def create_run(self, raster_id: int, embedder_id: int, captioner: dict, prompt_version: str,
                   tile_size: int, overlap: int, variants: int, render: dict | None = None) -> int:
        with self.atomic():
            return self.conn.execute(
                "insert into runs (raster_id, embedder_id, captioner, prompt_version, tile_size,"
                " overlap, variants, started_at, render) values (?,?,?,?,?,?,?,?,?)",
                (raster_id, embedder_id, json.dumps(captioner, sort_keys=True), prompt_version,
                 tile_size, overlap, variants, now(), None if render is None else json.dumps(render, sort_keys=True)),
            ).lastrowid

    def find_run(self, raster_id: int, embedder_id: int, captioner: dict, prompt_version: str,
                 tile_size: int, overlap: int, variants: int) -> int | None:
        """The run these exact settings started before (to resume it), if any."""
        row = self.conn.execute(
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
            self.conn.execute("update runs set render = ? where id = ?", (json.dumps(render, sort_keys=True), run_id))

    def finish_run(self, run_id: int) -> None:
        with self.atomic():
            self.conn.execute("update runs set finished_at = ? where id = ?", (now(), run_id))

    def run_info(self, run_id: int) -> RunInfo:
        found = run_infos(self.conn, self.path, _sql_int(run_id))
        if not found:
            raise IndexFileError(f"Index {self.path} has no run {run_id}: see `tilescribe info`.")
        return found[0]

    def raster_info(self, raster_id: int) -> dict:
        row = self.conn.execute(
            "select id, path, fingerprint, width, height, band_count, dtype, crs_wkt, crs_label,"
            " transform from rasters where id = ?", (raster_id,)
        ).fetchone()
        keys = ("id", "path", "fingerprint", "width", "height", "band_count", "dtype", "crs_wkt",
                "crs_label", "transform")
        info = dict(zip(keys, row))
        info["transform"] = json.loads(info["transform"])
        return info

    # -- tiles and captions ---------------------------------------------------------------

    def add_tiles(self, run_id: int, tiles: Sequence[Tile]) -> None:
        """Record tiles of a run (pending, or skipped with the reason); known tiles stay as they are."""
        with self.atomic():
            self.conn.executemany(
                "insert or ignore into tiles (run_id, tile_key, col_off, row_off, width, height,"
                " minx, miny, maxx, maxy, status, reason, updated_at) values (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (run_id, t.key, *t.window.as_list(), *t.bbox,
                     "skipped" if t.skip_reason else "pending", t.skip_reason, now())
                    for t in tiles
                ],
            )

    def tile_id(self, run_id: int, key: str) -> int | None:
        row = self.conn.execute(
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
        return [_stored_tile(row) for row in self.conn.execute(sql + " order by id", params)]

    def tiles_to_do(self, run_id: int, statuses: Sequence[str], after: int, page: int,
                    max_attempts: int | None) -> list[StoredTile]:
        """A page of tiles to caption (store_reads.tiles_to_do_page): one query, not one per tile."""
        return [_stored_tile(row) for row in tiles_to_do_page(self.conn, run_id, statuses, after, page, max_attempts)]

    def tile(self, tile_id: int) -> StoredTile | None:
        row = self.conn.execute(
            "select id, run_id, col_off, row_off, width, height, minx, miny, maxx, maxy, status,"
            " reason from tiles where id = ?", (_sql_int(tile_id),)
        ).fetchone()
        return _stored_tile(row) if row else None

    def save_captions(self, tile_id: int, variants: Sequence[CaptionVariant], vectors: np.ndarray,
                      raw: str = "") -> None:
        """Store a tile's variants and their vectors and mark it done: all in one transaction."""
        self.save_captions_many([TileCaptions(tile_id, variants, vectors, raw)])

    def save_captions_many(self, entries: Sequence[TileCaptions]) -> None:
        """save_captions for many tiles in one transaction, with one insert per table (bulk loads)."""
        with self.atomic():
            write_captions(self.conn, entries, now())

    def mark_tile(self, tile_id: int, status: str, reason: str = "", raw: str = "") -> None:
        """Set a tile's status; a failure also counts one more attempt (bounded retries)."""
        with self.atomic():
            self.conn.execute(
                "update tiles set status = ?, reason = ?, raw = ?, updated_at = ?,"
                " attempts = attempts + (? = 'failed') where id = ?",
                (status, reason, raw, now(), status, tile_id),
            )

    def captions_of(self, tile_id: int) -> list[CaptionVariant]:
        rows = self.conn.execute(
            "select one_sentence, feature, caption from captions where tile_id = ? order by variant",
            (tile_id,),
        )
        return [CaptionVariant(*row) for row in rows]

    def vectors_of(self, tile_id: int, run: RunInfo | None = None) -> np.ndarray:
        """The stored vectors of a tile's variants (for "find similar"); `run`: the tile's, if looked up."""
        if run is None:
            (run_id,) = self.conn.execute("select run_id from tiles where id = ?", (tile_id,)).fetchone()
            run = self.run_info(run_id)
        reader = self.vector_reader(run)
        caption_ids = [row[0] for row in self.conn.execute(
            "select id from captions where tile_id = ? order by variant", (tile_id,))]
        found, vectors = reader.read(np.array(caption_ids, dtype=np.int64))
        if len(found) != len(caption_ids):
            raise IndexFileError(f"Index {self.path} lacks vectors of tile {tile_id}; it may be damaged. "
                                 "Re-create it or restore a copy.")
        return vectors[np.searchsorted(found, caption_ids)]

    def vector_reader(self, run: RunInfo) -> VectorReader:
        """Reads the run's float vectors by caption id (their one copy, in the vec0 table)."""
        return VectorReader(self.conn, self.path, run.vector_table, run.dim)

    # -- overview ---------------------------------------------------------------------------

    def runs(self) -> list[RunInfo]:
        return run_infos(self.conn, self.path)

    def rasters(self) -> list[dict]:
        return [self.raster_info(r[0]) for r in self.conn.execute("select id from rasters order by id")]

    def tile_counts(self, run_id: int) -> dict[str, int]:
        rows = self.conn.execute(
            "select status, count(*) from tiles where run_id = ? group by status", (run_id,)
        )
        counts = {"pending": 0, "done": 0, "skipped": 0, "failed": 0}
        counts.update(dict(rows.fetchall()))
        return counts

    def variant_count(self, run_id: int) -> int:
        return self.conn.execute(
            "select count(*) from captions c join tiles t on t.id = c.tile_id where t.run_id = ?",
            (run_id,),
        ).fetchone()[0]

    def vector_count(self, run_id: int) -> int:
        return self.conn.execute(
            f"select count(*) from {self.run_info(run_id).vector_table} where run_id = ?", (run_id,)
        ).fetchone()[0]

    def vector_state(self, run_id: int) -> tuple[int, int]:
        """(vectors stored, write version) of a run: one primary-key read, for staleness checks."""
        row = self.conn.execute("select vector_count, vector_version from runs where id = ?",
                                (_sql_int(run_id),)).fetchone()
        if row is None:
            raise IndexFileError(f"Index {self.path} has no run {run_id}: see `tilescribe info`.")
        return row[0], row[1]

    def searchable_runs(self) -> list[int]:
        """Ids of the runs that have captioned tiles, oldest first."""
        return [row[0] for row in self.conn.execute(
            "select distinct run_id from tiles where status = 'done' order by run_id")]

    def latest_searchable_run(self) -> int | None:
        row = self.conn.execute(
            "select run_id from tiles where status = 'done' order by run_id desc limit 1"
        ).fetchone()
        return row[0] if row else None


def _on_read_only_media(path: Path) -> bool:
    """True when no process can be writing the index: its folder is not writable and no -shm exists."""
    return not os.access(path.resolve().parent, os.W_OK) and not Path(f"{path}-shm").exists()


def _sql_int(value) -> int:
    """An id as SQLite can bind it: one beyond 64 bits (a typo) matches nothing instead of overflowing."""
    return value if -(1 << 63) <= value < (1 << 63) else -1


def _stored_tile(row) -> StoredTile:
    return StoredTile(row[0], row[1], Window(*row[2:6]), tuple(row[6:10]), row[10], row[11])
