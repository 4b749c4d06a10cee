"""One way in for every command: `open_index(db)` opens the file Store or the PostgreSQL PgStore.

`db` is what `--db` (or a worker request's "db") says: a path, or a postgresql:// URL or libpq
service (target.py). psycopg is imported only for the latter.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Union

from ..errors import IndexFileError
from .store import Store
from .target import index_label, is_server_index, parse_target

if TYPE_CHECKING:
    from .postgres.store import PgStore

AnyStore = Union[Store, "PgStore"]


def open_index(db: Union[str, os.PathLike], *, create: bool = False, readonly: bool = False) -> AnyStore:
    """The index `db` names, opened (create: made and migrated when missing; readonly: never written)."""
    if not is_server_index(db):
        return Store(db, create=create, readonly=readonly)
    return open_server_index(str(db), create=create, readonly=readonly)


def open_server_index(db: str, *, create: bool = False, readonly: bool = False) -> "PgStore":
    """The PostgreSQL index `db` (a postgresql:// URL or libpq service) names, opened."""
    try:
        target = parse_target(str(db))
    except ValueError as exc:
        raise IndexFileError(f"--db {index_label(db)}: {exc}.") from None
    try:
        from .postgres.store import PgStore
    except ImportError:
        raise IndexFileError(
            f"{target.label} is a PostgreSQL index, and psycopg or pgvector is not installed here: install the "
            "requirements (make setup, or pip install 'psycopg[binary]' pgvector).") from None
    return PgStore(target, create=create, readonly=readonly)
