"""Runs inside the real QGIS application (`qgis --code`), started by scripts/gui_smoke.py.

Drives the installed plugin with real Qt events, as a user would: load the raster, open the
dock, type a query + Enter, click a result, inspect a tile on the canvas, find similar tiles,
clear, then quit QGIS. Saves a screenshot of the whole screen after each step and writes
report.json; anything QGIS logs under "Python error" fails the run (helpers shared with the
first-run session: scripts/gui_session_common.py).
"""

import os
import sys
import time
from pathlib import Path

from qgis.core import QgsCoordinateTransform, QgsPointXY, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtCore import QPoint, Qt
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import QLineEdit
from qgis.PyQt.QtTest import QTest
from qgis.utils import iface, plugins

sys.path.insert(0, os.environ["GUI_SMOKE_SCRIPTS"])
from gui_session_common import (bar_texts, idle, maximise, pixel_of, qgis_task_notices, quit_qgis,  # noqa: E402
                                rendered, run_session, settle, shoot, step, toolbar_button, wait)

RASTER = os.environ["GUI_SMOKE_RASTER"]
SMALL_RASTER = os.environ["GUI_SMOKE_SMALL_RASTER"]  # one 64 px tile: indexed with the test model
NEON_RASTER = os.environ["GUI_SMOKE_NEON"]  # the third raster of the project
XYZ_URI = os.environ["GUI_SMOKE_XYZ_URI"]  # a real XYZ tile server on 127.0.0.1 (devtools/xyz_tiles.py)
XYZ_EXTENT = [float(v) for v in os.environ["GUI_SMOKE_XYZ_EXTENT"].split(",")]  # EPSG:3857, what to render
XYZ_RESOLUTION = os.environ["GUI_SMOKE_XYZ_RESOLUTION"]
PROJECT_FILE = os.environ["GUI_SMOKE_PROJECT"]
PROJECT_QUERY = "a dense lake corner"  # words the test model's placeholder captions are made of
QUERY = os.environ.get("GUI_SMOKE_QUERY", "an airplane parked at an airport")


def painted_by_itself():
    """Until the canvas is idle, without asking it to redraw: what the plugin left it showing."""
    canvas = iface.mapCanvas()
    settle(0.5)
    wait(lambda: not canvas.isDrawing(), 60, "the map canvas")
    settle(0.2)


def outline_orange(rect):
    """Highlight-orange pixels on a tile's outline, as the canvas paints it now."""
    canvas = iface.mapCanvas()
    image = canvas.viewport().grab().toImage()
    a = pixel_of(QgsPointXY(rect.xMinimum(), rect.yMinimum()))
    b = pixel_of(QgsPointXY(rect.xMaximum(), rect.yMaximum()))
    count = 0
    for x in range(min(a.x(), b.x()), max(a.x(), b.x()) + 1, 2):
        for y in (a.y(), b.y()):
            for dy in (-1, 0, 1):
                if 0 <= x < image.width() and 0 <= y + dy < image.height():
                    colour = QColor(image.pixel(x, y + dy))
                    count += colour.red() > 200 and colour.green() < 130 and colour.blue() < 80
    return count


def load_raster():
    maximise()
    layer = QgsRasterLayer(RASTER, "UCM mosaic")
    assert layer.isValid(), f"QGIS cannot read {RASTER}"
    QgsProject.instance().addMapLayer(layer)
    iface.setActiveLayer(layer)
    iface.mapCanvas().setExtent(layer.extent())
    settle(0.3)
    QgsProject.instance().setDirty(False)  # as if just saved: quitting must then ask nothing
    rendered()
    menu = [action.text() for action in iface.rasterMenu().actions()]
    step("raster_loaded", raster_menu=menu)
    return layer


