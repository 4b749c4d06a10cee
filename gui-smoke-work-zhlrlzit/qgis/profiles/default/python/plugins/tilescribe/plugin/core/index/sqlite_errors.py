"""SQLite and sqlite-vec errors on an index file, translated once into messages that say what to do.

Used wherever the index is read or written: the CLI, the worker, the indexer, the importer.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path
from typing import Optional

from ..errors import IndexFileError, IndexingError, TileScribeError

# Less free space than this (on the disk, or below the index's page limit) when a write
# fails: the write failed for want of space, whatever the error says (sqlite-vec's does not).
LOW_SPACE_BYTES = 32 << 20
# What SQLite and sqlite-vec say when pages of an index file are damaged.
_DAMAGED = re.compile(r"malformed|corrupt|not a database|blob read error|blob size doesn.t match", re.I)


def open_failure(path, exc: sqlite3.DatabaseError) -> IndexFileError:
    """Why an index file could not be opened (schema checks, WAL setup, migrations), and what to do."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return IndexFileError(f"Index {path} is locked by another program: close it there and try again.")
    if "readonly" in text or "read-only" in text:
        return IndexFileError(f"Index {path} is read-only: make it writable or copy it to a folder you can write.")
    if "full" in text:
        return IndexFileError(f"No space left for index {path}: free some space, then run the same command again.")
    if "unable to open" in text:
        return IndexFileError(f"Cannot open index {path}: its folder may not be writable or the file may have "
                              "moved. Copy it to a folder you can write, or check the path.")
    return IndexFileError(f"Index {path} cannot be used ({text}); it may be damaged. Re-create it or restore a copy.")


def read_failure(path, exc: BaseException) -> Optional[IndexFileError]:
    """An IndexFileError for an index whose pages cannot be read (damage), else None."""
    from .untrusted import interrupted_failure

    stopped = interrupted_failure(path, exc) if path is not None else None
    if stopped is not None:
        return stopped
    if path is None or not _DAMAGED.search(str(exc)):
        return None
    return IndexFileError(f"Index {path} cannot be read ({exc}): it is damaged. Index the raster again "
                          "into a new file (--db), or restore a copy.")


def write_failure(path, exc: BaseException,
                  conn: Optional[sqlite3.Connection] = None) -> Optional[TileScribeError]:
    """An IndexingError saying what to do about an SQLite error while writing the index at `path`.

    None when the error is none of: no space, locked by another program, read-only, I/O
    error, damaged file. SQLite rolls back a transaction that ran out of space, and the
    rollback's own error then hides the first one: the whole chain is read.
    """
    text = " | ".join(str(e).lower() for e in _exception_chain(exc))
    kept = "What was written before is kept."
    again = "then run the same command again: it continues where it stopped."
    if " is full" in text or (("vec" in text or "i/o" in text) and _low_on_space(Path(path), conn)):
        return IndexingError(
            f"No space left to write the index {path}: the disk is full (or the index reached its "
            f"size limit). {kept} Free some space on that disk, {again}")
    if "locked" in text or "busy" in text:
        return IndexingError(
            f"Another program is writing to the index {path} (a database browser with unsaved changes?). "
            f"{kept} Close it there, {again}")
    if "readonly" in text or "read-only" in text:
        return IndexingError(
            f"The index {path} cannot be written (a read-only file, folder or disk). {kept} Make it "
            f"writable, or copy it to a folder you can write and give that copy with --db; {again}")
    if "disk i/o error" in text:
        return IndexingError(
            f"The disk failed while writing the index {path} (disk I/O error). {kept} Check the disk "
            f"(or network share), {again}")
    if "malformed" in text or "not a database" in text:
        return IndexingError(
            f"The index {path} is damaged ({exc}). Index into a new file (--db), or restore a copy.")
    return read_failure(path, exc)


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _low_on_space(path: Path, conn: Optional[sqlite3.Connection]) -> bool:
    try:
        if shutil.disk_usage(path.resolve().parent).free < LOW_SPACE_BYTES:
            return True
        if conn is not None:
            pages, limit, size = (conn.execute(f"pragma {name}").fetchone()[0]
                                  for name in ("page_count", "max_page_count", "page_size"))
            return (limit - pages) * size < LOW_SPACE_BYTES
    except (OSError, sqlite3.Error):
        pass
    return False
