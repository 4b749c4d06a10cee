"""One index over many rasters (issue 20, item 2): `tilescribe index R1 R2 ... --db project`,
a folder, a VRT's sources."""

from __future__ import annotations

import json

import pytest
from rasterio.transform import from_origin

from fakes import HashingEmbedder
from helpers import in_process_cli
from rasters import write_raster
from tilescribe.plugin.core.index.store import Store
from tilescribe.plugin.core.raster.sources import raster_inputs


@pytest.fixture
def cli(monkeypatch, capsys):
    return in_process_cli(monkeypatch, capsys, HashingEmbedder())


@pytest.fixture
def rasters(tmp_path):
    folder = tmp_path / "delivery"
    folder.mkdir()
    return [write_raster(folder / "a.tif", width=128, height=128, seed=1),
            write_raster(folder / "b.tif", width=128, height=64, seed=2, crs="EPSG:3857",
                         transform=from_origin(1e6, 6e6, 5.0, 5.0)),
            write_raster(folder / "c.tif", width=64, height=64, seed=3)]


def runs_per_raster(db):
    with Store(db, readonly=True) as store:
        rasters = {r["id"]: r["path"] for r in store.rasters()}
        return sorted((rasters[run.raster_id].rsplit("/", 1)[-1], store.tile_counts(run.id)["done"])
                      for run in store.runs())


def test_several_rasters_go_into_one_index_one_run_each_and_resume(cli, rasters, tmp_path):
    db = tmp_path / "project.tilescribe.sqlite"
    code, _, err = cli("index", *rasters, "--db", db, "--test-model", "--tile-size", 64, "--variants", 1)
    assert code == 0, err
    assert runs_per_raster(db) == [("a.tif", 4), ("b.tif", 2), ("c.tif", 1)]
    assert "[2/3]" in err and "3 of 3 rasters done into" in err
    code, _, err = cli("index", *rasters, "--db", db, "--test-model", "--tile-size", 64, "--variants", 1)
    assert code == 0 and err.count("(0 now)") == 3  # resumed: nothing captioned again
    assert runs_per_raster(db) == [("a.tif", 4), ("b.tif", 2), ("c.tif", 1)]
    # The project index searches as one ranking over its rasters, with --all-rasters.
    code, out, err = cli("search", "--db", db, "--all-rasters", "--format", "json", "-k", "7", "anything")
    assert code == 0, err
    assert {hit["raster"].rsplit("/", 1)[-1] for hit in json.loads(out)} == {"a.tif", "b.tif", "c.tif"}


def test_a_folder_stands_for_its_rasters_and_without_db_each_gets_its_own_index(cli, rasters):
    (rasters[0].parent / "notes.txt").write_text("not a raster")
    code, _, err = cli("index", rasters[0].parent, "--test-model", "--tile-size", 64, "--variants", 1)
    assert code == 0, err
    for raster in rasters:
        assert runs_per_raster(raster.with_suffix(".tilescribe.sqlite"))[0][0] == raster.name


def test_a_vrt_stands_for_its_sources_when_asked(rasters, tmp_path):
    vrt = tmp_path / "mosaic.vrt"
    vrt.write_text('<VRTDataset rasterXSize="256" rasterYSize="128"><VRTRasterBand dataType="Byte" band="1">'
                   '<SimpleSource><SourceFilename relativeToVRT="1">delivery/a.tif</SourceFilename></SimpleSource>'
                   f'<SimpleSource><SourceFilename relativeToVRT="0">{rasters[2]}</SourceFilename></SimpleSource>'
                   '<SimpleSource><SourceFilename relativeToVRT="1">delivery/a.tif</SourceFilename></SimpleSource>'
                   '</VRTRasterBand></VRTDataset>')
    assert raster_inputs([vrt]) == [vrt]
    assert [p.name for p in raster_inputs([vrt], vrt_sources=True)] == ["a.tif", "c.tif"]


def test_bad_inputs_name_the_folder_or_vrt(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("index", empty, "--test-model")
    assert code == 2 and "is a folder, not a raster file, and holds none" in err
    bad = tmp_path / "bad.vrt"
    bad.write_text("<VRTDataset>")
    code, _, err = cli("index", bad, "--vrt-sources", "--test-model")
    assert code == 2 and "Cannot read the VRT" in err
