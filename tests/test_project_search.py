"""One query over many indexes (issue 20, item 1): real small indexes in different CRSs, the real embedder."""

from __future__ import annotations

import json

import pytest
from rasterio.transform import from_origin

from fakes import HashingEmbedder
from helpers import build_index, in_process_cli
from rasters import write_raster
from tilescribe.plugin.core.errors import QueryError
from tilescribe.plugin.core.search.fast_cache import FastIndexCache
from tilescribe.plugin.core.search.project import StorePool, index_files, search_project
from tilescribe.plugin.core.search.search import SearchRequest

# Three rasters of 128 x 128 px in three CRSs, 64 px tiles: 4 tiles each, row by row.
RASTERS = {
    "harbour": ("EPSG:32618", from_origin(500000.0, 4200000.0, 10.0, 10.0), [
        ["a harbour with boats moored at a pier"], ["open sea water"],
        ["a container port with cranes"], ["waves on the open sea"]]),
    "forest": ("EPSG:4326", from_origin(10.0, 50.0, 0.001, 0.001), [
        ["dense green forest of tall trees"], ["a river winding through a forest"],
        ["a forest clearing with grass"], ["pine trees on a hill"]]),
    "airport": ("EPSG:3857", from_origin(1000000.0, 6000000.0, 2.0, 2.0), [
        ["a parking lot full of cars"], ["an airport runway with airplanes"],
        ["a terminal building at an airport"], ["cars on a highway"]]),
}


def tile_box(transform, col: int, row: int, size: int = 64):
    x0, y0, res = transform.c, transform.f, transform.a
    return (x0 + col * size * res, y0 - (row + 1) * size * res, x0 + (col + 1) * size * res, y0 - row * size * res)


@pytest.fixture(scope="module")
def project(tmp_path_factory, minilm):
    folder = tmp_path_factory.mktemp("project")
    for n, (name, (crs, transform, captions)) in enumerate(RASTERS.items()):
        raster = write_raster(folder / f"{name}.tif", width=128, height=128, crs=crs, transform=transform, seed=n)
        store, _ = build_index(folder / f"{name}.tilescribe.sqlite", raster, minilm, captions)
        store.close()
    return folder


