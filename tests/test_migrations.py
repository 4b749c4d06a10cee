"""Migration 2: a schema-1 index upgrades in place, keeps its vectors, and searches the same."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from tilescribe.plugin.core.errors import IndexFileError
from tilescribe.plugin.core.index.migrations import MIGRATIONS
from tilescribe.plugin.core.search.search import SearchRequest, search_vector
from tilescribe.plugin.core.index.store import APPLICATION_ID, Store, load_vec

# The vector table as schema 1 created it (Store.embedder_id at that version).
SCHEMA1_VEC = ("create virtual table caption_vec_1 using vec0(caption_id integer primary key,"
               " embedding float[8] distance_metric=cosine, run_id integer, minx float, miny float,"
               " maxx float, maxy float, +tile_id integer)")


def write_schema1_index(path) -> np.ndarray:
    """A schema-1 file with 3 tiles x 2 captions, written with schema 1's own SQL; returns the vectors."""
    vectors = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    conn = sqlite3.connect(path, isolation_level=None)
    load_vec(conn, path)
    conn.execute("begin")
    MIGRATIONS[0](conn)
    conn.execute(SCHEMA1_VEC)
    conn.execute("insert into rasters values (1, 'r.tif', 'f', 300, 100, 3, 'uint8', '', 'pixel coordinates',"
                 " '[0, 1, 0, 0, 0, -1]', 'now')")
    conn.execute("insert into embedders values (1, 'hashing-test', 8)")
    conn.execute("insert into runs (id, raster_id, embedder_id, captioner, prompt_version, tile_size, overlap,"
                 " variants, started_at) values (1, 1, 1, '{}', 'v1', 100, 0, 2, 'now')")
    for tile in range(3):
        conn.execute("insert into tiles (id, run_id, tile_key, col_off, row_off, width, height, minx, miny,"
                     " maxx, maxy, status) values (?, 1, ?, ?, 0, 100, 100, ?, -100, ?, 0, 'done')",
                     (tile + 1, f"{tile * 100}_0_100x100", tile * 100, tile * 100.0, tile * 100.0 + 100))
        for variant in range(2):
            caption_id = tile * 2 + variant + 1
            conn.execute("insert into captions values (?, ?, ?, '', '', ?)",
                         (caption_id, tile + 1, variant, f"caption {caption_id}"))
            conn.execute("insert into caption_vec_1 values (?, ?, 1, ?, -100.0, ?, 0.0, ?)",
                         (caption_id, vectors[caption_id - 1].tobytes(), tile * 100.0, tile * 100.0 + 100, tile + 1))
    conn.execute(f"pragma application_id = {APPLICATION_ID}")
    conn.execute("pragma user_version = 1")
    conn.execute("commit")
    conn.close()
    return vectors


def test_a_schema1_index_upgrades_keeping_its_vectors(tmp_path):
    path = tmp_path / "old.tilescribe.sqlite"
    vectors = write_schema1_index(path)
    with Store(path) as store:
        assert store._conn.execute("pragma user_version").fetchone()[0] == len(MIGRATIONS)
        assert store.vector_state(1)[0] == 6
        np.testing.assert_array_equal(store.vectors_of(2), vectors[2:4])
        query = vectors[4]
        exact = search_vector(store, query, SearchRequest("q", k=3, mode="exact"), store.run_info(1))
        fast = search_vector(store, query, SearchRequest("q", k=3, mode="fast"), store.run_info(1))
        assert [h.tile_db_id for h in exact] == [h.tile_db_id for h in fast]
        assert exact[0].tile_db_id == 3 and exact[0].score == pytest.approx(1.0, abs=1e-6)


def test_an_old_index_opened_read_only_asks_for_one_writable_open(tmp_path):
    path = tmp_path / "old.tilescribe.sqlite"
    write_schema1_index(path)
    with pytest.raises(IndexFileError, match="older schema"):
        Store(path, readonly=True)
    Store(path).close()
    with Store(path, readonly=True) as store:
        assert store.vector_state(1) == (6, 0)


