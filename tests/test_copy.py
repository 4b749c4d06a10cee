"""`tilescribe copy`: a file index into PostgreSQL and back, idempotent, resumable after SIGKILL.

Real parts: a real raster, the file Store, a throwaway PostgreSQL cluster with PostGIS and pgvector
(tests/fixtures_postgres.py: skipped, naming what is missing, where they are not installed), the real
all-MiniLM-L6-v2 for the search comparison.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import iter_tiles
from rasters import write_raster
from tilescribe.plugin.core.captions import CaptionVariant
from tilescribe.plugin.core.index.copying import copy_index
from tilescribe.plugin.core.index.opening import open_index
from tilescribe.plugin.core.index.store import Store, TileCaptions
from tilescribe.plugin.core.raster.tiling import TileGrid, open_raster, read_info
from tilescribe.plugin.core.search.search import SearchRequest, search

QUERIES = ("boats moored in a harbour", "a dense green forest", "a highway interchange", "a river with a bridge",
           "rows of houses along a street", "a sandy beach")
THINGS = ("a harbour with small boats", "a dense green forest", "a highway interchange with ramps",
          "a river crossed by a stone bridge", "rows of red-roofed houses", "a sandy beach with waves",
          "a football stadium", "square green farm fields", "a parking lot full of cars", "an airport runway")
PLACES = ("beside a lake", "next to a road", "on a hillside", "near the coast", "in a town centre", "among trees")


def build(db, raster, embedder, *, tile_size: int, captioned: int, variants: int = 2):
    """A file index of `raster`: the first `captioned` tiles captioned, then one failed, the rest pending."""
    with open_raster(raster) as ds:
        info = read_info(ds)
        tiles = list(iter_tiles(ds, info, TileGrid(info.width, info.height, tile_size)))
    with Store(db, create=True) as store:
        embedder_id = store.embedder_id(embedder.name, embedder.dim)
        from tilescribe.plugin.core.index.embedder_identity import embedder_probe

        store.set_embedder_probe(embedder_id, embedder_probe(embedder).tobytes())
        run_id = store.create_run(store.upsert_raster(info), embedder_id, {"backend": "test"}, "test", tile_size,
                                  0, variants)
        store.add_tiles(run_id, tiles)
        stored = store.tiles(run_id)
        entries = []
        for n, tile in enumerate(stored[:captioned]):
            texts = [f"{THINGS[(n + v) % len(THINGS)]} {PLACES[(n * 7 + v) % len(PLACES)]}, tile {n}"
                     for v in range(variants)]
            found = [CaptionVariant(t, THINGS[n % len(THINGS)], t) for t in texts]
            entries.append(TileCaptions(tile.id, found, embedder.embed([v.embedding_text() for v in found]),
                                        raw=f"answer {n}", pixel_hash=f"hash{n}"))
        store.save_captions_many(entries)
        store.mark_tile(stored[captioned].id, "failed", "engine timed out", "partial answer")
        store.finish_run(run_id)
    return run_id


def counts(db) -> dict:
    with open_index(db, readonly=True) as store:
        runs = store.runs()
        return {"runs": len(runs), "rasters": len(store.rasters()),
                **{f"{r.id}:{k}": v for r in runs for k, v in store.tile_counts(r.id).items()},
                "captions": sum(store.variant_count(r.id) for r in runs),
                "vectors": sum(store.vector_count(r.id) for r in runs)}


def hits(db, embedder, query: str):
    with open_index(db, readonly=True) as store:
        return search(store, embedder, SearchRequest(query, k=10, mode="exact"))


@pytest.fixture
def file_index(tmp_path, minilm):
    raster = write_raster(tmp_path / "ortho.tif", width=384, height=320)
    db = tmp_path / "laptop.tilescribe.sqlite"
    build(db, raster, minilm, tile_size=64, captioned=24, variants=3)
    return db


def test_file_to_postgres_and_back_gives_identical_search_results(file_index, pg_db, tmp_path, minilm, monkeypatch):
    from tilescribe.plugin.core.index.postgres import bulk

    monkeypatch.setattr(bulk, "BULK_MIN_VECTORS", 10)  # the bulk path: HNSW dropped, built once after the load
    back = tmp_path / "back.tilescribe.sqlite"
    with open_index(file_index, readonly=True) as src, open_index(pg_db, create=True) as dst:
        first = copy_index(src, dst, batch=7)
        assert bulk.has_vector_index(dst, dst.runs()[0].embedder_id)
    assert (first.runs_created, first.tiles_captioned, first.tiles_marked, first.captions) == (1, 24, 1, 72)
    assert first.index_build_s > 0
    with open_index(pg_db, readonly=True) as src, open_index(back, create=True) as dst:
        copy_index(src, dst)
    expected = counts(file_index)
    assert counts(pg_db) == expected == counts(back)
    for query in QUERIES:
        original, on_server, returned = (hits(db, minilm, query) for db in (file_index, pg_db, back))
        assert len(original) == 10
        for other in (on_server, returned):
            assert [(h.tile_id, h.caption) for h in other] == [(h.tile_id, h.caption) for h in original], query
            assert np.allclose([h.score for h in other], [h.score for h in original], atol=1e-6, rtol=0)
    with open_index(back, readonly=True) as store:  # states, reasons and answers came along
        run = store.runs()[0]
        failed = store.tiles(run.id, "failed")
        assert [(t.status, t.reason) for t in failed] == [("failed", "engine timed out")]
        assert run.finished_at and run.captioner == {"backend": "test"}
    with sqlite3.connect(back) as conn, sqlite3.connect(file_index) as old:
        query = "select tile_key, status, reason, raw, pixel_hash, attempts from tiles order by tile_key"
        assert conn.execute(query).fetchall() == old.execute(query).fetchall()


def test_a_second_copy_adds_nothing(file_index, pg_db):
    for direction in range(2):
        with open_index(file_index, readonly=True) as src, open_index(pg_db, create=True) as dst:
            report = copy_index(src, dst)
        assert report.wrote_anything is (direction == 0)
    assert report.unchanged == sum(v for k, v in counts(file_index).items() if ":" in k)
    assert counts(pg_db) == counts(file_index)


def test_a_copy_killed_midway_completes_when_run_again(tmp_path, pg_db, hashing_embedder):
    raster = write_raster(tmp_path / "big.tif", width=320, height=320)
    src = tmp_path / "many.tilescribe.sqlite"
    build(src, raster, hashing_embedder, tile_size=16, captioned=390)
    command = [sys.executable, "-m", "tilescribe.plugin.cli", "copy", str(src), pg_db, "--batch", "1"]
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stderr.readline()  # the first batch is committed
        assert "tiles" in line, line
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    partial = counts(pg_db)
    first_run = next(k for k in partial if k.endswith(":done"))
    assert 0 < partial[first_run] < 390  # stopped mid-way
    done = subprocess.run(command[:-2] + ["--format", "json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert counts(pg_db) == counts(src)
    with open_index(pg_db, readonly=True) as store:
        assert len(store.runs()) == 1  # the rerun found the run the killed copy made


def test_refuses_an_embedder_of_another_dimension_and_a_file_that_is_not_an_index(tmp_path, two_tile_index,
                                                                                  hashing_embedder):
    from fakes import HashingEmbedder
    from helpers import build_index

    other = tmp_path / "other.tilescribe.sqlite"
    raster = write_raster(tmp_path / "o.tif", width=64, height=64)
    build_index(other, raster, HashingEmbedder(dim=32), [["a road"]])[0].close()  # same name, 32-d
    with open_index(two_tile_index, readonly=True) as src, open_index(other, create=True) as dst:
        with pytest.raises(Exception, match="hashing-test as 32-d.*as 64-d.*different models"):
            copy_index(src, dst)
    not_an_index = tmp_path / "notes.txt"
    not_an_index.write_text("hello\n")
    done = subprocess.run([sys.executable, "-m", "tilescribe.plugin.cli", "copy", str(two_tile_index),
                           str(not_an_index)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "is not a TileScribe index" in done.stderr
    same = subprocess.run([sys.executable, "-m", "tilescribe.plugin.cli", "copy", str(two_tile_index),
                           str(two_tile_index)], capture_output=True, text=True, timeout=60)
    assert same.returncode == 2 and "same index" in same.stderr


def test_file_to_file_copy(tmp_path, two_tile_index):
    dst = tmp_path / "copy.tilescribe.sqlite"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tilescribe.plugin.cli", "copy", str(two_tile_index), str(dst),
                           "--format", "json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert counts(dst) == counts(two_tile_index), time.perf_counter() - started


def test_refuses_a_model_of_the_same_name_that_computes_other_vectors(tmp_path, hashing_embedder):
    from helpers import build_index

    rng = np.random.default_rng(0)
    made = []
    for name in ("a", "b"):
        store, _ = build_index(tmp_path / f"{name}.tilescribe.sqlite", write_raster(tmp_path / f"{name}.tif", width=64,
                                                                                    height=64), hashing_embedder,
                               [[f"a road {name}"]])
        probe = rng.standard_normal((3, hashing_embedder.dim)).astype(np.float32)
        store.set_embedder_probe(store.runs()[0].embedder_id,
                                 (probe / np.linalg.norm(probe, axis=1, keepdims=True)).tobytes())
        store.close()
        made.append(tmp_path / f"{name}.tilescribe.sqlite")
    with open_index(made[0], readonly=True) as src, open_index(made[1], create=True) as dst:
        with pytest.raises(Exception, match="computes other vectors.*different models"):
            copy_index(src, dst)


def test_publishing_into_a_team_index_leaves_a_claimed_tile_to_its_indexer(tmp_path, pg_db, hashing_embedder):
    """A laptop's later captions fill the team run's pending tiles, except one a live indexer holds."""
    raster = write_raster(tmp_path / "r.tif", width=256, height=128)
    laptop = tmp_path / "laptop.tilescribe.sqlite"
    build(laptop, raster, hashing_embedder, tile_size=64, captioned=3)  # 8 tiles: 3 done, 1 failed, 4 pending
    with open_index(laptop, readonly=True) as src, open_index(pg_db, create=True) as dst:
        copy_index(src, dst)
    with open_index(pg_db, create=True) as indexer:
        indexer.me = "gpu-box:4113"  # another machine's indexer
        run_id = indexer.runs()[0].id
        claimed = indexer.tiles_to_do(run_id, ["pending"], 0, 1, None)[0]
        with Store(laptop) as store:  # meanwhile the laptop captions two more tiles, the claimed one too
            mine = {t.window.key: t for t in store.tiles(store.runs()[0].id, "pending")}
            for key in (claimed.window.key, next(k for k in mine if k != claimed.window.key)):
                variant = [CaptionVariant.plain(f"a late caption of {key}")]
                store.save_captions(mine[key].id, variant, hashing_embedder.embed([variant[0].embedding_text()]))
        with open_index(laptop, readonly=True) as src, open_index(pg_db, create=True) as dst:
            report = copy_index(src, dst)
        assert (report.tiles_captioned, report.held_elsewhere, report.runs_created) == (1, [claimed.id], 0)
        assert indexer.tile(claimed.id).status == "pending"  # still the indexer's to caption
        assert indexer.tile_counts(run_id) == {"pending": 3, "done": 4, "skipped": 0, "failed": 1}


def test_postgres_to_postgres_another_schema(file_index, pg_db):
    other = pg_db + "&schema=ortho_copy"
    for src, dst in ((file_index, pg_db), (pg_db, other)):
        with open_index(src, readonly=True) as source, open_index(dst, create=True) as target:
            copy_index(source, target)
    assert counts(other) == counts(pg_db) == counts(file_index)


def test_a_rendered_raster_s_source_travels_with_the_copy(tmp_path, pg_db, hashing_embedder):
    """Where a web layer's GeoTIFF came from (rasters.source) is copied to PostgreSQL and back."""
    import dataclasses
    import json

    raster = write_raster(tmp_path / "rendered.tif", width=64, height=64)
    source = {"provider": "wms", "url": "http://127.0.0.1:1/{z}/{x}/{y}.png", "layer": "basemap"}
    db = tmp_path / "rendered.tilescribe.sqlite"
    build(db, raster, hashing_embedder, tile_size=32, captioned=2)
    with open_raster(raster) as ds:
        tagged = dataclasses.replace(read_info(ds), source=json.dumps(source))
    with Store(db) as store:
        store.upsert_raster(tagged)  # as a second indexing of the tagged GeoTIFF records it
    back = tmp_path / "back.tilescribe.sqlite"
    with Store(db, readonly=True) as src, open_index(pg_db, create=True) as dst:
        copy_index(src, dst)
        assert dst.rasters()[0]["source"] == source
    with open_index(pg_db, readonly=True) as src, Store(back, create=True) as dst:
        copy_index(src, dst)
        assert dst.rasters()[0]["source"] == source