@pytest.mark.parametrize("query, name, col, row", [
    ("boats in a harbour", "harbour", 0, 0),
    ("a river in the forest", "forest", 1, 0),
    ("airplanes on a runway", "airport", 1, 0),
    ("an airport terminal", "airport", 0, 1),
])
def test_merged_top_hit_comes_from_the_right_file_with_its_exact_box(project, minilm, query, name, col, row):
    files = sorted(project.glob("*.tilescribe.sqlite"))
    result = search_project(files, minilm, SearchRequest(query, k=5))
    top = result.hits[0]
    crs, transform, _ = RASTERS[name]
    assert top.index == str(project / f"{name}.tilescribe.sqlite")
    assert top.raster_path.endswith(f"{name}.tif") and top.crs == crs
    assert top.bbox == pytest.approx(tile_box(transform, col, row))
    assert [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    assert len({h.index for h in result.hits}) >= 2  # one ranking, not one file's list
    assert len(result.searched) == 3


def test_the_merged_ranking_is_the_union_of_the_single_searches(project, minilm):
    from tilescribe.plugin.core.index.store import Store
    from tilescribe.plugin.core.search.search import search

    scores = []
    for path in index_files([project]):
        with Store(path, readonly=True) as store:
            scores += [h.score for h in search(store, minilm, SearchRequest("trees", k=12))]
    merged = search_project([project], minilm, SearchRequest("trees", k=12)).hits
    assert [h.score for h in merged] == pytest.approx(sorted(scores, reverse=True))


def test_an_extent_in_another_crs_is_transformed_to_each_rasters_crs(project, minilm):
    # The forest raster's top-left tile, in WGS 84: only that tile meets it (the others are far away).
    forest = tile_box(RASTERS["forest"][1], 0, 0)
    inner = (forest[0] + 0.001, forest[1] + 0.001, forest[2] - 0.001, forest[3] - 0.001)
    result = search_project([project], minilm, SearchRequest("boats", k=10, extent=inner), extent_crs="EPSG:4326")
    assert [(h.index.endswith("forest.tilescribe.sqlite"), h.bbox) for h in result.hits] == [
        (True, pytest.approx(forest))]


def test_an_index_of_another_embedder_is_refused_by_name_or_left_out(project, minilm, tmp_path):
    other = write_raster(tmp_path / "other.tif", width=128, height=128)
    build_index(tmp_path / "other.tilescribe.sqlite", other, HashingEmbedder(), [["boats"]] * 4)[0].close()
    paths = [project, tmp_path / "other.tilescribe.sqlite"]
    with pytest.raises(QueryError, match=r"another embedding model.*other\.tilescribe\.sqlite.*hashing-test"):
        search_project(paths, minilm, SearchRequest("boats", k=5))
    result = search_project(paths, minilm, SearchRequest("boats", k=5), other_embedders="skip")
    assert all("other" not in h.index for h in result.hits)
    assert any("other.tilescribe.sqlite" in line for line in result.skipped)


def test_paths_that_are_not_indexes_are_refused(tmp_path):
    with pytest.raises(QueryError, match="does not exist"):
        index_files([tmp_path / "missing.tilescribe.sqlite"])
    with pytest.raises(QueryError, match="is a folder; give an index file, or a folder holding some"):
        index_files([tmp_path])


def test_store_pool_keeps_a_bounded_number_of_files_open(project, minilm):
    pool = StorePool(max_open=2)
    cache = FastIndexCache(max_runs=8, max_bytes=10_000_000)
    for _ in range(2):
        hits = search_project([project], minilm, SearchRequest("a forest", k=3), pool=pool, fast_cache=cache).hits
        assert hits[0].index.endswith("forest.tilescribe.sqlite")
        assert len(pool) == 2
    pool.close()


def test_cli_searches_several_indexes_and_a_folder(project, minilm, monkeypatch, capsys):
    run = in_process_cli(monkeypatch, capsys, minilm)
    files = [str(p) for p in sorted(project.glob("*.tilescribe.sqlite"))]
    code, out, err = run("search", "--db", *files, "--format", "json", "-k", "3", "airplanes on a runway")
    assert code == 0, err
    hits = json.loads(out)
    assert hits[0]["index"].endswith("airport.tilescribe.sqlite") and hits[0]["raster"].endswith("airport.tif")
    assert hits[0]["bbox"] == pytest.approx(list(tile_box(RASTERS["airport"][1], 1, 0)))
    assert "searched 3 run(s) in 3 index file(s)" in err
    code, out_folder, _ = run("search", "--db", str(project), "--format", "json", "-k", "3", "airplanes on a runway")
    assert code == 0 and json.loads(out_folder) == hits
    code, text, _ = run("search", "--db", str(project), "-k", "2", "boats")
    assert code == 0 and "[harbour.tif]" in text.splitlines()[0]
    code, out, _ = run("search", "--db", str(project), "--format", "geojson", "-k", "6", "water")
    assert code == 0 and "crs" not in json.loads(out) and len(json.loads(out)["features"]) == 6
    # One file: the output of before, without an "index" field.
    code, out, _ = run("search", "--db", files[0], "--format", "json", "-k", "1", "airplanes")
    assert code == 0 and "index" not in json.loads(out)[0]
    code, _, err = run("search", "--db", str(project), "--run", "1", "boats")
    assert code == 2 and "--run picks a run of one index file" in err


def test_the_worker_searches_several_indexes_and_keeps_them_open(project, minilm):
    import io

    from tilescribe.plugin.worker.server import Worker

    out = io.StringIO()
    worker = Worker(out)
    worker._embedders[None] = minilm
    files = [str(p) for p in sorted(project.glob("*.tilescribe.sqlite"))]
    worker.dispatch({"id": 1, "cmd": "search", "dbs": files, "query": "a container port with cranes", "k": 4})
    worker.dispatch({"id": 2, "cmd": "search", "dbs": [str(project)], "query": "a forest clearing", "k": 2,
                     "extent": [9.0, 49.0, 11.0, 51.0], "extent_crs": "EPSG:4326"})
    worker.dispatch({"id": 3, "cmd": "search", "query": "boats"})
    worker.dispatch({"id": 4, "cmd": "search", "dbs": files, "db": files[0], "query": "boats"})
    worker.dispatch({"id": 5, "cmd": "search", "dbs": [], "query": "boats"})
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    first = replies[0]["result"]
    assert first[0]["index"] == files[2] and first[0]["raster"].endswith("harbour.tif")
    assert first[0]["bbox"] == pytest.approx(list(tile_box(RASTERS["harbour"][1], 0, 1)))
    assert {"tile_db_id", "rank", "score", "caption", "crs"} <= set(first[0])
    assert [h["index"] for h in replies[1]["result"]] == [files[1]] * 2  # only the forest lies in the box
    assert [r["error"]["type"] for r in replies[2:]] == ["ProtocolError"] * 3
    assert "'db'" in replies[2]["error"]["message"] and "not both" in replies[3]["error"]["message"]
    assert len(worker.stores()) == 3  # kept open for the next query


def test_in_memory_runs_rank_exactly_as_the_file_does(project, minilm):
    from tilescribe.plugin.core.search.project import MemoryRuns

    memory = MemoryRuns()
    for query, extent in (("trees", None), ("a port", None), ("cars", (1000000.0, 5999872.0, 1000120.0, 6000000.0))):
        plain = search_project([project], minilm, SearchRequest(query, k=7, extent=extent, mode="exact")).hits
        fast = search_project([project], minilm, SearchRequest(query, k=7, extent=extent), memory=memory).hits
        assert [(h.index, h.tile_id, h.caption) for h in fast] == [(h.index, h.tile_id, h.caption) for h in plain]
        assert [h.score for h in fast] == pytest.approx([h.score for h in plain], abs=1e-5)
    assert memory.nbytes > 0