def search(plugin):
    plugin.dock_action.trigger()
    idle(plugin)
    dock = plugin.dock
    dock.kSpin.setValue(8)
    step("dock_open", index=dock.index_summary(), run=dock.runCombo.currentText())
    QTest.mouseClick(dock.queryEdit, Qt.LeftButton)
    QTest.keyClicks(dock.queryEdit, QUERY)
    started = time.perf_counter()
    QTest.keyClick(dock.queryEdit, Qt.Key_Return)
    idle(plugin)
    rendered()
    seconds = time.perf_counter() - started
    layer = plugin.search.results.layer()
    rows = [dock.resultsList.item(i).text().replace("\n", " | ") for i in range(dock.resultsList.count())]
    assert rows and layer is not None and layer.featureCount() == len(dock.hits), (rows, dock.statusLabel.text())
    settle(0.3)
    # The first search starts the worker (seconds): QGIS adds its "Task complete" notice; the plugin removes it.
    texts = bar_texts()
    assert not qgis_task_notices(texts), texts
    step("search", query=QUERY, rows=rows, status=dock.statusLabel.text(), features=layer.featureCount(),
         enter_to_painted_s=round(seconds, 3), bar=texts)


def click_result(plugin):
    results = plugin.dock.resultsList
    first = plugin.dock.hits[0]
    QTest.mouseClick(results.viewport(), Qt.LeftButton, Qt.NoModifier,
                     results.visualItemRect(results.item(0)).center())
    rendered()
    extent = iface.mapCanvas().extent()
    assert extent.contains(first.rectangle()), "the map did not zoom to the clicked result"
    step("result_clicked", tile=first.tile_id, extent=extent.toString(1))


def inspect(plugin, layer):
    iface.mapCanvas().setExtent(layer.extent())
    rendered()
    target = plugin.dock.hits[1]
    QTest.mouseClick(toolbar_button(plugin, plugin.inspect_action), Qt.LeftButton)
    assert iface.mapCanvas().mapTool() is plugin.inspect_tool
    pixel = pixel_of(target.rectangle().center())
    QTest.mousePress(iface.mapCanvas().viewport(), Qt.LeftButton, Qt.NoModifier, pixel)
    QTest.mouseRelease(iface.mapCanvas().viewport(), Qt.LeftButton, Qt.NoModifier, pixel)
    idle(plugin)
    rendered()
    dialog = plugin.captions_dialog
    assert dialog is not None and dialog.isVisible(), f"no captions dialog: {bar_texts()}"
    assert target.tile_id in dialog.titleLabel.text(), dialog.titleLabel.text()
    dialog.move(20, 140)  # over the browser panel: the clicked tile stays in view
    settle(0.2)
    step("inspect", tile=target.tile_id, title=dialog.titleLabel.text(),
         captions=dialog.captionsView.toPlainText()[:400])
    return dialog


def similar(plugin, dialog):
    QTest.mouseClick(dialog.similarButton, Qt.LeftButton)
    idle(plugin)
    rendered()
    status = plugin.dock.statusLabel.text()
    assert "similar to tile" in status and plugin.dock.hits, status
    step("similar", status=status, rows=plugin.dock.resultsList.count())


def clear(plugin, layer):
    plugin.captions_dialog.close()
    iface.mapCanvas().setExtent(layer.extent())
    rendered()
    tile = plugin.search.outcome.hits[0].rectangle()
    before = outline_orange(tile)
    QTest.mouseClick(plugin.dock.clearButton, Qt.LeftButton)
    painted_by_itself()  # a forced redraw here would hide a canvas left showing the old highlight
    after = outline_orange(tile)
    assert before > 0 and after == 0, (before, after)
    assert plugin.dock.resultsList.count() == 0 and plugin.search.results.layer() is None
    step("cleared", outline_pixels_before=before, outline_pixels_after=after, bar=bar_texts())


