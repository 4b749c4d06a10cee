"""PgStore: the index on PostgreSQL, with the methods of the file's Store (store.py).

Search, indexing, the CLI and the worker call the same methods on either. What differs:
- many indexers at once: tiles are claimed (`tiles_to_do`) with FOR UPDATE SKIP LOCKED under a
  lease (claims.py) that a heartbeat renews while indexing (heartbeat.py); a save stores only
  tiles whose claim is still this process's;
- the dense search is pgvector's HNSW (approximate), the extent filter a PostGIS GiST query
  (vector_search.py); words use PostgreSQL full-text search;
- no in-RAM fast search (`fast_search = False`): the server's index already answers in milliseconds.
"""

from __future__ import annotations

import contextlib
import json
from typing import Iterator, Optional, Sequence

import numpy as np

from ...captions import CaptionVariant
from ...errors import IndexFileError, IndexingError, TileScribeError
from ...provenance import parse_source
from ...raster.tiling import RasterInfo, Tile
from ..connection import now
from ..store import StoredTile
from ..store_reads import RunInfo, parse_run_row
from ..store_writes import TileCaptions
from ..target import ServerTarget
from . import claims, vector_search
from .connection import claimant, connect, register_vectors
from .errors import server_failure
from .heartbeat import heartbeat
from .schema import (SCHEMA_VERSION, TEXT_SEARCH_CONFIG, create_vector_table, migrate, refuse_newer, schema_version)

TILE_COLUMNS = "id, run_id, col_off, row_off, width, height, minx, miny, maxx, maxy, status, reason"
_RUN_SELECT = (
    "select r.id, r.raster_id, r.embedder_id, e.name, e.dim, r.captioner, r.prompt_version, r.tile_size,"
    " r.overlap, r.variants, r.started_at, r.finished_at, r.render from runs r"
    " join embedders e on e.id = r.embedder_id")


