"""The dimension a sqlite-vec table was made with, read from its declaration (nothing is run).

The embedders table records each embedder's dimension; a file changed elsewhere can make the
two disagree, and sqlite-vec then fails every query with "Dimension mismatch" (issue 22: exit 70).
"""

from __future__ import annotations

import re
import sqlite3
from typing import Optional

_DIM = re.compile(r"\bembedding\s+float\[(\d+)\]", re.I)


def declared_dim(conn: sqlite3.Connection, table: str) -> Optional[int]:
    row = conn.execute("select sql from sqlite_schema where type = 'table' and name = ?", (table,)).fetchone()
    match = _DIM.search(row[0] or "") if row else None
    return int(match[1]) if match else None


def dim_disagreement(conn: sqlite3.Connection, table: str, run_id: int, recorded: int) -> Optional[str]:
    """A sentence when the embedder record and the vector table disagree, else None."""
    declared = declared_dim(conn, table)
    if declared is None or declared == recorded:
        return None
    return (f"the embedder record of run {run_id} says {recorded}-d, but its vector table {table} holds "
            f"{declared}-d vectors")
