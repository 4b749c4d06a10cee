"""Checks that an index file is whole: what a crash, a full disk or a second writer must never break."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tilescribe.plugin.core.errors import IndexFileError
from tilescribe.plugin.core.index.store import Store
from tilescribe.plugin.core.index.store_reads import RunInfo


def index_state(db: Path, variants: int) -> dict[str, tuple]:
    """{tile key: (status, caption ids, updated_at)} of the file's one run, after asserting it is whole.

    Whole means: `PRAGMA integrity_check` is ok; a done tile has exactly `variants`
    captions, each with one vector (its one copy, in vec0) and one FTS row; a tile that
    is not done has none; no vector or FTS row belongs to no caption. Opened read-only:
    the check writes nothing. {} when no run was committed yet.
    """
    if not db.exists() or db.stat().st_size == 0:
        return {}
    try:
        store = Store(db, readonly=True)
    except IndexFileError as exc:
        assert "older schema" in str(exc), exc  # killed before the schema was committed
        return {}
    with store:
        conn = store._conn
        assert conn.execute("pragma integrity_check").fetchall() == [("ok",)]
        runs = store.runs()
        if not runs:
            return {}
        assert len(runs) == 1, f"a resumed index must continue its run, not add one: {runs}"
        return _run_state(store, runs[0], variants)


def _run_state(store: Store, run: RunInfo, variants: int) -> dict[str, tuple]:
    conn = store._conn
    tiles = {row[0]: row[1:] for row in conn.execute(
        "select id, tile_key, status, updated_at from tiles where run_id = ?", (run.id,))}
    captions = {row[0]: row[1:] for row in conn.execute("select id, tile_id, variant from captions")}
    per_tile = Counter(tile_id for tile_id, _ in captions.values())
    vectors = dict(conn.execute(f"select caption_id, tile_id from {run.vector_table}").fetchall())
    fts = {row[0] for row in conn.execute("select rowid from caption_fts")}
    assert set(vectors) == set(captions), "vectors without captions, or captions without vectors"
    assert fts == set(captions), "FTS rows out of step with captions"
    assert all(vectors[cid] == tile_id for cid, (tile_id, _) in captions.items())
    (count,) = conn.execute("select vector_count from runs where id = ?", (run.id,)).fetchone()
    assert count == len(vectors), "the run's vector_count disagrees with its vectors"
    state = {}
    for tile_id, (key, status, stamp) in tiles.items():
        expected = variants if status == "done" else 0
        assert per_tile[tile_id] == expected, f"tile {key} ({status}) has {per_tile[tile_id]} captions"
        ids = tuple(sorted(cid for cid, (tid, _) in captions.items() if tid == tile_id))
        if ids:
            assert sorted(captions[cid][1] for cid in ids) == list(range(variants))
        state[key] = (status, ids, stamp)
    return state