class PgStore:
    """A PostgreSQL index (one schema): opens and migrates it and runs every query on it."""

    backend = "postgres"
    fast_search = False  # search/search.py: HNSW on the server instead of the in-RAM index

    def __init__(self, target: ServerTarget, *, create: bool = False, readonly: bool = False):
        self.target = target
        self.path = target.label  # what messages name (never the password)
        self.readonly = readonly
        self.me = claimant()
        self._iterative: Optional[bool] = None  # iterative_scans(), asked once
        self._conn = connect(target, readonly=readonly)
        try:
            with self._errors():
                if readonly:
                    self._check_version()
                else:
                    if not create and not schema_version(self._conn, target.schema):
                        self._check_version()  # says there is no such index yet
                    migrate(self._conn, target)
                    if create:  # an indexer: claims left by a dead process with our host:pid go back
                        with self._conn.transaction():
                            claims.release(self._conn, self.me)
            register_vectors(self._conn, target)
        except BaseException:
            self._conn.close()
            raise

    def iterative_scans(self) -> bool:
        """Whether the server's pgvector (0.8+) continues an HNSW scan until a filter has k rows."""
        if self._iterative is None:
            row = self._one("select extversion from pg_extension where extname = 'vector'")
            parts = [int(p) if p.isdigit() else 0 for p in (row[0] if row else "0").split(".")[:2]]
            self._iterative = tuple(parts + [0] * (2 - len(parts))) >= (0, 8)
        return self._iterative

    def _check_version(self) -> None:
        version = schema_version(self._conn, self.target.schema)
        refuse_newer(self.target, version)
        if version == 0:
            raise IndexFileError(
                f"The PostgreSQL index {self.path} has no TileScribe schema {self.target.schema!r} yet: index a "
                "raster into it first (tilescribe index --db ...), or check ?schema= in the URL.")
        if version < SCHEMA_VERSION:
            raise IndexFileError(
                f"The PostgreSQL index {self.path} (schema {self.target.schema}) is of an older schema ({version}; "
                f"this version writes {SCHEMA_VERSION}): upgrade it once with the writer role (`tilescribe check "
                f"--db URL`, or index into it).")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """psycopg's errors as TileScribe's, naming the index without its password."""
        import psycopg

        try:
            yield
        except psycopg.Error as exc:
            raise server_failure(self.target, exc) from None

    def _rows(self, query, params=()) -> list[tuple]:
        with self._errors():
            return self._conn.execute(query, params).fetchall()

    def _one(self, query, params=()) -> Optional[tuple]:
        with self._errors():
            return self._conn.execute(query, params).fetchone()

    @property
    def usable(self) -> bool:
        """Whether the connection still works as far as psycopg knows (a pool reconnects otherwise)."""
        return not self._conn.closed and not self._conn.broken

    def close(self) -> None:
        if self._conn.closed:
            return
        with contextlib.suppress(Exception):  # the server may be gone: its leases lapse by themselves
            if not self.readonly:
                claims.release(self._conn, self.me)
        with contextlib.suppress(Exception):
            self._conn.close()

    def __enter__(self) -> "PgStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction; nested calls become savepoints. All or nothing on error."""
        if self._conn.closed:
            raise IndexFileError(f"The PostgreSQL index {self.path} was already closed: open it again to use it.")
        with self._errors(), self._conn.transaction():
            yield

    def run_choice_lock(self):
        """Held while an indexer picks or creates its run: indexers starting together share one run."""
        return _advisory(self, f"tilescribe runs {self.target.schema}")

    @contextlib.contextmanager
    def indexer_lock(self) -> Iterator["_NoLock"]:
        """Many indexers may write at once here: their claims on tiles keep them apart (claims.py).

        Held while indexing: a heartbeat renews this process's leases every lease/3 meanwhile, so a
        tile slower than the lease stays this indexer's (heartbeat.py)."""
        with heartbeat(self.target, self.me):
            yield _NoLock()

    # -- rasters, embedders, runs -------------------------------------------------------

    def upsert_raster(self, info: RasterInfo) -> int:
        row = self._one("select id from rasters where path = %s and fingerprint = %s", (info.path, info.fingerprint))
        if row:
            if info.source:
                with self.atomic():
                    self._record_source(row[0], info)
            return row[0]
        elsewhere = self._one("select id, path from rasters where fingerprint = %s and width = %s and height = %s"
                              " order by id limit 1", (info.fingerprint, info.width, info.height))
        if elsewhere:
            # Another machine's path to the same pixels would start a second run of the same tiles.
            raise IndexingError(
                f"The raster {info.path} holds the same pixels as raster {elsewhere[0]} of {self.path}, recorded as "
                f"{elsewhere[1]}. Every indexer of a shared index reads the raster by the same path or GDAL URL "
                f"(a share mounted at the same place, or e.g. /vsicurl/https://...), so that they share one run: "
                f"give {elsewhere[1]}.")
        row = self._one("select id from rasters where path = %s and width = %s and height = %s and band_count = %s"
                        " and dtype = %s and crs_wkt = %s and transform = %s order by id desc limit 1",
                        (info.path, info.width, info.height, info.band_count, info.dtype, info.crs_wkt,
                         json.dumps(info.transform)))
        if row:
            with self.atomic():
                self._conn.execute("update rasters set fingerprint = %s where id = %s", (info.fingerprint, row[0]))
                self._record_source(row[0], info)
            return row[0]
        srid = self._srid_of(info.crs_wkt)
        with self.atomic():
            self._conn.execute(
                "insert into rasters (path, fingerprint, width, height, band_count, dtype, crs_wkt, crs_label, srid,"
                " transform, added_at, source) values (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                " on conflict (path, fingerprint) do nothing",
                (info.path, info.fingerprint, info.width, info.height, info.band_count, info.dtype, info.crs_wkt,
                 info.crs_label, srid, json.dumps(info.transform), now(), info.source or None))
            return self._conn.execute("select id from rasters where path = %s and fingerprint = %s",
                                      (info.path, info.fingerprint)).fetchone()[0]

    def _record_source(self, raster_id: int, info: RasterInfo) -> None:
        """A rendered raster's source as its file now records it (a file that lost it keeps the old one)."""
        if info.source:
            self._conn.execute("update rasters set source = %s where id = %s", (info.source, raster_id))

    def _srid_of(self, crs_wkt: str) -> int:
        """The raster's CRS as an SRID PostGIS knows (EPSG code), or 0 when it has none."""
        code = _epsg_code(crs_wkt)
        if code is None:
            return 0
        known = self._one("select 1 from spatial_ref_sys where srid = %s", (code,))
        return code if known else 0

    def embedder_id(self, name: str, dim: int) -> int:
        """Id of an embedder, creating its vector table (HNSW-indexed) the first time it is seen."""
        row = self._one("select id from embedders where name = %s and dim = %s", (name, dim))
        if row:
            return row[0]
        with self.atomic():
            embedder_id = self._conn.execute("insert into embedders (name, dim) values (%s, %s) returning id",
                                             (name, dim)).fetchone()[0]
            create_vector_table(self._conn, embedder_id, dim)
        return embedder_id

    def embedders_of_dim(self, dim: int) -> list[tuple[int, str, Optional[bytes]]]:
        return [(r[0], r[1], None if r[2] is None else bytes(r[2]))
                for r in self._rows("select id, name, probe from embedders where dim = %s order by id", (dim,))]

    def embedder_record(self, embedder_id: int) -> tuple[str, int, Optional[bytes]]:
        name, dim, probe = self._one("select name, dim, probe from embedders where id = %s", (embedder_id,))
        return name, dim, None if probe is None else bytes(probe)

    def set_embedder_probe(self, embedder_id: int, probe: bytes) -> None:
        with self.atomic():
            self._conn.execute("update embedders set probe = %s where id = %s", (probe, embedder_id))

    def embedder_caption_sample(self, embedder_id: int, limit: int) -> list[tuple]:
        return self._rows(
            "select c.id, c.one_sentence, c.feature, c.caption, t.run_id from captions c"
            " join tiles t on t.id = c.tile_id join runs r on r.id = t.run_id"
            " where r.embedder_id = %s order by c.id limit %s", (embedder_id, limit))

    def create_run(self, raster_id: int, embedder_id: int, captioner: dict, prompt_version: str,
                   tile_size: int, overlap: int, variants: int, render: dict | None = None) -> int:
        with self.atomic():
            return self._conn.execute(
                "insert into runs (raster_id, embedder_id, captioner, prompt_version, tile_size, overlap, variants,"
                " started_at, render) values (%s,%s,%s,%s,%s,%s,%s,%s,%s) returning id",
                (raster_id, embedder_id, json.dumps(captioner, sort_keys=True), prompt_version, tile_size, overlap,
                 variants, now(), None if render is None else json.dumps(render, sort_keys=True))).fetchone()[0]

    def find_run(self, raster_id: int, embedder_id: int, captioner: dict, prompt_version: str,
                 tile_size: int, overlap: int, variants: int) -> int | None:
        row = self._one(
            "select id from runs where raster_id = %s and embedder_id = %s and captioner = %s and prompt_version = %s"
            " and tile_size = %s and overlap = %s and variants = %s order by id desc limit 1",
            (raster_id, embedder_id, json.dumps(captioner, sort_keys=True), prompt_version, tile_size, overlap,
             variants))
        return row[0] if row else None

    def set_run_render(self, run_id: int, render: dict) -> None:
        with self.atomic():
            self._conn.execute("update runs set render = %s where id = %s",
                               (json.dumps(render, sort_keys=True), run_id))

    def finish_run(self, run_id: int) -> None:
        with self.atomic():
            self._conn.execute("update runs set finished_at = %s where id = %s", (now(), run_id))

    def run_info(self, run_id: int) -> RunInfo:
        found = self._run_infos(run_id)
        if not found:
            raise IndexFileError(f"Index {self.path} has no run {run_id}: see `tilescribe info`.")
        return found[0]

    def _run_infos(self, run_id: Optional[int] = None) -> list[RunInfo]:
        if run_id is None:
            rows = self._rows(f"{_RUN_SELECT} order by r.id")
        else:
            rows = self._rows(f"{_RUN_SELECT} where r.id = %s", (_big(run_id),))
        try:
            return [parse_run_row(row) for row in rows]
        except ValueError as exc:
            raise IndexFileError(f"Index {self.path} cannot be read: {exc}. Restore it from a backup.") from None

    def raster_info(self, raster_id: int) -> dict:
        keys = ("id", "path", "fingerprint", "width", "height", "band_count", "dtype", "crs_wkt", "crs_label",
                "transform", "source")
        row = self._one(f"select {', '.join(keys)} from rasters where id = %s", (raster_id,))
        info = dict(zip(keys, row))
        info["transform"] = json.loads(info["transform"])
        info["source"] = parse_source(info["source"])
        return info

    # -- tiles and captions ---------------------------------------------------------------

    def add_tiles(self, run_id: int, tiles: Sequence[Tile]) -> None:
        """Record tiles of a run (pending, or skipped with the reason); known tiles stay as they are."""
        if not tiles:
            return
        srid = self._one("select ra.srid from runs r join rasters ra on ra.id = r.raster_id where r.id = %s",
                         (run_id,))[0]
        stamp = now()
        with self.atomic():
            self._conn.execute(
                "insert into tiles (run_id, tile_key, col_off, row_off, width, height, minx, miny, maxx, maxy, geom,"
                " status, reason, updated_at) select %s, k, c, r, w, h, x0, y0, x1, y1,"
                " ST_MakeEnvelope(x0, y0, x1, y1, %s), s, why, %s from unnest(%s::text[], %s::int[], %s::int[],"
                " %s::int[], %s::int[], %s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::text[],"
                " %s::text[]) as u(k, c, r, w, h, x0, y0, x1, y1, s, why) on conflict (run_id, tile_key) do nothing",
                (run_id, srid, stamp, [t.key for t in tiles],
                 *[[t.window.as_list()[i] for t in tiles] for i in range(4)],
                 *[[float(t.bbox[i]) for t in tiles] for i in range(4)],
                 ["skipped" if t.skip_reason else "pending" for t in tiles], [t.skip_reason or "" for t in tiles]))

    def tile_id(self, run_id: int, key: str) -> int | None:
        row = self._one("select id from tiles where run_id = %s and tile_key = %s", (run_id, key))
        return row[0] if row else None

    def tiles(self, run_id: int, status: str | None = None) -> list[StoredTile]:
        if status:
            rows = self._rows(f"select {TILE_COLUMNS} from tiles where run_id = %s and status = %s order by id",
                              (run_id, status))
        else:
            rows = self._rows(f"select {TILE_COLUMNS} from tiles where run_id = %s order by id", (run_id,))
        return [_stored_tile(row) for row in rows]

    def tiles_to_do(self, run_id: int, statuses: Sequence[str], after: int, page: int,
                    max_attempts: int | None) -> list[StoredTile]:
        """Tiles this process now holds a lease on (claims.claim): none that another indexer holds.

        A claim takes claims.CLAIM_PAGE tiles, whatever `page` asks: the others stay in the queue for
        the other indexers. Pending tiles whose lease lapsed come back whatever their id.
        """
        if self.readonly:
            raise IndexFileError(f"The PostgreSQL index {self.path} was opened read-only: indexing needs it writable.")
        with self.atomic():
            rows = claims.claim(self._conn, self.me, self.target.lease_s, run_id, statuses, after, page, max_attempts)
        return [_stored_tile(row) for row in rows]

    def tile(self, tile_id: int) -> StoredTile | None:
        row = self._one(f"select {TILE_COLUMNS} from tiles where id = %s", (_big(tile_id),))
        return _stored_tile(row) if row else None

    def save_captions(self, tile_id: int, variants: Sequence[CaptionVariant], vectors: np.ndarray,
                      raw: str = "", pixel_hash: Optional[str] = None) -> list[int]:
        return self.save_captions_many([TileCaptions(tile_id, variants, vectors, raw, pixel_hash)])

    def save_captions_many(self, entries: Sequence[TileCaptions]) -> list[int]:
        """Store tiles' variants, vectors and checksums and mark them done: one transaction.

        Returns the ids of tiles not stored because another indexer holds them now (our lease lapsed
        and theirs is live): their captions come from that indexer, never twice.
        """
        with self.atomic():
            return claims.write_captions(self._conn, self.me, entries, now())

    def mark_tile(self, tile_id: int, status: str, reason: str = "", raw: str = "",
                  pixel_hash: Optional[str] = None) -> None:
        """Set a tile's status (a failure counts one more attempt) and let go of its claim, if ours."""
        with self.atomic():
            self._conn.execute(
                "update tiles set status = %s, reason = %s, raw = %s, updated_at = %s,"
                " attempts = attempts + (case when %s = 'failed' then 1 else 0 end),"
                " pixel_hash = coalesce(%s, pixel_hash), claimed_by = null, claimed_at = null, lease_until = null"
                " where id = %s and (claimed_by is null or claimed_by = %s)",
                (status, reason, raw, now(), status, pixel_hash, tile_id, self.me))

    def captions_of(self, tile_id: int) -> list[CaptionVariant]:
        rows = self._rows("select one_sentence, feature, caption from captions where tile_id = %s order by variant",
                          (tile_id,))
        return [CaptionVariant(*row) for row in rows]

    def vectors_of(self, tile_id: int, run: RunInfo | None = None) -> np.ndarray:
        if run is None:
            run = self.run_info(self._one("select run_id from tiles where id = %s", (tile_id,))[0])
        ids = [row[0] for row in self._rows("select id from captions where tile_id = %s order by variant", (tile_id,))]
        found, vectors = self.vector_reader(run).read(np.array(ids, dtype=np.int64))
        if len(found) != len(ids):
            raise IndexFileError(f"Index {self.path} lacks vectors of tile {tile_id}: run `tilescribe check`.")
        return vectors[np.searchsorted(found, ids)]

    def write_failure(self, exc: BaseException) -> Optional[TileScribeError]:
        """SQLite's errors do not come from here: psycopg's are turned into TileScribe's where they happen."""
        return None

    def vector_reader(self, run: RunInfo) -> "vector_search.VectorReader":
        return vector_search.VectorReader(self, run)

    # -- overview ---------------------------------------------------------------------------

    def runs(self) -> list[RunInfo]:
        return self._run_infos()

    def rasters(self) -> list[dict]:
        return [self.raster_info(r[0]) for r in self._rows("select id from rasters order by id")]

    def tile_counts(self, run_id: int) -> dict[str, int]:
        counts = {"pending": 0, "done": 0, "skipped": 0, "failed": 0}
        counts.update(dict(self._rows("select status, count(*) from tiles where run_id = %s group by status",
                                      (run_id,))))
        return counts

    def variant_count(self, run_id: int) -> int:
        return self._one("select count(*) from captions c join tiles t on t.id = c.tile_id where t.run_id = %s",
                         (run_id,))[0]

    def vector_count(self, run_id: int) -> int:
        table = vector_search.table_of(self.run_info(run_id))
        return self._one(vector_search.sql_count(table), (run_id,))[0]

    def vector_state(self, run_id: int) -> tuple[int, int]:
        row = self._one("select vector_count, vector_version from runs where id = %s", (_big(run_id),))
        if row is None:
            raise IndexFileError(f"Index {self.path} has no run {run_id}: see `tilescribe info`.")
        return row[0], row[1]

    def searchable_runs(self) -> list[int]:
        return [row[0] for row in self._rows("select distinct run_id from tiles where status = 'done' order by run_id")]

    def latest_searchable_run(self) -> int | None:
        row = self._one("select max(run_id) from tiles where status = 'done'")
        return row[0] if row else None

    def workers(self, run_id: int) -> list[dict]:
        """Who is captioning the run now (live or lapsed claims) and how many tiles each indexer stored."""
        with self._errors():
            return claims.workers(self._conn, run_id)

    # -- search (search/search.py, search/lexical.py) ------------------------------------------

    def nearest_variants(self, run: RunInfo, vector: np.ndarray, k: int,
                         extent) -> list[tuple[int, int, float]]:
        with self._errors():
            return vector_search.nearest(self, run, vector, k, extent)

    def all_variants_by_distance(self, run: RunInfo, vector: np.ndarray, extent) -> list[tuple[int, int, float]]:
        with self._errors():
            return vector_search.exact(self, run, vector, None, extent)

    def vector_dim_disagreement(self, run: RunInfo) -> Optional[str]:
        declared = self._one("select atttypmod from pg_attribute where attrelid = to_regclass(%s) and"
                             " attname = 'embedding'", (vector_search.table_of(run),))
        if declared is None or declared[0] in (-1, run.dim):
            return None
        return (f"the embedder record of run {run.id} says {run.dim}-d, but its vector table holds "
                f"{declared[0]}-d vectors")

    def hit_rows(self, tile_ids: Sequence[int], caption_ids: Sequence[int]) -> tuple[dict, dict]:
        tiles = {row[0]: row[1:] for row in self._rows(
            "select id, col_off, row_off, width, height, minx, miny, maxx, maxy from tiles where id = any(%s)",
            ([int(i) for i in tile_ids],))}
        captions = {row[0]: row[1:] for row in self._rows(
            "select id, one_sentence, feature, caption from captions where id = any(%s)",
            ([int(i) for i in caption_ids],))}
        return tiles, captions

    def tile_at(self, run_id: int, x: float, y: float) -> Optional[int]:
        row = self._one(
            "select id from tiles where run_id = %s and status = 'done' and minx <= %s and maxx >= %s and miny <= %s"
            " and maxy >= %s order by (maxx - minx) * (maxy - miny), id limit 1", (run_id, x, x, y, y))
        return row[0] if row else None

    def word_matches(self, fts_query: str, run_id: int, extent, limit: int) -> list[tuple[int, int]]:
        """[(tile id, caption id)] of the run's variants sharing a word with the query, best ts_rank_cd first.

        `fts_query` is lexical.fts_query's quoted words; each becomes its own plainto_tsquery
        parameter, OR-ed, so nothing in it is read as tsquery syntax.
        """
        words = [w for w in (part.strip('"') for part in fts_query.split(" OR ")) if w]
        if not words:
            return []
        query = " || ".join(f"plainto_tsquery('{TEXT_SEARCH_CONFIG}', %s)" for _ in words)
        where, params = vector_search.extent_filter(self, run_id, extent)
        with self._errors():
            return self._conn.execute(
                f"with q as (select {query} as q) select c.tile_id, c.id from captions c join tiles t on t.id ="
                f" c.tile_id, q where c.words @@ q.q and t.run_id = %s{where} order by ts_rank_cd(c.words, q.q) desc,"
                " c.id limit %s", (*words, run_id, *params, limit)).fetchall()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One repeatable-read transaction, so several reads see the index at the same moment."""
        if self._conn.info.transaction_status != 0:  # already in one
            yield
            return
        with self._errors(), self._conn.transaction():
            self._conn.execute("set transaction isolation level repeatable read")
            yield

    def run_caption_ids(self, run_id: int, after: int = 0) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows("select c.id, c.tile_id from captions c join tiles t on t.id = c.tile_id"
                          " where t.run_id = %s and c.id > %s order by c.id", (run_id, after))
        pairs = np.array(rows, dtype=np.int64).reshape(-1, 2)
        return np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])

    def tile_boxes(self, run_id: int, tile_ids: np.ndarray) -> np.ndarray:
        rows = self._rows("select minx, miny, maxx, maxy from tiles where run_id = %s and id = any(%s) order by id",
                          (run_id, [int(i) for i in tile_ids]))
        return np.array(rows, dtype=np.float64).reshape(-1, 4)

    # -- raster changes (indexing/changes.py) -----------------------------------------------------

    def raster_state(self, run_id: int) -> Optional[str]:
        return self._one("select raster_state from runs where id = %s", (run_id,))[0]

    def set_raster_state(self, run_id: int, state: str) -> None:
        with self.atomic():
            self._conn.execute("update runs set raster_state = %s where id = %s", (state, run_id))

    def finished_tiles_page(self, run_id: int, after: int, page: int) -> list[tuple]:
        return self._rows("select id, col_off, row_off, width, height, pixel_hash from tiles where run_id = %s and"
                          " status in ('done', 'skipped') and id > %s order by id limit %s", (run_id, after, page))

    def save_pixel_check(self, hashes: dict, changed: Sequence[int] = ()) -> None:
        with self.atomic(), self._conn.cursor() as cur:
            cur.executemany("update tiles set pixel_hash = %s where id = %s",
                            [(h, t) for t, h in hashes.items() if h is not None])
            cur.executemany("update tiles set status = 'pending', reason = '' where id = %s", [(t,) for t in changed])

    # -- check (health.py) ------------------------------------------------------------------------

    def check(self):
        """Counts, vectors and known searches of every run (health.CheckReport)."""
        from .health import check_index

        with self._errors():
            return check_index(self)


class _NoLock:
    previous_holder_died = False  # a dead indexer's tiles come back through their lapsed leases


@contextlib.contextmanager
def _advisory(store: PgStore, key: str) -> Iterator[None]:
    with store.atomic():
        store._conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (key,))
        yield


def _epsg_code(crs_wkt: str) -> Optional[int]:
    if not crs_wkt:
        return None
    try:
        from osgeo import osr

        srs = osr.SpatialReference()
        if srs.ImportFromWkt(crs_wkt) != 0:
            return None
        srs.AutoIdentifyEPSG()
        code = srs.GetAuthorityCode(None)
        return int(code) if code and srs.GetAuthorityName(None) == "EPSG" else None
    except Exception:  # no GDAL bindings, or a CRS they cannot name: boxes keep SRID 0
        return None


def _big(value: int) -> int:
    """An id as PostgreSQL's bigint can bind it: one beyond 64 bits (a typo) matches nothing."""
    return value if -(1 << 63) <= value < (1 << 63) else -1


def _stored_tile(row) -> StoredTile:
    from ...raster.tiling import Window

    return StoredTile(row[0], row[1], Window(*row[2:6]), tuple(row[6:10]), row[10], row[11])
