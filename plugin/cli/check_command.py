"""`tilescribe check`: is an index whole? SQLite's integrity check, vector counts and shapes, known searches."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import IndexFileError
from ..core.index.health import check_index, wal_note
from ..core.index.opening import open_server_index
from ..core.index.store import Store
from ..core.index.target import index_label, is_server_index
from ..core.index.untrusted import ForeignSchemaError, describe
from .common import add_db_argument, index_writable, say


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "check", help="check that an index file is whole (after a crash, a copy, a disk problem)",
        description="SQLite keeps no page checksums: a damaged page can change search results without an "
                    "error. This reads the whole index: SQLite's integrity check, every vector's count, "
                    "shape and length, and a few searches whose answer is known.")
    add_db_argument(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    if is_server_index(args.db):
        with open_server_index(args.db) as server:  # upgrades an older schema where the role may
            return _report(server.check(), index_label(args.db))
    note = wal_note(Path(args.db))
    if note:
        say(f"note: {note}")
    # Writable when it can be: an older index is upgraded, and a normal end checkpoints the -wal.
    try:
        store = Store(args.db, readonly=not index_writable(Path(args.db)))
    except ForeignSchemaError as exc:  # a failed check, listed as the others are
        raise IndexFileError(
            f"Index {args.db} failed 1 check(s): it holds schema objects TileScribe never creates "
            f"({describe(exc.objects)}): another program changed it, and reading or writing it would run their "
            "SQL. Remove them if you trust where it came from, restore a copy, or index the raster again into a "
            "new file (--db).") from exc
    with store:
        report = check_index(store)
    return _report(report, args.db)


def _report(report, db: str) -> int:
    if not report.ok:
        raise IndexFileError(
            f"Index {db} failed {len(report.problems)} check(s): {' '.join(report.problems[:5])} Restore a "
            "copy, or index the raster again into a new file (--db); searches of this file may be wrong.")
    for line in report.checked:
        print(f"ok: {line}")
    print(f"{db}: every check passed")
    return 0
