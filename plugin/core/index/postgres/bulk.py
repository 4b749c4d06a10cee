"""Bulk loads into a PostgreSQL index (`tilescribe copy`, bench-search): the HNSW graph built once at the end.

Inserting vectors one by one into an HNSW index walks the graph for each of them; pgvector's CREATE
INDEX builds it in memory, several times faster, when `maintenance_work_mem` holds the graph
(about 1.8 KB per 384-d vector). So a load into an empty vector table drops the index first and
builds it after. Until then searches of that embedder scan exactly (right, only slower); a load that
was stopped leaves the index missing, and the next copy (or `ensure`) builds it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional

from psycopg import sql

from . import schema
from .schema import create_vector_index, vector_index, vector_table

if TYPE_CHECKING:
    from .store import PgStore

# Below this many vectors the index is kept and filled as rows come: the difference is seconds.
BULK_MIN_VECTORS = 20_000
# pgvector builds in memory up to this, then goes on far slower on disk; a setting for this session only.
BUILD_MEMORY = "2GB"


def vectors_in(store: "PgStore", embedder_id: int) -> int:
    """Rows in an embedder's vector table (an estimate is not enough: 0 decides a drop)."""
    row = store._one(sql.SQL("select count(*) from (select 1 from {} limit 1) t").format(
        sql.Identifier(vector_table(embedder_id))))
    return row[0] if row else 0


def drop_vector_index(store: "PgStore", embedder_id: int) -> None:
    with store.atomic():
        schema.drop_vector_index(store._conn, embedder_id)


def has_vector_index(store: "PgStore", embedder_id: int) -> bool:
    row = store._one("select to_regclass(%s) is not null", (vector_index(embedder_id),))
    return bool(row and row[0])


def ensure_vector_index(store: "PgStore", embedder_id: int, memory: str = BUILD_MEMORY,
                        workers: Optional[int] = None) -> Optional[float]:
    """Build the embedder's HNSW index when it is missing; seconds taken, or None when it was there."""
    if has_vector_index(store, embedder_id):
        return None
    started = time.perf_counter()
    with store.atomic():
        store._conn.execute("select set_config('maintenance_work_mem', %s, true)", (memory,))
        if workers is not None:
            store._conn.execute("select set_config('max_parallel_maintenance_workers', %s, true)", (str(workers),))
        create_vector_index(store._conn, embedder_id)
    return time.perf_counter() - started


def sizes(store: "PgStore") -> dict[str, int]:
    """Bytes on disk of the index's schema: all of it, the vector tables and their HNSW indexes."""
    schema = store.target.schema
    row = store._one(
        "select coalesce(sum(pg_total_relation_size(c.oid)) filter (where c.relkind in ('r', 'm')), 0),"
        " coalesce(sum(pg_relation_size(c.oid)) filter (where c.relkind = 'r' and c.relname ~ '^caption_vec_'), 0),"
        " coalesce(sum(pg_relation_size(c.oid)) filter (where c.relkind = 'i' and c.relname ~ '_hnsw$'), 0)"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = %s", (schema,))
    total, vectors, hnsw = row or (0, 0, 0)
    return {"schema_bytes": int(total), "vector_table_bytes": int(vectors), "hnsw_bytes": int(hnsw)}
