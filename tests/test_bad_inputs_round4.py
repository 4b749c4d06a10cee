"""Issue 22, the adversarial round on this turn's surfaces: project-wide search, the worker's `dbs`,
the protocol's fields, the fast path; each input here ended wrong before (a bug, a hang, a silent answer)."""

from __future__ import annotations

import json
import os

import pytest
from rasterio.transform import from_origin

from helpers import build_index, in_process_cli
from rasters import write_raster

LOCAL_CRS = 'LOCAL_CS["arbitrary",UNIT["metre",1]]'  # an engineering CRS: no transform to or from EPSG:4326


@pytest.fixture
def cli(monkeypatch, capsys, hashing_embedder):
    return in_process_cli(monkeypatch, capsys, hashing_embedder)


def _index(folder, name, embedder, crs="EPSG:32618", transform=None, seed=0):
    raster = write_raster(folder / f"{name}.tif", width=128, height=64, crs=crs,
                          transform=transform or from_origin(500000.0, 4200000.0, 10.0, 10.0), seed=seed)
    db = folder / f"{name}.tilescribe.sqlite"
    store, _ = build_index(db, raster, embedder, [["boats in a harbour"], ["a forest"]])
    store.close()
    return db


def test_a_hard_link_to_an_index_is_searched_once(tmp_path, cli, hashing_embedder):
    db = _index(tmp_path, "a", hashing_embedder)
    other = tmp_path / "elsewhere"
    other.mkdir()
    os.link(db, other / "same.tilescribe.sqlite")
    code, out, err = cli("search", "--db", db, other / "same.tilescribe.sqlite", "boats", "--format", "json")
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 2 and len({json.dumps(h.get("bbox")) for h in hits}) == 2, hits
    assert "searched 1 run(s) in 1 index file(s)" in err


def test_an_extent_crs_with_no_transform_to_a_rasters_crs_leaves_that_raster_out(tmp_path, cli, hashing_embedder):
    _index(tmp_path, "utm", hashing_embedder)
    local = _index(tmp_path, "local", hashing_embedder, crs=LOCAL_CRS, transform=from_origin(0, 1000, 1, 1), seed=1)
    code, out, err = cli("search", "--db", tmp_path, "boats", "--extent", "-80", "30", "-70", "40",
                         "--extent-crs", "EPSG:4326")
    assert code == 0 and "internal error" not in err, err
    assert f"note: {local} (run 1): no transform from EPSG:4326 to its raster's CRS" in err, err


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_device_or_named_pipe_among_the_indexes_is_named_as_such_without_hanging(tmp_path, cli, hashing_embedder,
                                                                                     kind):
    db = _index(tmp_path, "a", hashing_embedder)
    odd = "/dev/zero" if kind == "device" else tmp_path / "pipe.tilescribe.sqlite"
    if kind == "fifo":
        os.mkfifo(odd)
    code, out, err = cli("search", "--db", db, odd, "boats")
    assert code == 2, err
    assert f"{odd} is not a regular file (a device or a named pipe)" in err and "does not exist" not in err, err


@pytest.mark.parametrize("dbs, message", [
    ([""], "field 'dbs' must be a non-empty list of absolute index file paths or PostgreSQL indexes"),
    (["relative.tilescribe.sqlite"],
     "field 'dbs' must be a non-empty list of absolute index file paths or PostgreSQL indexes"),
    (["/x.tilescribe.sqlite"] * 10_001, "at most 10000"),
])
def test_worker_dbs_that_are_empty_relative_or_too_many_are_refused(dbs, message):
    from tilescribe.plugin.worker.server import Worker

    class Out(list):
        def write(self, text):
            self.append(text)

        def flush(self):
            pass

    out = Out()
    Worker(out).serve(iter([json.dumps({"id": 1, "cmd": "search", "query": "boats", "dbs": dbs})]))
    reply = json.loads("".join(out).splitlines()[-1])
    assert reply["ok"] is False and reply["error"]["type"] == "ProtocolError", reply
    assert message in reply["error"]["message"], reply


def test_an_unknown_search_mode_is_refused_by_project_search_too(tmp_path, hashing_embedder):
    from tilescribe.plugin.core.errors import QueryError
    from tilescribe.plugin.core.search.project import MemoryRuns, search_project
    from tilescribe.plugin.core.search.search import SearchRequest

    db = _index(tmp_path, "a", hashing_embedder)
    with pytest.raises(QueryError, match="Search mode 'bogus' is unknown"):
        search_project([db], hashing_embedder, SearchRequest("boats", mode="bogus"), memory=MemoryRuns())


def test_the_worker_protocol_names_the_modes_a_search_takes():
    from tilescribe.plugin.worker.protocol import FIELDS

    assert FIELDS["search"]["mode"][1]("bogus") == "one of auto, exact, fast"
    assert FIELDS["search"]["mode"][1]("fast") is None


def test_a_damaged_index_inside_a_folder_is_left_out_by_name_an_explicit_one_refused(tmp_path, cli, hashing_embedder):
    db = _index(tmp_path, "a", hashing_embedder)
    damaged = tmp_path / "b.tilescribe.sqlite"
    damaged.write_bytes(os.urandom(5000))
    code, out, err = cli("search", "--db", tmp_path, "boats")
    assert code == 0, err
    assert f"note: {damaged}: left out: {damaged} is not a TileScribe index" in err, err
    assert "searched 1 run(s) in 2 index file(s)" in err
    code, out, err = cli("search", "--db", db, damaged, "boats")
    assert code == 2 and f"{damaged} is not a TileScribe index" in err, err


@pytest.mark.parametrize("path", ["memory", "fast"])
def test_nan_vectors_are_named_on_the_fast_path_too(tmp_path, hashing_embedder, path):
    import sqlite3

    import numpy as np
    import sqlite_vec

    from tilescribe.plugin.core.errors import IndexFileError
    from tilescribe.plugin.core.index.store import Store
    from tilescribe.plugin.core.search.fast_cache import FastIndexCache
    from tilescribe.plugin.core.search.project import MemoryRuns, search_project
    from tilescribe.plugin.core.search.search import SearchRequest, search

    db = _index(tmp_path, "a", hashing_embedder)
    conn = sqlite3.connect(db)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    with conn:
        conn.execute("update caption_vec_1 set embedding = ? where caption_id = 1",
                     (np.full(hashing_embedder.dim, np.nan, dtype=np.float32).tobytes(),))
    conn.close()
    with pytest.raises(IndexFileError, match=f"Index {db} holds vectors that are not numbers"):
        if path == "memory":
            search_project([db], hashing_embedder, SearchRequest("boats"), memory=MemoryRuns())
        else:
            with Store(db, readonly=True) as store:
                search(store, hashing_embedder, SearchRequest("boats", mode="fast"), FastIndexCache())


def test_models_list_names_a_folder_whose_manifest_is_damaged(tmp_path, cli):
    folder = tmp_path / "models" / "a--b"
    folder.mkdir(parents=True)
    (folder / "tilescribe-model.json").write_text("{not json")
    code, out, err = cli("models", "list", "--dir", tmp_path / "models")
    assert code == 0 and "internal error" not in err, err
    assert f"note: {folder} skipped: The model manifest {folder / 'tilescribe-model.json'} is damaged" in err, err
    assert "models verify" in err
