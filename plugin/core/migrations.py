"""Schema of the index file as numbered migrations; `user_version` records how far a file got."""

from __future__ import annotations

import sqlite3


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


# Append only: a released file never changes a migration it already ran.
MIGRATIONS = [_m001_initial]
SCHEMA_VERSION = len(MIGRATIONS)
