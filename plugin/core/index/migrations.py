"""Schema of the index file as numbered migrations; `user_version` records how far a file got."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, and a migration must be one transaction.
    for statement in script.split(";\n"):
        if statement.strip():
            conn.execute(statement)


def _m001_initial(conn: sqlite3.Connection) -> None:
    _run_script(
        conn,
        """
        create table rasters (
            id integer primary key,
            path text not null,
            fingerprint text not null,
            width integer not null,
            height integer not null,
            band_count integer not null,
            dtype text not null,
            crs_wkt text not null,
            crs_label text not null,
            transform text not null,           -- JSON, GDAL order
            added_at text not null,
            unique (path, fingerprint)
        );
        create table embedders (
            id integer primary key,
            name text not null,
            dim integer not null,
            unique (name, dim)
        );
        create table runs (
            id integer primary key,
            raster_id integer not null references rasters(id),
            embedder_id integer not null references embedders(id),
            captioner text not null,           -- JSON record, never secrets
            prompt_version text not null,
            tile_size integer not null,
            overlap integer not null,
            variants integer not null,
            started_at text not null,
            finished_at text
        );
        create table tiles (
            id integer primary key,
            run_id integer not null references runs(id),
            tile_key text not null,
            col_off integer not null,
            row_off integer not null,
            width integer not null,
            height integer not null,
            minx real not null, miny real not null, maxx real not null, maxy real not null,
            status text not null default 'pending'
                check (status in ('pending', 'done', 'skipped', 'failed')),
            reason text not null default '',
            raw text not null default '',      -- the model's answer, for inspection
            updated_at text,
            unique (run_id, tile_key)
        );
        create index tiles_run_status on tiles (run_id, status);
        create table captions (
            id integer primary key,
            tile_id integer not null references tiles(id),
            variant integer not null,
            one_sentence text not null,
            feature text not null,
            caption text not null,
            unique (tile_id, variant)
        );
        create virtual table caption_fts using fts5(text, tokenize = 'porter unicode61');
        """
    )


def _m002_plain_vectors(conn: sqlite3.Connection) -> None:
    """Float vectors also in a plain table keyed by caption id, and per-run vector bookkeeping.

    Re-scoring a fast search's candidates reads vectors by id: vec0 point reads are
    slow, primary-key reads of a plain table are not. `vector_count` and
    `vector_version` (bumped by every write of a run's captions) let an in-memory
    index tell in one primary-key read that it is stale.
    """
    _run_script(
        conn,
        """
        create table caption_embeddings (
            caption_id integer primary key references captions(id),
            embedding blob not null            -- float32, as in the vec0 table
        );
        alter table runs add column vector_count integer not null default 0;
        alter table runs add column vector_version integer not null default 0;
        update runs set vector_count = (
            select count(*) from captions c join tiles t on t.id = c.tile_id where t.run_id = runs.id
        )
        """
    )
    for (embedder_id,) in conn.execute("select id from embedders").fetchall():
        # Spelled out, not store.vec_table(): a migration must not change when the code does.
        conn.execute(
            "insert into caption_embeddings (caption_id, embedding)"
            f" select caption_id, embedding from caption_vec_{int(embedder_id)}"
        )


def _m003_tile_attempts(conn: sqlite3.Connection) -> None:
    """How many runs tried a tile and failed: failed tiles are retried a bounded number of times."""
    _run_script(
        conn,
        """
        alter table tiles add column attempts integer not null default 0;
        update tiles set attempts = 1 where status = 'failed'
        """
    )


def _m004_run_identity(conn: sqlite3.Connection) -> None:
    """What a run's captions depend on besides its captioner, and what detects a changed raster.

    runs.render: how tiles were rendered (bands, size, stretch) as JSON; NULL for runs made
    before it was recorded (adopted by the next run that resumes them).
    runs.raster_state: the raster file's size, mtime and fingerprint when its tiles were last
    known to match; a difference makes the next run compare tile pixel checksums.
    tiles.pixel_hash: checksum of the pixels the tile was captioned from.
    embedders.probe: the embedder's vectors of fixed probe sentences (float32), which tell
    one model from another whatever its folder is called.
    """
    _run_script(
        conn,
        """
        alter table runs add column render text;
        alter table runs add column raster_state text;
        alter table tiles add column pixel_hash text;
        alter table embedders add column probe blob
        """
    )


def _m005_one_vector_copy(conn: sqlite3.Connection) -> None:
    """One float copy of each vector: the vec0 table's. The plain copy of migration 2 goes.

    Both copies were always written in one transaction, so nothing is lost. Re-scoring
    now reads vectors by offset from vec0's chunks (store_reads.py), as fast as the
    plain table's primary-key reads; a 1M-vector file drops from 3.9 GB to ~1.9 GB.
    The freed pages are reused by later writes (VACUUM returns them to the disk).
    """
    conn.execute("drop table if exists caption_embeddings")


def _m006_raster_source(conn: sqlite3.Connection) -> None:
    """Where a raster came from when it is not a file the user had: a web or other layer that QGIS
    rendered into a GeoTIFF (provider, URL, layer name, extent, resolution, CRS, time), as JSON;
    NULL for a raster file. Copied from the GeoTIFF's TILESCRIBE_SOURCE metadata item."""
    conn.execute("alter table rasters add column source text")


# Append only: a released file never changes a migration it already ran.
MIGRATIONS = [_m001_initial, _m002_plain_vectors, _m003_tile_attempts, _m004_run_identity, _m005_one_vector_copy,
              _m006_raster_source]
SCHEMA_VERSION = len(MIGRATIONS)
# A read-only reader (search in QGIS, `info`) reads files from this schema on: the migrations after
# it only add what a reader takes as absent (6: rasters.source), so an index made before them is
# searched as it is instead of refused until someone opens it writable.
OLDEST_READABLE = 5


def older_schema_message(path: Path, version: int, latest: int) -> str:
    """Why a file opened read-only is behind, and what to do: upgrade it, or copy its -wal too.

    A copy of an index whose indexer was killed may hold only what reached the file itself:
    the rest (even the tables) is still in the -wal file beside the original.
    """
    copied = (f"If it is a copy of an index that was being written (or whose indexer was stopped abruptly), "
              f"its content may still be in the original's -wal file: copy {path.name}-wal along with it, or "
              "open the original writable once (`tilescribe check --db ORIGINAL`) and copy it again.")
    if version == 0:
        return f"Index {path} holds no TileScribe tables yet. {copied}"
    return (f"Index {path} is of an older schema ({version}; this version writes {latest}): open it writable "
            f"once to upgrade it (`tilescribe check --db {path}`). {copied}")
