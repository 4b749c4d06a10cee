"""The SQL of `tilescribe copy` (copying.py) that no Store method has: paged reads, run times, attempts.

The file and the PostgreSQL index share table and column names, so each statement is written once
with `?` marks and `{ids}` for a list parameter; `_sql` spells them for the backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, Sequence

_LIST = {"sqlite": "in (select value from json_each(?))", "postgres": "= any(?)"}


@dataclass(frozen=True)
class SourceTile:
    id: int
    key: str
    window: tuple[int, int, int, int]
    bbox: tuple[float, float, float, float]
    status: str
    reason: str
    raw: str
    pixel_hash: Optional[str]
    attempts: int


def _sql(store, statement: str) -> str:
    statement = statement.replace("{ids}", _LIST[store.backend])
    return statement if store.backend == "sqlite" else statement.replace("?", "%s")


def _list(store, values: Sequence) -> object:
    return json.dumps(list(values)) if store.backend == "sqlite" else list(values)


def _rows(store, statement: str, params: tuple) -> list[tuple]:
    if store.backend == "sqlite":
        return store._conn.execute(_sql(store, statement), params).fetchall()
    return store._rows(_sql(store, statement), params)


def _write(store, statement: str, params: tuple) -> None:
    """One write inside the caller's store.atomic()."""
    if store.backend == "sqlite":
        store._conn.execute(_sql(store, statement), params)
    else:
        with store._errors():
            store._conn.execute(_sql(store, statement), params)


def tile_page(store, run_id: int, after: int, limit: int) -> list[SourceTile]:
    """Up to `limit` tiles of the run with ids above `after`, by id, with everything a copy keeps."""
    rows = _rows(store, "select id, tile_key, col_off, row_off, width, height, minx, miny, maxx, maxy, status, reason,"
                        " raw, pixel_hash, attempts from tiles where run_id = ? and id > ? order by id limit ?",
                 (run_id, after, limit))
    return [SourceTile(r[0], r[1], (r[2], r[3], r[4], r[5]), (float(r[6]), float(r[7]), float(r[8]), float(r[9])),
                       r[10], r[11] or "", r[12] or "", r[13], r[14] or 0) for r in rows]


def captions_of(store, tile_ids: Sequence[int]) -> list[tuple]:
    """[(caption id, tile id, one_sentence, feature, caption)] of these tiles, by tile then variant."""
    return _rows(store, "select id, tile_id, one_sentence, feature, caption from captions where tile_id {ids}"
                        " order by tile_id, variant", (_list(store, [int(i) for i in tile_ids]),))


def tile_states(store, run_id: int, keys: Sequence[str]) -> dict[str, tuple[int, str]]:
    """tile key -> (id, status) of the run's tiles with these keys."""
    rows = _rows(store, "select tile_key, id, status from tiles where run_id = ? and tile_key {ids}",
                 (run_id, _list(store, keys)))
    return {row[0]: (row[1], row[2]) for row in rows}


def embedders(store) -> list[tuple[int, str, int]]:
    """[(id, name, dim)] of every embedder the index records."""
    return _rows(store, "select id, name, dim from embedders order by id", ())


def set_run_times(store, run_id: int, started_at: Optional[str], finished_at: Optional[str]) -> None:
    """A copied run keeps when it started and finished (None: left as it is)."""
    _write(store, "update runs set started_at = coalesce(?, started_at), finished_at = coalesce(?, finished_at)"
                  " where id = ?", (started_at, finished_at, run_id))


def set_attempts(store, tile_id: int, attempts: int) -> None:
    """A copied failed tile keeps how many times it was tried (retries are bounded by it)."""
    _write(store, "update tiles set attempts = ? where id = ? and attempts < ?", (attempts, tile_id, attempts))