def index_another(plugin):
    """Index a second raster while the dock searches every index: the new one is searched along (no
    offer), the mosaic stays ticked; QGIS's own "Task complete" notice for our task does not stay on the bar."""
    searched = plugin.dock.current_db()
    small = QgsRasterLayer(SMALL_RASTER, "small")
    QgsProject.instance().addMapLayer(small)
    iface.setActiveLayer(small)
    QgsProject.instance().setDirty(False)
    QTest.mouseClick(toolbar_button(plugin, plugin.index_action), Qt.LeftButton)
    dialog = plugin.index_dialog
    wait(lambda: dialog.isVisible(), 10, "the Index layer dialog")
    QTest.mouseClick(dialog.testRadio, Qt.LeftButton)
    dialog.tileSizeSpin.setValue(64)
    dialog.variantsSpin.setValue(1)
    settle(0.2)
    shoot("index_dialog")
    QTest.mouseClick(dialog.buttonBox.button(dialog.buttonBox.Ok), Qt.LeftButton)
    idle(plugin, 300)
    settle(0.5)
    texts = bar_texts()
    ticked = [Path(db).name for db in plugin.dock.selected_dbs()]
    assert searched in plugin.dock.selected_dbs(), "the dock unticked the index the user searched"
    assert "small.tilescribe.sqlite" in ticked, ticked
    assert not qgis_task_notices(texts), texts
    step("indexed_another", bar=texts, dock_index=plugin.dock.index_summary())
    QgsProject.instance().removeMapLayer(small.id())
    QgsProject.instance().setDirty(False)


def click_check(widget, row):
    """A real click on the check box of a list row."""
    rect = widget.visualItemRect(widget.item(row))
    QTest.mouseClick(widget.viewport(), Qt.LeftButton, Qt.NoModifier, QPoint(rect.left() + 10, rect.center().y()))


def type_into(edit, text, enter=True):
    QTest.mouseClick(edit, Qt.LeftButton)
    edit.selectAll()
    QTest.keyClicks(edit, text)
    if enter:
        QTest.keyClick(edit, Qt.Key_Return)


