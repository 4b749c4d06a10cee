"""The index file: schema and version checks, atomic writes, refusing files that are not indexes."""

from __future__ import annotations

import sqlite3

import pytest

from helpers import build_index
from tilescribe.plugin.core.captions import CaptionVariant
from tilescribe.plugin.core.errors import IndexFileError
from tilescribe.plugin.core.index.migrations import SCHEMA_VERSION
from tilescribe.plugin.core.index.store import APPLICATION_ID, Store


def test_new_index_is_versioned_marked_and_in_wal_mode(tmp_path):
    with Store(tmp_path / "a.tilescribe.sqlite", create=True) as store:
        conn = store._conn
        assert conn.execute("pragma user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("pragma application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    # Re-opening runs no migration again and keeps content.
    with Store(tmp_path / "a.tilescribe.sqlite") as store:
        assert store.runs() == []


def test_missing_index_is_not_created_silently(tmp_path):
    with pytest.raises(IndexFileError, match="not found"):
        Store(tmp_path / "nope.tilescribe.sqlite")
    assert not (tmp_path / "nope.tilescribe.sqlite").exists()


def test_newer_schema_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "new.tilescribe.sqlite"
    Store(path, create=True).close()
    conn = sqlite3.connect(path)
    conn.execute(f"pragma user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(IndexFileError, match="newer TileScribe"):
        Store(path)
    conn = sqlite3.connect(path)
    assert conn.execute("pragma user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_another_programs_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("create table customers (id integer, name text)")
    conn.commit()
    conn.close()
    with pytest.raises(IndexFileError, match="another program"):
        Store(path)
    assert sqlite3.connect(path).execute("select count(*) from customers").fetchone() == (0,)


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "notes.tilescribe.sqlite"
    path.write_text("these are my notes")
    with pytest.raises(IndexFileError, match="not an SQLite file"):
        Store(path)
    assert path.read_text() == "these are my notes"


def test_sqlite_vec_that_cannot_load_gives_a_clear_error(tmp_path, monkeypatch):
    import sqlite_vec

    def broken(conn):
        raise sqlite3.OperationalError("vec0.so: cannot open shared object file")

    monkeypatch.setattr(sqlite_vec, "load", broken)
    with pytest.raises(IndexFileError, match="Cannot load sqlite-vec.*make setup"):
        Store(tmp_path / "x.tilescribe.sqlite", create=True)


def test_a_tiles_captions_and_vectors_are_committed_together(tmp_path, rgb_raster, hashing_embedder):
    store, run_id = build_index(tmp_path / "i.tilescribe.sqlite", rgb_raster, hashing_embedder,
                                [["a farm"]], tile_size=128)
    tile = store.tiles(run_id, "pending")[0]
    variants = [CaptionVariant.plain("a lake"), CaptionVariant.plain("water")]
    with pytest.raises(ValueError):
        store.save_captions(tile.id, variants, hashing_embedder.embed(["only one vector"]))
    assert store.captions_of(tile.id) == []
    assert store.tile(tile.id).status == "pending"
    store.save_captions(tile.id, variants, hashing_embedder.embed(["a lake", "water"]))
    assert store.captions_of(tile.id) == variants
    assert store.vectors_of(tile.id).shape == (2, hashing_embedder.dim)
    assert store.tile(tile.id).status == "done"


def test_saving_a_tile_again_replaces_its_captions_without_orphans(tmp_path, rgb_raster, hashing_embedder):
    store, run_id = build_index(tmp_path / "i.tilescribe.sqlite", rgb_raster, hashing_embedder,
                                [["a farm", "fields"]], tile_size=128)
    tile = store.tiles(run_id, "done")[0]
    store.save_captions(tile.id, [CaptionVariant.plain("a lake")], hashing_embedder.embed(["a lake"]))
    assert store.variant_count(run_id) == 1 == store.vector_count(run_id)
    assert store._conn.execute("select count(*) from caption_fts").fetchone()[0] == 1


def test_an_error_inside_a_batch_rolls_back_the_whole_batch(tmp_path, rgb_raster, hashing_embedder):
    store, run_id = build_index(tmp_path / "i.tilescribe.sqlite", rgb_raster, hashing_embedder, [],
                                tile_size=128)
    first, second = store.tiles(run_id, "pending")[:2]
    vec = hashing_embedder.embed(["x"])
    with pytest.raises(RuntimeError):
        with store.atomic():
            store.save_captions(first.id, [CaptionVariant.plain("x")], vec)
            with store.atomic():
                store.save_captions(second.id, [CaptionVariant.plain("x")], vec)
            raise RuntimeError("power cut")
    assert store.tile_counts(run_id)["done"] == 0
    assert store.vector_count(run_id) == 0


def test_a_commit_that_fails_rolls_back_and_the_store_goes_on(tmp_path, rgb_raster, hashing_embedder):
    # A deferred foreign key is checked at COMMIT: the write fails there, not at the insert.
    store, run_id = build_index(tmp_path / "i.tilescribe.sqlite", rgb_raster, hashing_embedder, [["a farm"]],
                                tile_size=128)
    store._conn.execute("pragma foreign_keys = on")
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        with store.atomic():
            store._conn.execute("pragma defer_foreign_keys = on")
            store._conn.execute("insert into captions (tile_id, variant, one_sentence, feature, caption)"
                               " values (999999, 0, '', '', 'orphan')")
    assert not store._conn.in_transaction
    assert store._conn.execute("select count(*) from captions where tile_id = 999999").fetchone()[0] == 0
    pending = store.tiles(run_id, "pending")[0]
    store.save_captions(pending.id, [CaptionVariant.plain("x")], hashing_embedder.embed(["x"]))  # still usable
    assert store.tile_counts(run_id)["done"] == 2
    store.close()


def test_read_only_open_of_a_current_index(tmp_path, rgb_raster, hashing_embedder):
    path = tmp_path / "i.tilescribe.sqlite"
    store, run_id = build_index(path, rgb_raster, hashing_embedder, [["a farm"]], tile_size=128)
    store.close()
    with Store(path, readonly=True) as ro:
        assert ro.tile_counts(run_id)["done"] == 1
        with pytest.raises(sqlite3.OperationalError):
            ro._conn.execute("delete from tiles")
