"""Index layer on layers that are not files, and on several layers at once, driven with real Qt events.

A real XYZ tile server on 127.0.0.1 (devtools/xyz_tiles.py: tiles cut with GDAL from the NEON raster
warped to Web Mercator) and a real QgsRasterLayer of QGIS's XYZ provider: the dialog asks for an
extent and a resolution, shows the size, renders the layer through QGIS (native:rasterize) into a
GeoTIFF whose pixels match the source, and the index records where it came from, with tile boxes in
the right place. Several ticked layers go into one project index, one after another, with Cancel and
Resume on the message bar.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from gui_events import bar_texts, search_by_typing
from rasters import write_raster

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

NEON = "rasters/neon_osbs_029_10cm_deepforest.tif"
RESOLUTION = 0.2  # metres (EPSG:3857) per pixel: the NEON scene's 10 cm, halved


@pytest.fixture(scope="module")
def native_algorithms(qgis_app):
    """QGIS's native Processing algorithms (the application loads them; a test app does not)."""
    from qgis.analysis import QgsNativeAlgorithms
    from qgis.core import QgsApplication

    if QgsApplication.processingRegistry().providerById("native") is None:
        QgsApplication.processingRegistry().addProvider(QgsNativeAlgorithms())


@pytest.fixture(scope="module")
def xyz_server(shared_data):
    from tilescribe.devtools.xyz_tiles import XyzServer

    with XyzServer(str(shared_data / NEON)) as server:
        yield server


@pytest.fixture
def xyz_layer(xyz_server, fake_iface):
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(xyz_server.layer_uri(), "neon tiles", "wms")
    assert layer.isValid() and layer.providerType() == "wms", xyz_server.layer_uri()
    QgsProject.instance().addMapLayer(layer)
    return layer


def inner_extent(server, margin: float = 4.0):
    """The source's box in EPSG:3857 less a margin: every tile there is covered by the image."""
    from qgis.core import QgsRectangle

    xmin, ymin, xmax, ymax = server.source.bounds
    return QgsRectangle(xmin + margin, ymin + margin, xmax - margin, ymax - margin)


def expected_pixels(shared_data, bounds, width, height) -> np.ndarray:
    """The source warped by GDAL to the rendered grid: what the GeoTIFF must show."""
    from osgeo import gdal

    warped = gdal.Warp("/vsimem/expected.tif", str(shared_data / NEON), dstSRS="EPSG:3857",
                       outputBounds=bounds, width=width, height=height, resampleAlg="bilinear")
    data = warped.ReadAsArray()[:3].astype(float)
    warped = None
    gdal.Unlink("/vsimem/expected.tif")
    return data


def check_pixels(path: str, shared_data) -> dict:
    """The rendered GeoTIFF against the source: same place, same picture (not blank)."""
    from osgeo import gdal

    dataset = gdal.Open(path)
    x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
    width, height = dataset.RasterXSize, dataset.RasterYSize
    bounds = (x0, y0 + dy * height, x0 + dx * width, y0)
    rendered = dataset.ReadAsArray()[:3].astype(float)
    tags = dataset.GetMetadata()
    dataset = None
    expected = expected_pixels(shared_data, bounds, width, height)
    assert rendered.std() > 10, "the rendered GeoTIFF is blank"
    # QGIS draws XYZ tiles with nearest-neighbour resampling from the zoom level it picks (0.15 m
    # pixels here): the picture may sit up to one of those pixels off (measured: 1 px in x gave
    # 0.98, in place 0.90). Anything further, or another picture, correlates far less (0.55-0.7 at 2-3 px).
    inner = (slice(None), slice(5, -5), slice(5, -5))
    best = max((_correlation(rendered[inner], np.roll(expected, (dy, dx), axis=(1, 2))[inner]), dx, dy)
               for dx in (-1, 0, 1) for dy in (-1, 0, 1))
    assert best[0] > 0.95, best
    aligned = np.roll(expected, (best[2], best[1]), axis=(1, 2))[inner]
    assert np.abs(rendered[inner] - aligned).mean() < 10
    return {"bounds": bounds, "size": (width, height), "tags": tags, "resolution": (dx, dy)}


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.corrcoef(a[band].ravel(), b[band].ravel())[0, 1] for band in range(3)]))


