"""One psycopg connection to a PostgreSQL index: search_path set to its schema, vectors as numpy."""

from __future__ import annotations

import os
import socket

from ...errors import IndexFileError
from ..target import ServerTarget
from .errors import server_failure

APPLICATION_NAME = "tilescribe"


def claimant() -> str:
    """Who an indexer is, as its claims on tiles record it: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def connect(target: ServerTarget, *, readonly: bool):
    """An autocommit connection (transactions are explicit: Store.atomic) whose search_path is the
    index's schema, then the schemas holding PostGIS and pgvector."""
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        raise IndexFileError(
            f"{target.label} is a PostgreSQL index, and psycopg is not installed here: install the "
            "requirements (make setup, or pip install 'psycopg[binary]' pgvector).") from None
    try:
        conn = psycopg.connect(target.conninfo, autocommit=True, application_name=APPLICATION_NAME)
    except psycopg.Error as exc:
        raise server_failure(target, exc) from None
    try:
        homes = [row[0] for row in conn.execute(
            "select distinct n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace"
            " where e.extname in ('vector', 'postgis')")]
        path = sql.SQL(", ").join(sql.Identifier(name) for name in [target.schema, *homes, "public"])
        conn.execute(sql.SQL("set search_path to {}").format(path))
        if readonly:  # a search never writes, whatever the role may do
            conn.execute("set default_transaction_read_only = on")
    except psycopg.Error as exc:
        conn.close()
        raise server_failure(target, exc) from None
    return conn


def register_vectors(conn, target: ServerTarget) -> None:
    """numpy float32 arrays in and out of `vector` columns (the pgvector adapter)."""
    from pgvector.psycopg import register_vector

    try:
        register_vector(conn)
    except Exception:  # psycopg.ProgrammingError: vector type not found in the database
        raise IndexFileError(
            f"The database of {target.label} has no pgvector extension: an administrator runs CREATE "
            "EXTENSION vector; in it (docs/postgres.md, \"Setup\"), or index with a role that may.") from None