def index_project(plugin, mosaic):
    """Issue 20: a saved project with three rasters and an XYZ basemap; Index layer, All rasters in the
    project, the test model: the basemap is rendered over an extent typed into QGIS's extent box, and the
    four layers go into one project index, one after another."""
    project = QgsProject.instance()
    layers = [QgsRasterLayer(NEON_RASTER, "neon forest"), QgsRasterLayer(SMALL_RASTER, "small"),
              QgsRasterLayer(XYZ_URI, "s2 basemap (XYZ)", "wms")]
    for layer in layers:
        assert layer.isValid(), layer.source()
        project.addMapLayer(layer)
    basemap = layers[-1]
    iface.setActiveLayer(basemap)
    extent = QgsRectangle(*XYZ_EXTENT)
    iface.mapCanvas().setExtent(extent.buffered(extent.width() * 0.2))
    rendered()
    assert project.write(PROJECT_FILE), f"cannot save {PROJECT_FILE}"
    QTest.mouseClick(toolbar_button(plugin, plugin.index_action), Qt.LeftButton)
    dialog = plugin.index_dialog
    wait(lambda: dialog.isVisible(), 10, "the Index layer dialog")
    box = dialog.allRastersCheck
    QTest.mouseClick(box, Qt.LeftButton, Qt.NoModifier, QPoint(8, box.height() // 2))
    fields = dialog.renderFields
    assert fields.isVisible(), "no extent and resolution for the web layer"
    for name, value in zip(("mXMinLineEdit", "mYMinLineEdit", "mXMaxLineEdit", "mYMaxLineEdit"), XYZ_EXTENT):
        type_into(fields.extentBox.findChild(QLineEdit, name), f"{value:.2f}")
        assert dialog.isVisible(), "Enter in a coordinate field started indexing"
    type_into(fields.resolutionSpin.lineEdit(), XYZ_RESOLUTION)
    QTest.mouseClick(dialog.testRadio, Qt.LeftButton)
    type_into(dialog.tileSizeSpin.lineEdit(), "1024", enter=False)  # Enter there is Index, as anywhere else
    dialog.variantsSpin.setValue(1)
    settle(0.3)
    checked = [layer.name() for layer in dialog.checked_layers()]
    estimate, target = fields.estimateLabel.text(), dialog.indexFile.filePath()
    assert len(checked) == 4 and target.endswith("survey.tilescribe.sqlite"), (checked, target)
    assert "tile of 1024 px" in estimate and "MB" in estimate, estimate
    shoot("index_all_dialog")
    QTest.mouseClick(dialog.buttonBox.button(dialog.buttonBox.Ok), Qt.LeftButton)
    seen = []  # what the bar said while the queue ran ("Rendering…: layer 1 of 4")

    def watch():
        for text in bar_texts():
            if "of 4" in text and text not in seen:
                seen.append(text)
                if len(seen) == 2:
                    shoot("index_all_running")

    wait(lambda: not plugin.queue.running and not plugin.runner.tasks, 400, "indexing the project", watch)
    settle(0.5)
    texts = bar_texts()
    assert any(t.startswith("Indexed 4 layers into") for t in texts), texts
    step("indexed_all", layers=checked, estimate=estimate, index=target, progress=seen, bar=texts,
         rendered=[p.name for p in Path(PROJECT_FILE).parent.glob("*.tif") if p.name.startswith("s2_basemap")])
    project.setDirty(False)
    return layers


def search_project(plugin, mosaic, layers):
    """One query over the project index: hits from several layers, each one outlined on the map."""
    dock = plugin.dock
    labels = {dock.indexList.item(row).text(): row for row in range(dock.indexList.count())}
    own = next(label for label in labels if label.startswith("project"))
    for label, row in labels.items():  # search the project index alone: the mosaic's human captions aside
        if (dock.indexList.item(row).checkState() == Qt.Checked) != (label == own):
            click_check(dock.indexList, row)
    assert [Path(db).name for db in dock.selected_dbs()] == ["survey.tilescribe.sqlite"], dock.selected_dbs()
    dock.kSpin.setValue(30)
    QTest.mouseClick(dock.queryEdit, Qt.LeftButton)
    dock.queryEdit.clear()
    QTest.keyClicks(dock.queryEdit, PROJECT_QUERY)
    QTest.keyClick(dock.queryEdit, Qt.Key_Return)
    idle(plugin)
    rendered()
    hits = dock.hits
    rasters = sorted({Path(hit.raster).name for hit in hits})
    layer = plugin.search.results.layer()
    assert len(rasters) >= 3 and layer is not None and layer.featureCount() == len(hits), (rasters, len(hits))
    shoot("project_search")
    outlined = {}
    canvas = iface.mapCanvas()
    for raster_layer in [mosaic] + layers:  # each layer in view: its hits are painted in highlight orange
        to_canvas = QgsCoordinateTransform(raster_layer.crs(), canvas.mapSettings().destinationCrs(),
                                           QgsProject.instance())
        area = to_canvas.transformBoundingBox(raster_layer.extent()) if raster_layer is not layers[-1] \
            else QgsRectangle(*XYZ_EXTENT)
        canvas.setExtent(area.buffered(area.width() * 0.05))
        rendered()
        image = canvas.viewport().grab().toImage()
        orange = sum(1 for x in range(0, image.width(), 3) for y in range(0, image.height(), 3)
                     if _orange(QColor(image.pixel(x, y))))
        outlined[raster_layer.name()] = orange
    shoot("project_search_basemap")
    assert sum(1 for n in outlined.values() if n > 0) >= 3, outlined
    step("project_search", query=PROJECT_QUERY, hits=len(hits), rasters=rasters, status=dock.statusLabel.text(),
         orange_pixels_per_layer=outlined)


def _orange(colour):
    return colour.red() > 200 and colour.green() < 130 and colour.blue() < 80


def search_again_and_quit(plugin):
    """Quit with results on the map: QGIS must ask nothing (no 'save the scratch layer?')."""
    QTest.keyClicks(plugin.dock.queryEdit, " ")
    QTest.keyClick(plugin.dock.queryEdit, Qt.Key_Return)
    idle(plugin)
    rendered()
    quit_qgis()


def run():
    plugin = plugins["tilescribe"]
    layer = load_raster()
    search(plugin)
    click_result(plugin)
    similar(plugin, inspect(plugin, layer))
    clear(plugin, layer)
    index_another(plugin)
    search_project(plugin, layer, index_project(plugin, layer))
    search_again_and_quit(plugin)


run_session(run)