def test_a_render_task_draws_the_xyz_layer_into_a_tagged_geotiff(native_algorithms, xyz_server, xyz_layer,
                                                                 tmp_path, shared_data, qtbot):
    from tilescribe.plugin.qgis.web_render import RenderTask, plan_request

    extent = inner_extent(xyz_server)
    request = plan_request(xyz_layer, extent, RESOLUTION, str(tmp_path), 100, 0)
    assert (request.plan.width_px, request.plan.height_px) == (round(extent.width() / RESOLUTION),
                                                               round(extent.height() / RESOLUTION))
    done = []
    task = RenderTask(request, done.append)
    from qgis.core import QgsApplication

    QgsApplication.taskManager().addTask(task)
    qtbot.waitUntil(lambda: bool(done), timeout=120_000)
    assert done[0].error is None and not done[0].cancelled, done[0].error
    found = check_pixels(request.path, shared_data)
    assert found["size"] == (request.plan.width_px, request.plan.height_px)  # cropped to the extent
    xmin, _, _, ymax = request.extent  # from the extent's top-left corner, whole pixels
    assert found["bounds"] == pytest.approx((xmin, ymax - request.plan.height_px * RESOLUTION,
                                             xmin + request.plan.width_px * RESOLUTION, ymax), abs=1e-6)
    source = json.loads(found["tags"]["TILESCRIBE_SOURCE"])
    assert source["provider"] == "wms" and source["layer"] == "neon tiles" and source["crs"] == "EPSG:3857"
    assert source["url"] == xyz_server.url_template and source["resolution"] == RESOLUTION
    assert [p.name for p in tmp_path.iterdir()] == [Path(request.path).name]  # no partial file left
    assert len(xyz_server.requests) > 0


def _click_item_check(qtbot, widget, row: int) -> None:
    """A real click on a list item's check box (left of its text)."""
    from qgis.PyQt.QtCore import QPoint, Qt

    rect = widget.visualItemRect(widget.item(row))
    qtbot.mouseClick(widget.viewport(), Qt.LeftButton, pos=QPoint(rect.left() + 10, rect.center().y()))


def _row_of(dialog, name: str) -> int:
    texts = [dialog.layersList.item(row).text() for row in range(dialog.layersList.count())]
    rows = [row for row, text in enumerate(texts) if text.startswith(name)]
    assert rows, f"{name} is not listed: {texts}"
    return rows[0]


def _type_into(qtbot, widget, text: str) -> None:
    from qgis.PyQt.QtCore import Qt

    qtbot.mouseClick(widget, Qt.LeftButton)
    widget.selectAll()
    qtbot.keyClicks(widget, text)


def _fill_render_fields(qtbot, fields, extent, folder) -> None:
    """Types the extent's coordinates into QGIS's extent box, the resolution and the folder."""
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QLineEdit

    for name, value in (("mXMinLineEdit", extent.xMinimum()), ("mYMinLineEdit", extent.yMinimum()),
                        ("mXMaxLineEdit", extent.xMaximum()), ("mYMaxLineEdit", extent.yMaximum())):
        edit = fields.extentBox.findChild(QLineEdit, name)
        _type_into(qtbot, edit, f"{value:.6f}")
        qtbot.keyClick(edit, Qt.Key_Return)
    _type_into(qtbot, fields.resolutionSpin.lineEdit(), str(RESOLUTION))
    _type_into(qtbot, fields.folderWidget.lineEdit(), str(folder))


def _wait_queue(plugin, qtbot, timeout_s: float = 240) -> None:
    qtbot.waitUntil(lambda: not plugin.queue.running and not plugin.runner.tasks, timeout=int(timeout_s * 1000))


