"""An index file may come from someone else: untrusted input, read only through what TileScribe made.

A received file held views and triggers (issue 22): a view named `tiles` that never ends
made `info`, `search` and `check` hang; a trigger rewriting every inserted caption went
unnoticed. TileScribe creates neither, so a file holding any is refused when opened (and
`check` lists them), and every statement is bounded in time (SQLite's progress handler).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from ..errors import IndexFileError

# Longer than any statement TileScribe runs (exact search over 1M vectors: about 1 s here);
# TILESCRIBE_QUERY_LIMIT_S changes it.
QUERY_LIMIT_S = float(os.environ.get("TILESCRIBE_QUERY_LIMIT_S") or 600)
_CHECK_EVERY = 50_000  # SQLite virtual machine steps between two looks at the clock
_NEW_STATEMENT_GAP_S = 0.5  # the handler runs continuously within a statement: a gap starts a new one


class ForeignSchemaError(IndexFileError):
    """The index holds views or triggers: `objects` lists them as (type, name)."""

    def __init__(self, message: str, objects: list):
        super().__init__(message)
        self.objects = objects


def foreign_objects(conn: sqlite3.Connection) -> list:
    """(type, name) of every view and trigger in the file (sqlite_schema is read, nothing run)."""
    return conn.execute("select type, name from sqlite_schema where type in ('view', 'trigger') "
                        "order by type desc, name").fetchall()


def describe(objects: list) -> str:
    return ", ".join(f"{kind} {name!r}" for kind, name in objects)


def refuse_foreign_objects(conn: sqlite3.Connection, path: Path) -> None:
    objects = foreign_objects(conn)
    if not objects:
        return
    drops = " ".join(f"drop {kind} {name};" for kind, name in objects)
    raise ForeignSchemaError(
        f"Index {path} holds schema objects TileScribe never creates ({describe(objects)}): another program "
        "changed it, and reading or writing it would run their SQL, so TileScribe does not use it. If you "
        f"trust where it came from, remove them (sqlite3 {path} \"{drops}\") and run `tilescribe check`; else "
        "index the raster again into a new file (--db).", objects)


def bound_query_time(conn: sqlite3.Connection) -> None:
    """Interrupt any statement running longer than QUERY_LIMIT_S (it fails with 'interrupted')."""
    state = {"started": 0.0, "last": 0.0}

    def watch() -> int:
        now = time.monotonic()
        if now - state["last"] > _NEW_STATEMENT_GAP_S:
            state["started"] = now
        state["last"] = now
        return 1 if now - state["started"] > QUERY_LIMIT_S else 0

    conn.set_progress_handler(watch, _CHECK_EVERY)


def interrupted_failure(path, exc: BaseException):
    """The message for a statement stopped by bound_query_time, else None."""
    if str(exc).strip() != "interrupted":
        return None
    return IndexFileError(
        f"A query on index {path} ran longer than {QUERY_LIMIT_S:g} s and was stopped: the file may be damaged "
        "or built by another program never to answer. Run `tilescribe check` on it, restore a copy, or index "
        "the raster again into a new file (--db).")
