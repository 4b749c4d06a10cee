"""Opening an index file's SQLite connection: file checks, sqlite-vec, pragmas, schema check and migrations."""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from ..errors import IndexFileError
from . import INDEX_SUFFIX
from .migrations import MIGRATIONS, OLDEST_READABLE, SCHEMA_VERSION, older_schema_message
from .untrusted import bound_query_time, refuse_foreign_objects

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


def connect(path: Path, *, create: bool, readonly: bool) -> sqlite3.Connection:
    """A checked connection to the index file: sqlite-vec loaded, schema checked (migrated unless read-only)."""
    check_file(path, create)
    uri = f"{path.resolve().as_uri()}?mode={'ro' if readonly else 'rwc'}"  # escapes '#', '?', '%'
    if readonly and _on_read_only_media(path):
        uri += "&immutable=1"  # a WAL index there cannot get its -shm file; nobody writes it
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("pragma busy_timeout = 5000")
        bound_query_time(conn)  # a received file must not hang a command (untrusted.py)
        conn.execute(f"pragma mmap_size = {MMAP_BYTES}")
    except sqlite3.Error as exc:
        raise IndexFileError(f"Cannot open index {path}: {exc}.") from exc
    return conn


def tidy_wal(path: Path) -> None:
    """Let SQLite remove the index's -wal and -shm if nobody else has it open. A read-only connection
    cannot, so when one closed last (the QGIS worker after searches) both stayed beside the index.
    A writable open and close does what SQLite does at any last close: checkpoint, then delete both;
    with another connection open it only checkpoints what it can without waiting (PASSIVE). Never
    creates the file (mode=rw), never waits on a lock."""
    if not Path(f"{path}-wal").exists() or _on_read_only_media(path):
        return
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None, timeout=0)
    except sqlite3.Error:
        return
    try:
        conn.execute("pragma wal_checkpoint(PASSIVE)")
    except sqlite3.Error:
        pass  # busy or read-only after all: the next writer's close tidies it
    finally:
        conn.close()


def prepare(conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
    """Load sqlite-vec and check the schema; a writable file also gets WAL (its migrations: the caller)."""
    load_vec(conn, path)
    check_schema(conn, path, readonly)
    if not readonly:
        conn.execute("pragma journal_mode = wal")
        conn.execute("pragma synchronous = normal")


def check_file(path: Path, create: bool) -> None:
    if path.is_dir():
        raise IndexFileError(f"{path} is a folder; give an index file (*{INDEX_SUFFIX}).")
    if not path.exists() or path.stat().st_size == 0:
        if not create:
            raise IndexFileError(
                f"Index file not found: {path}. Create it with `tilescribe index` "
                "or `tilescribe import-captions`."
            )
        if not path.parent.is_dir():
            raise IndexFileError(f"Folder for the index file does not exist: {path.parent}.")
        return
    with open(path, "rb") as handle:
        if handle.read(16) != SQLITE_HEADER:
            raise IndexFileError(
                f"{path} is not a TileScribe index (not an SQLite file). "
                "Pick a *.tilescribe.sqlite file, or a new file name to create one."
            )


def check_schema(conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
    app_id = conn.execute("pragma application_id").fetchone()[0]
    version = conn.execute("pragma user_version").fetchone()[0]
    has_tables = conn.execute("select count(*) from sqlite_schema").fetchone()[0] > 0
    if app_id != APPLICATION_ID and (has_tables or app_id):
        raise IndexFileError(
            f"{path} is an SQLite file of another program, not a TileScribe index. "
            "Pick a *.tilescribe.sqlite file, or a new file name to create one."
        )
    refuse_foreign_objects(conn, path)  # views, triggers: never ours (issue 22)
    if version < 0:  # no TileScribe writes one: migrating from it ran migrations from the end (issue 22)
        raise IndexFileError(
            f"Index {path} records schema version {version}, which no TileScribe writes: the file "
            "was changed by another program or is damaged. Nothing was written to it. Restore a copy, "
            "or index the raster again into a new file (--db).")
    if version > SCHEMA_VERSION:
        raise IndexFileError(
            f"Index {path} was written by a newer TileScribe (schema {version}, this "
            f"version reads up to {SCHEMA_VERSION}). Update TileScribe to open it."
        )
    if readonly and version < OLDEST_READABLE:
        raise IndexFileError(older_schema_message(path, version, SCHEMA_VERSION))


def migrate(conn: sqlite3.Connection, atomic) -> None:
    """Run the migrations the file lacks, all in one transaction (`atomic`: the Store's): a step
    that fails leaves the file as it was."""
    version = conn.execute("pragma user_version").fetchone()[0]
    if not 0 <= version < SCHEMA_VERSION:
        return
    with atomic():
        for number in range(version, SCHEMA_VERSION):
            MIGRATIONS[number](conn)
            conn.execute(f"pragma application_id = {APPLICATION_ID}")
            conn.execute(f"pragma user_version = {number + 1}")


def _on_read_only_media(path: Path) -> bool:
    """True when no process can be writing the index: its folder is not writable and no -shm exists."""
    return not os.access(path.resolve().parent, os.W_OK) and not Path(f"{path}-shm").exists()
