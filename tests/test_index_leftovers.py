"""What an index leaves beside itself after a clean end: the index file only (issue 20: a folder of
50 rasters got 200 files: -wal, -shm and .lock beside each index)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from fakes import FakeCaptioner
from rasters import write_raster

from tilescribe.plugin.core.index.locking import IndexerLock
from tilescribe.plugin.core.index.store import Store
from tilescribe.plugin.core.indexing.index_settings import IndexSettings
from tilescribe.plugin.core.indexing.indexer import index_raster


def _beside(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".tif"))


def test_a_clean_index_run_leaves_no_lock_file(tmp_path, hashing_embedder):
    raster = write_raster(tmp_path / "r.tif", width=128, height=64)
    db = tmp_path / "r.tilescribe.sqlite"
    with Store(db, create=True) as store:
        index_raster(store, FakeCaptioner(), hashing_embedder, str(raster), IndexSettings(tile_size=64))
        assert not Path(f"{db}.lock").exists()  # removed at the lock's clean release, not at close
    assert _beside(tmp_path) == ["r.tilescribe.sqlite"]


def test_a_lock_left_by_a_dead_indexer_stays_until_the_next_clean_run(tmp_path):
    db = tmp_path / "r.tilescribe.sqlite"
    lock = Path(f"{db}.lock")
    lock.write_text("12345")  # what a SIGKILLed indexer leaves
    IndexerLock(db).check_free()  # the quick check keeps the pid for the real run to find
    assert lock.read_text() == "12345"
    with IndexerLock(db) as held:
        assert held.previous_holder_died
    assert not lock.exists()
    with pytest.raises(RuntimeError):
        with IndexerLock(db):
            raise RuntimeError("an error inside the run")
    assert lock.read_text() == str(os.getpid())  # not a clean end: the next one checks the index


def test_a_second_indexer_waiting_on_a_removed_lock_takes_the_new_one(tmp_path):
    """The first holder removes the file on its clean release; a process that opened it before must not
    then hold a lock on a file nobody else sees (two indexers at once)."""
    db = tmp_path / "r.tilescribe.sqlite"
    first = IndexerLock(db).acquire()
    stale = open(f"{db}.lock", "a+")  # what a second indexer opened while the first held it
    first.release()
    assert not Path(f"{db}.lock").exists()
    second = IndexerLock(db).acquire()  # creates a new lock file at the path
    try:
        from tilescribe.plugin.core.index.locking import _still_at

        assert not _still_at(stale, Path(f"{db}.lock"))
        with pytest.raises(Exception, match="Another TileScribe indexer"):
            IndexerLock(db).acquire()
    finally:
        second.release()
        stale.close()


@pytest.mark.slow
def test_the_worker_leaves_no_wal_or_shm_after_indexing_searching_and_a_clean_stop(tmp_path):
    """Its read-only search connections stayed open until the process ended: the last close was a
    reader's, which cannot remove them, so -wal and -shm stayed beside the index for good."""
    from tilescribe.plugin.qgis.settings import PLUGIN_DIR
    from tilescribe.plugin.worker.client import WorkerClient

    raster = write_raster(tmp_path / "r.tif", width=64, height=64)
    db = str(tmp_path / "r.tilescribe.sqlite")
    client = WorkerClient(sys.executable, PLUGIN_DIR)
    try:
        client.request("index", db=db, raster=str(raster), captioner={"test_model": True}, tile_size=32,
                       variants=1)
        assert _beside(tmp_path) == ["r.tilescribe.sqlite"]  # the indexer's close: no .lock, no -wal
        hits = client.request("search", dbs=[db], query="a tile", k=2)
        assert len(hits) == 2
        assert "r.tilescribe.sqlite-wal" in _beside(tmp_path)  # open for the next query: SQLite's files
    finally:
        client.stop()
    assert _beside(tmp_path) == ["r.tilescribe.sqlite"]


def test_info_says_where_a_rendered_raster_came_from(tmp_path, monkeypatch, capsys, hashing_embedder):
    """A GeoTIFF the QGIS side rendered from a web layer carries its source; the index and `info` show it."""
    import rasterio
    from helpers import build_index, in_process_cli

    from tilescribe.plugin.core.provenance import SOURCE_TAG

    raster = write_raster(tmp_path / "basemap-1a2b.tif", width=128, height=64, crs="EPSG:3857")
    source = {"provider": "wms", "url": "http://127.0.0.1:8000/{z}/{x}/{y}.png", "layer": "basemap",
              "extent": [0.0, 0.0, 1280.0, 640.0], "crs": "EPSG:3857", "resolution": 10.0,
              "rendered_at": "2026-12-05T22:00:00+00:00"}
    with rasterio.open(raster, "r+") as dataset:
        dataset.update_tags(**{SOURCE_TAG: json.dumps(source)})
    db = tmp_path / "basemap-1a2b.tilescribe.sqlite"
    build_index(db, raster, hashing_embedder, [["a field"], ["a road"]])[0].close()
    cli = in_process_cli(monkeypatch, capsys, hashing_embedder)
    code, out, _ = cli("info", "--db", str(db))
    assert code == 0
    assert ("rendered from the 'wms' layer 'basemap' (http://127.0.0.1:8000/{z}/{x}/{y}.png): extent 0, 0, 1280, "
            "640 EPSG:3857, 10.0 map units per pixel, rendered 2026-12-05T22:00:00+00:00") in out, out
    code, out, _ = cli("info", "--db", str(db), "--format", "json")
    assert json.loads(out)["rasters"][0]["source"] == source
