"""Bulk caption writes: every table in step, run bookkeeping that tells a cached index it is stale."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import build_index
from tilescribe.plugin.core.captions import CaptionVariant
from tilescribe.plugin.core.index.store_writes import TileCaptions


def table_counts(store) -> tuple:
    return tuple(store._conn.execute(f"select count(*) from {table}").fetchone()[0]
                 for table in ("captions", "caption_vec_1", "caption_fts"))


def test_many_tiles_in_one_write_fill_every_table(tmp_path, rgb_raster, hashing_embedder):
    store, run_id = build_index(tmp_path / "b.tilescribe.sqlite", rgb_raster, hashing_embedder, [], tile_size=100)
    tiles = store.tiles(run_id)
    entries = [TileCaptions(t.id, [CaptionVariant.plain(f"tile {t.id} v{v}") for v in range(3)],
                            hashing_embedder.embed([f"tile {t.id} v{v}" for v in range(3)]), raw="{}")
               for t in tiles]
    store.save_captions_many(entries)
    assert table_counts(store) == (18, 18, 18)
    assert store.tile_counts(run_id)["done"] == 6
    assert store.vector_state(run_id) == (18, 1)
    np.testing.assert_array_equal(store.vectors_of(tiles[4].id), entries[4].vectors)
    assert store.captions_of(tiles[4].id) == list(entries[4].variants)
    store.close()


def test_rewriting_a_tile_counts_and_versions_the_run(tmp_path, rgb_raster, hashing_embedder):
    store, run_id = build_index(tmp_path / "b.tilescribe.sqlite", rgb_raster, hashing_embedder,
                                [["a", "b"], ["c"]], tile_size=100)
    count, version = store.vector_state(run_id)
    assert count == 3
    first = store.tiles(run_id, "done")[0]
    store.save_captions(first.id, [CaptionVariant.plain("z")], hashing_embedder.embed(["z"]))
    assert store.vector_state(run_id) == (2, version + 1)
    assert table_counts(store) == (2, 2, 2)
    store.close()


def test_a_bad_entry_writes_nothing(tmp_path, rgb_raster, hashing_embedder):
    store, run_id = build_index(tmp_path / "b.tilescribe.sqlite", rgb_raster, hashing_embedder, [], tile_size=100)
    good, other = store.tiles(run_id)[:2]
    entries = [TileCaptions(good.id, [CaptionVariant.plain("x")], hashing_embedder.embed(["x"])),
               TileCaptions(999_999, [CaptionVariant.plain("y")], hashing_embedder.embed(["y"]))]
    with pytest.raises(ValueError, match="unknown tile"):
        store.save_captions_many(entries)
    with pytest.raises(ValueError, match="once per write"):
        store.save_captions_many([entries[0], entries[0]])
    assert table_counts(store) == (0, 0, 0)
    assert store.vector_state(run_id) == (0, 0)
    store.close()