def test_the_plain_vector_copy_goes_and_nothing_is_lost(tmp_path):
    """Migration 5: a file with both copies (schemas 2-4) keeps only vec0's, with every vector."""
    path = tmp_path / "old.tilescribe.sqlite"
    vectors = write_schema1_index(path)
    conn = sqlite3.connect(path, isolation_level=None)
    load_vec(conn, path)
    conn.execute("begin")
    for migration in MIGRATIONS[1:3]:  # schema 3: the plain table filled from vec0
        migration(conn)
    conn.execute("pragma user_version = 3")
    conn.execute("commit")
    assert conn.execute("select count(*) from caption_embeddings").fetchone()[0] == 6
    conn.close()
    with Store(path) as store:
        tables = {row[0] for row in store._conn.execute("select name from sqlite_schema")}
        assert "caption_embeddings" not in tables
        np.testing.assert_array_equal(np.vstack([store.vectors_of(t) for t in (1, 2, 3)]), vectors)


def test_word_fusion_on_a_schema1_file_gives_a_ranked_list(tmp_path):
    """Issue 14 review: every schema has caption_fts (migration 1); a schema-1 file whose word
    table holds nothing (as this one's) fuses nothing and ranks as dense search does."""
    from fakes import HashingEmbedder
    from tilescribe.plugin.core.search.search import search

    path = tmp_path / "old.tilescribe.sqlite"
    write_schema1_index(path)
    with Store(path) as store:
        dense, fused = (search(store, HashingEmbedder(dim=8), SearchRequest("caption 3", k=3, lexical=lexical))
                        for lexical in (False, True))
        assert [h.tile_db_id for h in fused] == [h.tile_db_id for h in dense] and len(dense) == 3


def _schema5(path) -> None:
    write_schema1_index(path)
    conn = sqlite3.connect(path, isolation_level=None)
    load_vec(conn, path)
    conn.execute("begin")
    for migration in MIGRATIONS[1:5]:
        migration(conn)
    conn.execute("pragma user_version = 5")
    conn.execute("commit")
    conn.close()


def test_a_schema5_index_is_read_read_only_without_its_source_column(tmp_path):
    """Migration 6 only adds rasters.source: a file made before it is searched as it is (read-only),
    its rasters read as plain files; opened writable it gains the column."""
    path = tmp_path / "five.tilescribe.sqlite"
    _schema5(path)
    with Store(path, readonly=True) as store:
        assert store.rasters()[0]["source"] is None and store.vector_state(1) == (6, 0)
    with Store(path) as store:
        assert store._conn.execute("pragma user_version").fetchone()[0] == len(MIGRATIONS) == 6
        assert store.rasters()[0]["source"] is None


def test_a_rendered_geotiff_s_source_is_recorded_with_its_raster(tmp_path):
    """The QGIS side tags a rendered web layer's GeoTIFF (TILESCRIBE_SOURCE); the index copies it."""
    import json

    import rasterio
    from rasterio.transform import from_origin
    from tilescribe.plugin.core.provenance import SOURCE_TAG
    from tilescribe.plugin.core.raster.tiling import open_raster, read_info

    source = {"provider": "wms", "url": "http://127.0.0.1:1/{z}/{x}/{y}.png", "layer": "basemap",
              "extent": [0.0, 0.0, 64.0, 64.0], "crs": "EPSG:3857", "resolution": 1.0,
              "rendered_at": "2026-12-05T22:00:00Z"}
    raster = tmp_path / "rendered.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                       crs="EPSG:3857", transform=from_origin(0, 64, 1, 1)) as ds:
        ds.write(np.full((3, 64, 64), 90, dtype="uint8"))
        ds.update_tags(**{SOURCE_TAG: json.dumps(source)})
    with open_raster(str(raster)) as dataset:
        info = read_info(dataset)
    assert json.loads(info.source) == source
    with Store(tmp_path / "x.tilescribe.sqlite", create=True) as store:
        raster_id = store.upsert_raster(info)
        assert store.raster_info(raster_id)["source"] == source
        plain = read_info_of(tmp_path / "plain.tif")
        assert store.raster_info(store.upsert_raster(plain))["source"] is None


def read_info_of(path):
    import rasterio
    from rasterio.transform import from_origin
    from tilescribe.plugin.core.raster.tiling import open_raster, read_info

    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8", crs="EPSG:3857",
                       transform=from_origin(0, 8, 1, 1)) as ds:
        ds.write(np.zeros((1, 8, 8), dtype="uint8"))
    with open_raster(str(path)) as dataset:
        return read_info(dataset)
