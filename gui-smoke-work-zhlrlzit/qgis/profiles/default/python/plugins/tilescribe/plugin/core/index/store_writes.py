"""Writing tiles' caption variants with their vectors: every table kept in step, many tiles per call."""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..captions import CaptionVariant
from .store_reads import ids_param, vec_table


@dataclass(frozen=True)
class TileCaptions:
    """What one tile's captioning produced: its variants, one vector each, the model's raw answer,
    and the checksum of the pixels it saw (change detection; None keeps the stored one)."""

    tile_id: int
    variants: Sequence[CaptionVariant]
    vectors: np.ndarray
    raw: str = ""
    pixel_hash: Optional[str] = None


def write_captions(conn: sqlite3.Connection, entries: Sequence[TileCaptions], stamp: str) -> None:
    """Replace the captions of these tiles and mark them done; the caller holds the transaction.

    One executemany per table, with caption ids chosen here rather than read back
    row by row: bench-search writes a million vectors this way in about two minutes.
    """
    for entry in entries:
        if len(entry.variants) != len(entry.vectors) or not len(entry.variants):
            raise ValueError("one vector per caption variant is required")
    if len({entry.tile_id for entry in entries}) != len(entries):
        raise ValueError("each tile may appear once per write")
    tiles = _tiles_for_write(conn, [entry.tile_id for entry in entries])
    removed = _delete_captions(conn, list(tiles))
    next_id = conn.execute("select coalesce(max(id), 0) + 1 from captions").fetchone()[0]
    rows = _Rows(stamp)
    for entry in entries:
        next_id = rows.add(entry, tiles[entry.tile_id], next_id)
    rows.insert(conn)
    added = Counter()
    for entry in entries:
        added[tiles[entry.tile_id][0]] += len(entry.variants)
    _bump_runs(conn, added, removed)


class _Rows:
    """The rows of one write, gathered per table so each table gets one executemany."""

    def __init__(self, stamp: str):
        self.captions, self.fts, self.tiles = [], [], []
        self.vec: dict[int, list] = defaultdict(list)
        self.stamp = stamp

    def add(self, entry: TileCaptions, tile: tuple, next_id: int) -> int:
        run_id, embedder_id, bbox = tile
        vectors = np.ascontiguousarray(entry.vectors, dtype=np.float32)
        for number, (variant, vector) in enumerate(zip(entry.variants, vectors)):
            blob = vector.tobytes()
            self.captions.append((next_id, entry.tile_id, number, variant.one_sentence, variant.feature,
                                  variant.caption))
            self.vec[embedder_id].append((next_id, blob, run_id, *bbox, entry.tile_id))
            self.fts.append((next_id, variant.embedding_text()))
            next_id += 1
        self.tiles.append((entry.raw, self.stamp, entry.pixel_hash, entry.tile_id))
        return next_id

    def insert(self, conn: sqlite3.Connection) -> None:
        conn.executemany("insert into captions (id, tile_id, variant, one_sentence, feature, caption)"
                         " values (?,?,?,?,?,?)", self.captions)
        for embedder_id, rows in self.vec.items():
            conn.executemany(f"insert into {vec_table(embedder_id)} (caption_id, embedding, run_id,"
                             " minx, miny, maxx, maxy, tile_id) values (?,?,?,?,?,?,?,?)", rows)
        conn.executemany("insert into caption_fts (rowid, text) values (?, ?)", self.fts)
        conn.executemany("update tiles set status = 'done', reason = '', raw = ?, updated_at = ?,"
                         " pixel_hash = coalesce(?, pixel_hash) where id = ?", self.tiles)


def _tiles_for_write(conn: sqlite3.Connection, tile_ids: Sequence[int]) -> dict[int, tuple]:
    """tile id -> (run id, embedder id, bbox), refusing ids the index does not have."""
    rows = conn.execute(
        "select t.id, t.run_id, r.embedder_id, t.minx, t.miny, t.maxx, t.maxy from tiles t"
        " join runs r on r.id = t.run_id where t.id in (select value from json_each(?))",
        (ids_param(tile_ids),),
    ).fetchall()
    tiles = {row[0]: (row[1], row[2], tuple(row[3:7])) for row in rows}
    missing = [tile_id for tile_id in tile_ids if tile_id not in tiles]
    if missing:
        raise ValueError(f"unknown tile ids: {missing[:5]}")
    return tiles


def _delete_captions(conn: sqlite3.Connection, tile_ids: Sequence[int]) -> Counter:
    """Delete the tiles' captions everywhere; returns how many went per run."""
    rows = conn.execute(
        "select c.id, t.run_id, r.embedder_id from captions c join tiles t on t.id = c.tile_id"
        " join runs r on r.id = t.run_id where c.tile_id in (select value from json_each(?))",
        (ids_param(tile_ids),),
    ).fetchall()
    by_embedder = defaultdict(list)
    for caption_id, _, embedder_id in rows:
        by_embedder[embedder_id].append((caption_id,))
    for embedder_id, ids in by_embedder.items():
        conn.executemany(f"delete from {vec_table(embedder_id)} where caption_id = ?", ids)
        conn.executemany("delete from caption_fts where rowid = ?", ids)
        conn.executemany("delete from captions where id = ?", ids)
    return Counter(run_id for _, run_id, _ in rows)


def _bump_runs(conn: sqlite3.Connection, added: Counter, removed: Counter) -> None:
    # The version changes on every write, so an in-memory index notices replaced vectors too.
    conn.executemany(
        "update runs set vector_count = vector_count + ?, vector_version = vector_version + 1 where id = ?",
        [(added[run_id] - removed[run_id], run_id) for run_id in set(added) | set(removed)],
    )


def set_embedder_probe(conn: sqlite3.Connection, embedder_id: int, probe: bytes) -> None:
    conn.execute("update embedders set probe = ? where id = ?", (probe, embedder_id))


def set_pixel_hashes(conn: sqlite3.Connection, rows: Sequence[tuple[str, int]]) -> None:
    """[(pixel hash, tile id)]: the checksums change detection compares on the next run."""
    conn.executemany("update tiles set pixel_hash = ? where id = ?", rows)


def set_run_raster_state(conn: sqlite3.Connection, run_id: int, state: str) -> None:
    conn.execute("update runs set raster_state = ? where id = ?", (state, run_id))


def requeue_tiles(conn: sqlite3.Connection, tile_ids: Sequence[int]) -> None:
    """Back to pending (their pixels changed); their captions stay searchable until replaced."""
    conn.executemany("update tiles set status = 'pending', reason = '' where id = ?", [(t,) for t in tile_ids])
