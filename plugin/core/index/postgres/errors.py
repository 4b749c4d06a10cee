"""PostgreSQL's errors as TileScribe's: each names the index (never its password) and what to do."""

from __future__ import annotations

from ...errors import IndexFileError, TileScribeError
from ..target import ServerTarget

DOCS = "docs/postgres.md"


def server_failure(target: ServerTarget, exc: BaseException) -> TileScribeError:
    """What to tell the user about a psycopg error on this index."""
    import psycopg
    from psycopg import errors

    detail = _clean(target, exc)
    where = f"the PostgreSQL index {target.label} (schema {target.schema})"
    if isinstance(exc, errors.InsufficientPrivilege) or (
            isinstance(exc, errors.ReadOnlySqlTransaction)):
        return IndexFileError(
            f"The PostgreSQL role may only read {where} ({detail}). Searching needs SELECT only; indexing, "
            f"import-captions and upgrades need the writer role ({DOCS}, \"Roles\"): connect as it.")
    if isinstance(exc, errors.UndefinedFile) or "extension" in detail and "not available" in detail:
        return IndexFileError(
            f"The server of {where} lacks an extension TileScribe needs ({detail}): install PostGIS 3 and "
            f"pgvector on it ({DOCS}, \"Setup\").")
    if isinstance(exc, psycopg.OperationalError):
        return IndexFileError(
            f"Lost or could not open the connection to {where}: {detail}. Check that the server runs and "
            f"the URL, service (pg_service.conf), password file (pgpass) and sslmode are right. Committed "
            "tiles are kept; an indexer's claimed tiles go back to the queue when their lease expires: run "
            "the same command again to resume once the server answers.")
    return IndexFileError(f"{where[0].upper()}{where[1:]} refused a query: {detail}. Run `tilescribe check "
                          f"--db {target.label}`; if it persists, report it with this message.")


def _clean(target: ServerTarget, exc: BaseException) -> str:
    """The server's first line of error text, with the password scrubbed should it appear."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if target.password:
        text = text.replace(target.password, "***")
    return text
