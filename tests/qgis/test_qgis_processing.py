"""The TileScribe Processing provider (issue 20, item 3): the real algorithms through processing.run,
the models in the worker; and the real qgis_process.bin from a shell with the plugin in a temp profile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NEON, TILE_CAPTIONS

REPO = Path(__file__).resolve().parents[2]
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"


@pytest.fixture(scope="module")
def processing_ready(qgis_app):
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    return True


@pytest.fixture
def provider(processing_ready, plugin_on_shared_worker):
    from qgis.core import QgsApplication

    assert plugin_on_shared_worker.provider is not None
    return QgsApplication.processingRegistry().providerById("tilescribe")


def run(algorithm: str, parameters: dict, feedback=None):
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    return processing.run(algorithm, parameters, context=context, feedback=feedback or QgsProcessingFeedback())


def features(path: str) -> list[dict]:
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(path, "hits", "ogr")
    assert layer.isValid(), path
    rows = [dict(zip(layer.fields().names(), f.attributes()), box=f.geometry().boundingBox())
            for f in layer.getFeatures()]
    return sorted(rows, key=lambda r: r["rank"])


def test_the_provider_holds_the_three_algorithms_and_unload_removes_it(processing_ready, plugin):
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("tilescribe")
    assert provider is not None and provider.name() == "TileScribe"
    assert sorted(a.id() for a in provider.algorithms()) == [
        "tilescribe:importcaptions", "tilescribe:indexlayer", "tilescribe:search"]
    plugin.unload()
    assert registry.providerById("tilescribe") is None
    plugin.dock = None  # the fixture must not unload twice


def test_index_layer_then_search_two_indexes_in_two_crss(provider, captioned_index, tmp_path, shared_data):
    from qgis.core import QgsProcessingFeedback
    from rasters import write_raster

    other = write_raster(tmp_path / "other.tif", width=128, height=128, crs="EPSG:3857", seed=4)
    progress = []

    class Recording(QgsProcessingFeedback):
        def setProgress(self, value):
            progress.append(value)
            super().setProgress(value)

    result = run("tilescribe:indexlayer", {"INPUT": str(other), "TEST_MODEL": True, "TILE_SIZE": 64,
                                           "VARIANTS": 1}, Recording())
    db = str(other.with_suffix(".tilescribe.sqlite"))
    assert result["OUTPUT"] == db and Path(db).is_file() and result["DONE"] == 4 and result["FAILED"] == 0
    assert progress and progress[-1] == pytest.approx(100.0)

    # The placeholder index was made with the same embedder: both are searched in one ranking.
    neon_db = str(captioned_index.with_name("neon.tilescribe.sqlite"))
    out = str(tmp_path / "hits.gpkg")
    result = run("tilescribe:search", {"QUERY": "a dirt road crossing the forest", "INDEX": [neon_db, db],
                                       "K": 6, "OUTPUT": out})
    hits = features(result["OUTPUT"])
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5, 6]
    assert hits[0]["caption"] == TILE_CAPTIONS[2][0] and hits[0]["index"] == neon_db
    assert hits[0]["raster"].endswith("neon.tif") and hits[0]["crs"] == "EPSG:32617"
    assert {h["index"] for h in hits} == {neon_db, db}
    # Polygons in the best hit's CRS (EPSG:32617): NEON's third tile, rows 200-400, cols 0-200, 10 cm px.
    from qgis.core import QgsRasterLayer

    neon = QgsRasterLayer(str(captioned_index), "neon").extent()
    box = hits[0]["box"]
    assert box.xMinimum() == pytest.approx(neon.xMinimum()) and box.yMaximum() == pytest.approx(neon.center().y())
    assert box.width() == pytest.approx(20.0) and box.height() == pytest.approx(20.0)


def test_search_with_an_extent_in_another_crs_keeps_only_tiles_meeting_it(provider, captioned_index, tmp_path):
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject, QgsRasterLayer

    neon = QgsRasterLayer(str(captioned_index), "neon")
    to_wgs84 = QgsCoordinateTransform(neon.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    extent = neon.extent()
    extent.setXMaximum(extent.center().x() - 1)  # the left column of tiles: 0 and 2
    extent.setYMinimum(extent.center().y() + 1)  # the top row: tile 0 only
    box = to_wgs84.transformBoundingBox(extent)
    parameter = f"{box.xMinimum()},{box.xMaximum()},{box.yMinimum()},{box.yMaximum()} [EPSG:4326]"
    db = str(captioned_index.with_name("neon.tilescribe.sqlite"))
    result = run("tilescribe:search", {"QUERY": "a pond", "INDEX": [db], "EXTENT": parameter, "K": 4,
                                       "OUTPUT": str(tmp_path / "in_box.gpkg")})
    hits = features(result["OUTPUT"])
    assert [h["caption"] for h in hits] == [TILE_CAPTIONS[0][0]] or [h["caption"] for h in hits] == [
        TILE_CAPTIONS[0][1]]


def test_bad_input_is_a_processing_error_naming_it(provider, captioned_index, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="does not exist"):
        run("tilescribe:search", {"QUERY": "a pond", "INDEX": [str(tmp_path / "none.tilescribe.sqlite")],
                                  "OUTPUT": str(tmp_path / "x.gpkg")})
    with pytest.raises(QgsProcessingException, match="The query is empty"):
        run("tilescribe:search", {"QUERY": "  ", "INDEX": [str(captioned_index.with_name("neon.tilescribe.sqlite"))],
                                  "OUTPUT": str(tmp_path / "x.gpkg")})


def test_import_captions_then_search(provider, neon_raster, tmp_path):
    captions = tmp_path / "captions.jsonl"
    windows = [[0, 0, 200, 200], [200, 0, 200, 200], [0, 200, 200, 200], [200, 200, 200, 200]]
    captions.write_text("\n".join(json.dumps({"window": w, "captions": c})
                                  for w, c in zip(windows, TILE_CAPTIONS)) + "\nnot json\n")
    db = str(tmp_path / "imported.tilescribe.sqlite")
    result = run("tilescribe:importcaptions", {"INPUT": str(neon_raster), "CAPTIONS": str(captions), "OUTPUT": db})
    assert result["IMPORTED"] == 4 and result["OUTPUT"] == db
    hits = features(run("tilescribe:search", {"QUERY": "water of a pond", "INDEX": [db], "K": 1,
                                              "OUTPUT": str(tmp_path / "h.gpkg")})["OUTPUT"])
    assert hits[0]["caption"] == TILE_CAPTIONS[3][0]


def test_a_cancelled_index_stops_and_says_so(provider, neon_raster):
    from qgis.core import QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    feedback.cancel()
    result = run("tilescribe:indexlayer", {"INPUT": str(neon_raster), "TEST_MODEL": True, "TILE_SIZE": 64,
                                           "VARIANTS": 1}, feedback)
    assert result["DONE"] < 49  # 400 px / 64 -> 7 x 7 tiles: stopped before all were captioned


# -- the real qgis_process, from a shell ------------------------------------------------------


@pytest.fixture(scope="module")
def qgis_home(tmp_path_factory):
    """A HOME whose default QGIS profile has the plugin (a symlink to this checkout) enabled."""
    if not Path(QGIS_PROCESS).is_file():
        pytest.skip("qgis_process.bin is not installed")
    home = tmp_path_factory.mktemp("home")
    profile = home / ".local/share/QGIS/QGIS3/profiles/default"
    (profile / "python/plugins").mkdir(parents=True)
    (profile / "python/plugins/tilescribe").symlink_to(REPO)
    (profile / "QGIS").mkdir()
    (profile / "QGIS/QGIS3.ini").write_text("[PythonPlugins]\ntilescribe=true\n")
    return home


def qgis_process(home: Path, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    # Not qgis.testing's QGIS_CUSTOM_CONFIG_PATH (start_app sets it): the profile under HOME must be read.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("QGIS_")}
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run([QGIS_PROCESS, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=home)


def test_qgis_process_batch_indexes_several_layers_then_searches_them(qgis_home, shared_data, tmp_path):
    from rasters import write_raster

    listed = qgis_process(qgis_home, "list")
    assert "tilescribe:indexlayer" in listed.stdout and "tilescribe:search" in listed.stdout, listed.stderr[-2000:]
    rasters = [write_raster(tmp_path / f"r{n}.tif", width=128, height=128, seed=n,
                            crs=("EPSG:32618", "EPSG:3857")[n % 2]) for n in range(2)]
    neon = tmp_path / "neon.tif"
    shutil.copy(shared_data / NEON, neon)
    rasters.append(neon)
    # A batch as a shell runs one: each layer, each its own index beside it.
    for raster in rasters:
        done = qgis_process(qgis_home, "run", "tilescribe:indexlayer", "--", f"INPUT={raster}", "TEST_MODEL=true",
                            "TILE_SIZE=200" if raster == neon else "TILE_SIZE=64", "VARIANTS=1")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert raster.with_suffix(".tilescribe.sqlite").is_file()
    out = tmp_path / "hits.gpkg"
    found = qgis_process(qgis_home, "run", "tilescribe:search", "--",
                         *[f"INDEX={r.with_suffix('.tilescribe.sqlite')}" for r in rasters],
                         "QUERY=anything at all", "K=10", f"OUTPUT={out}")
    assert found.returncode == 0, found.stdout[-2000:] + found.stderr[-2000:]
    hits = features(str(out))
    assert len(hits) == 10 and {Path(h["raster"]).name for h in hits} == {"r0.tif", "r1.tif", "neon.tif"}
    assert all(h["index"].endswith(".tilescribe.sqlite") and h["caption"] for h in hits)


@pytest.mark.parametrize("which", ["searched", "another"])
def test_search_output_over_an_index_is_refused_and_the_index_kept(provider, captioned_index, tmp_path, which):
    """R5-Q1: the hits' sink would replace the whole file (the SQLite/GPKG driver overwrites it)."""
    from qgis.core import QgsProcessingException

    db = captioned_index.with_name("neon.tilescribe.sqlite")
    searched = tmp_path / "copy.tilescribe.sqlite"
    shutil.copy(db, searched)
    target = searched if which == "searched" else tmp_path / "hits.sqlite"
    if which == "another":
        shutil.copy(db, target)  # an index under a name that does not say so
    before = target.read_bytes()
    with pytest.raises(QgsProcessingException, match=f"OUTPUT {target} is a TileScribe index file.*new file name"):
        run("tilescribe:search", {"QUERY": "a pond", "INDEX": [str(searched)], "OUTPUT": str(target)})
    assert target.read_bytes() == before