def test_the_index_dialog_renders_a_web_layer_and_indexes_it_with_its_source(
        native_algorithms, xyz_server, xyz_layer, plugin_on_shared_worker, fake_iface, tmp_path, shared_data,
        qtbot):
    from qgis.core import QgsCoordinateReferenceSystem
    from qgis.PyQt.QtCore import Qt

    plugin = plugin_on_shared_worker
    canvas = fake_iface.canvas
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    canvas.setExtent(inner_extent(xyz_server))
    canvas.refresh()
    fake_iface.mock.activeLayer.return_value = xyz_layer
    plugin.index_action.trigger()
    dialog = plugin.index_dialog
    qtbot.waitUntil(dialog.isVisible)
    row = _row_of(dialog, "neon tiles")
    assert dialog.layersList.item(row).checkState() == Qt.Checked  # the active layer
    fields = dialog.renderFields
    assert fields.isVisible() and fields.termsLabel.isVisible() and "terms of use" in fields.termsLabel.text()
    view = fields.extent_for(xyz_layer)  # the extent box starts at the map view (shown rounded)
    assert view.buffered(0.01).contains(inner_extent(xyz_server)), view.toString()
    wanted = inner_extent(xyz_server)
    _fill_render_fields(qtbot, fields, wanted, tmp_path)
    # Enter in a coordinate pressed Index in the real QGIS (make gui-smoke checks it; offscreen, Enter
    # never reaches the default button, so this only checks nothing started)
    assert dialog.isVisible() and not plugin.runner.tasks
    qtbot.mouseClick(dialog.testRadio, Qt.LeftButton)
    _type_into(qtbot, dialog.tileSizeSpin.lineEdit(), "100")
    dialog.variantsSpin.setValue(1)
    estimate = fields.estimateLabel.text()
    extent = fields.extent_for(xyz_layer)
    assert extent.toString(3) == wanted.toString(3)
    width, height = math.ceil(extent.width() / RESOLUTION - 1e-9), math.ceil(extent.height() / RESOLUTION - 1e-9)
    tiles = -(-width // 100) * -(-height // 100)
    assert f"{width:,} x {height:,} px" in estimate and f"{tiles} tiles of 100 px" in estimate, estimate
    assert "MB" in estimate
    qtbot.mouseClick(dialog.buttonBox.button(dialog.buttonBox.Ok), Qt.LeftButton)
    assert not dialog.isVisible()
    _wait_queue(plugin, qtbot)

    rendered = sorted(tmp_path.glob("*.tif"))
    assert len(rendered) == 1 and rendered[0].name.startswith("neon_tiles-"), list(tmp_path.iterdir())
    found = check_pixels(str(rendered[0]), shared_data)
    db = rendered[0].with_name(rendered[0].name[:-4] + ".tilescribe.sqlite")
    assert db.is_file(), list(tmp_path.iterdir())
    with sqlite3.connect(db) as conn:
        (source,) = conn.execute("select source from rasters").fetchone()
        boxes = conn.execute("select minx, miny, maxx, maxy, status from tiles").fetchall()
    source = json.loads(source)
    assert source["url"] == xyz_server.url_template and source["provider"] == "wms"
    assert source["extent"] == pytest.approx([extent.xMinimum(), extent.yMinimum(), extent.xMaximum(),
                                              extent.yMaximum()], abs=1e-6)
    assert len(boxes) == tiles and {b[4] for b in boxes} == {"done"}
    xmin, ymin, xmax, ymax = found["bounds"]
    assert min(b[0] for b in boxes) == pytest.approx(xmin) and max(b[2] for b in boxes) == pytest.approx(xmax)
    assert min(b[1] for b in boxes) == pytest.approx(ymin) and max(b[3] for b in boxes) == pytest.approx(ymax)
    first = min(boxes, key=lambda b: (-b[3], b[0]))  # the top-left tile: 100 px from the corner
    assert first[:4] == pytest.approx((xmin, ymax - 100 * RESOLUTION, xmin + 100 * RESOLUTION, ymax))
    assert any("Indexed neon tiles" in text for text in bar_texts(fake_iface.bar)), bar_texts(fake_iface.bar)

    # The same request again: already rendered, nothing fetched, the index resumes (nothing to do).
    before = len(xyz_server.requests)
    plugin.index_action.trigger()
    dialog = plugin.index_dialog
    _type_into(qtbot, dialog.tileSizeSpin.lineEdit(), "100")
    _fill_render_fields(qtbot, dialog.renderFields, wanted, tmp_path)
    assert "Already rendered" in dialog.renderFields.estimateLabel.text()
    qtbot.mouseClick(dialog.buttonBox.button(dialog.buttonBox.Ok), Qt.LeftButton)
    _wait_queue(plugin, qtbot)
    assert len(xyz_server.requests) == before  # nothing fetched again
    in_use = ("-wal", "-shm")  # the worker still has the index open: SQLite's own files, gone at its stop
    assert sorted(p.suffix for p in tmp_path.iterdir() if not p.name.endswith(in_use)) == [".sqlite", ".tif"]


def _queue_three_sheets(plugin, add_raster, tmp_path, qtbot) -> Path:
    """Three rasters of a saved project, all ticked in the Index dialog with the Test model: OK
    starts the queue (sheet2, then sheet1 of 25 tiles, then sheet0). The rasters' folder."""
    from qgis.core import QgsProject
    from qgis.PyQt.QtCore import QPoint, Qt

    rasters = tmp_path / "delivery"
    rasters.mkdir()
    layers = [add_raster(write_raster(rasters / f"sheet{i}.tif", width=size, height=size, seed=i), f"sheet{i}")
              for i, size in enumerate((64, 160, 64))]
    assert QgsProject.instance().write(str(tmp_path / "survey.qgz"))
    plugin.index_action.trigger()
    dialog = plugin.index_dialog
    qtbot.waitUntil(dialog.isVisible)
    assert not dialog.renderFields.isVisible()  # files only: nothing to render
    qtbot.mouseClick(dialog.allRastersCheck, Qt.LeftButton, pos=QPoint(8, dialog.allRastersCheck.height() // 2))
    # In the Layers panel's order, top first (the last added is on top): the queue's order too.
    assert [layer.name() for layer in dialog.checked_layers()] == [layer.name() for layer in layers[::-1]]
    assert dialog.indexFile.filePath() == str(tmp_path / "survey.tilescribe.sqlite")  # one index, not three
    qtbot.mouseClick(dialog.testRadio, Qt.LeftButton)
    _type_into(qtbot, dialog.tileSizeSpin.lineEdit(), "32")
    dialog.variantsSpin.setValue(1)
    qtbot.mouseClick(dialog.buttonBox.button(dialog.buttonBox.Ok), Qt.LeftButton)
    return rasters


def test_several_layers_go_into_one_project_index_with_cancel_and_resume(
        plugin_on_shared_worker, fake_iface, add_raster, tmp_path, qtbot):
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QPushButton

    plugin = plugin_on_shared_worker
    rasters = _queue_three_sheets(plugin, add_raster, tmp_path, qtbot)

    # Cancel on the bar while the second (25 tiles) is indexed: the first stays indexed.
    qtbot.waitUntil(lambda: len(plugin.queue.finished) == 1 and plugin.queue.running, timeout=180_000)
    assert any("layer 2 of 3" in text for text in bar_texts(fake_iface.bar)), bar_texts(fake_iface.bar)
    cancel = fake_iface.bar.findChild(QPushButton, "tilescribeQueueCancel")
    qtbot.mouseClick(cancel, Qt.LeftButton)
    _wait_queue(plugin, qtbot)
    texts = " | ".join(bar_texts(fake_iface.bar))
    assert "Indexing stopped: 1 of 3 layers indexed (sheet2); 2 left" in texts, texts
    db = tmp_path / "survey.tilescribe.sqlite"
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from rasters").fetchone()[0] == 2  # the third never started

    resume = fake_iface.bar.findChild(QPushButton, "tilescribeQueueResume")
    qtbot.mouseClick(resume, Qt.LeftButton)
    _wait_queue(plugin, qtbot)
    texts = " | ".join(bar_texts(fake_iface.bar))
    assert f"Indexed 3 layers into {db}" in texts, texts
    assert plugin.dock.selected_dbs() == [str(db.resolve())]  # the dock lists the project's index and searches it
    with sqlite3.connect(db) as conn:
        rasters_indexed = [Path(p).name for (p,) in conn.execute("select path from rasters order by id")]
        per_run = conn.execute("select r.id, count(*), sum(t.status = 'done') from runs r join tiles t"
                               " on t.run_id = r.id group by r.id order by r.id").fetchall()
    assert rasters_indexed == ["sheet2.tif", "sheet1.tif", "sheet0.tif"]
    rasters_indexed = sorted(rasters_indexed)
    assert [(n, done) for _, n, done in per_run] == [(4, 4), (25, 25), (4, 4)]  # the stopped one resumed
    assert sorted(p.name for p in rasters.iterdir()) == ["sheet0.tif", "sheet1.tif", "sheet2.tif"]
    assert not list(tmp_path.glob("*.lock"))
    plugin.dock.kSpin.setValue(40)
    hits = search_by_typing(plugin, qtbot, "a dense lake corner")
    # One index of three rasters, ticked alone: one ranking over all of them (it searched only the
    # newest run's raster, as the Run box chose, before)
    assert len(hits) == 33 and sorted({Path(hit.raster).name for hit in hits}) == rasters_indexed
    assert plugin.search.results.layer().featureCount() == 33


def test_the_processing_algorithm_renders_a_web_layer_given_extent_and_resolution(
        native_algorithms, xyz_server, xyz_layer, plugin_on_shared_worker, tmp_path, shared_data, qtbot):
    """tilescribe:indexlayer takes the same layer with EXTENT and RESOLUTION; without them it says so."""
    from qgis.core import (QgsApplication, QgsProcessingAlgRunnerTask, QgsProcessingContext, QgsProcessingFeedback,
                           QgsProject)

    algorithm = QgsApplication.processingRegistry().createAlgorithmById("tilescribe:indexlayer")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    extent = inner_extent(xyz_server)
    base = {"INPUT": xyz_layer.id(), "TEST_MODEL": True, "TILE_SIZE": 100, "VARIANTS": 1}
    class Errors(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.errors = []

        def reportError(self, error, fatal=False):  # noqa: N802 (QGIS's name)
            self.errors.append(error)
            super().reportError(error, fatal)

    feedback = Errors()
    _, ok = algorithm.run(base, context, feedback)
    assert not ok and any("give EXTENT and RESOLUTION" in e for e in feedback.errors), feedback.errors
    box = f"{extent.xMinimum()},{extent.xMaximum()},{extent.yMinimum()},{extent.yMaximum()} [EPSG:3857]"
    # As the Processing Toolbox runs it: in a task's thread (the rendering is a child algorithm there).
    done, feedback = {}, QgsProcessingFeedback()  # kept referenced: the task holds only a pointer
    task = QgsProcessingAlgRunnerTask(algorithm, dict(base, EXTENT=box, RESOLUTION=RESOLUTION,
                                                      RENDER_FOLDER=str(tmp_path)), context, feedback)
    task.executed.connect(lambda ok, results: done.update(ok=ok, results=results))
    QgsApplication.taskManager().addTask(task)
    qtbot.waitUntil(lambda: bool(done), timeout=180_000)
    results = done["results"]
    assert done["ok"] and results["DONE"] == 4 and results["FAILED"] == 0, results
    (rendered,) = tmp_path.glob("*.tif")
    check_pixels(str(rendered), shared_data)
    assert results["OUTPUT"] == str(rendered)[:-4] + ".tilescribe.sqlite"
    with sqlite3.connect(results["OUTPUT"]) as conn:
        source = json.loads(conn.execute("select source from rasters").fetchone()[0])
    assert source["layer"] == "neon tiles" and source["resolution"] == RESOLUTION


def test_closing_the_project_ends_the_queue_after_its_current_layer():
    """Seen: after Project > Close the queue went on to the closed project's next layers (a web layer's
    render then failed: its layer was gone), and a Resume left on the bar indexed them later.

    Run in a child pytest with its own QGIS, last in this file: run in this session's QGIS, or even
    in a child before it, it was followed by a segfault in the Processing test above (a render in a
    task's thread); the cause is not found yet (the same test file passes without it)."""
    import os
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          f"{__file__}::test_closing_the_project_mid_queue_in_this_process"],
                         env=dict(os.environ, TILESCRIBE_CHILD_TEST="closing"), capture_output=True, text=True,
                         timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.mark.skipif(__import__("os").environ.get("TILESCRIBE_CHILD_TEST") != "closing",
                    reason="run in a child process by test_closing_the_project_ends_the_queue_after_its_current_layer")
def test_closing_the_project_mid_queue_in_this_process(plugin_on_shared_worker, fake_iface, add_raster, tmp_path,
                                                       qtbot):
    from qgis.core import QgsProject
    from qgis.PyQt.QtWidgets import QPushButton

    plugin = plugin_on_shared_worker
    _queue_three_sheets(plugin, add_raster, tmp_path, qtbot)
    qtbot.waitUntil(lambda: len(plugin.queue.finished) == 1 and plugin.queue.running, timeout=180_000)
    fake_iface.canvas.setLayers([])  # as QGIS's layer tree bridge does when the project closes
    QgsProject.instance().clear()  # what Project > Close and Project > New do
    _wait_queue(plugin, qtbot)
    texts = " | ".join(bar_texts(fake_iface.bar))
    assert ("The project was closed while its layers were indexed: 2 of 3 layers indexed (sheet2, sheet1); "
            "left: sheet0.") in texts, texts
    assert fake_iface.bar.findChild(QPushButton, "tilescribeQueueResume") is None
    with sqlite3.connect(tmp_path / "survey.tilescribe.sqlite") as conn:  # the layer in progress finished
        assert conn.execute("select count(*), sum(status = 'done') from tiles").fetchone() == (29, 29)
        names = [Path(p).name for (p,) in conn.execute("select path from rasters order by id")]
    assert names == ["sheet2.tif", "sheet1.tif"]
    assert plugin.dock.selected_dbs() == []  # the closed project's index is not brought into the new one
