"""Runs inside the real QGIS application (`qgis --code`), started by scripts/gui_smoke.py.

Drives the installed plugin with real Qt events, as a user would: load the raster, open the
dock, type a query + Enter, click a result, inspect a tile on the canvas, find similar tiles,
clear, then quit QGIS. Saves a screenshot of the whole screen after each step and writes
report.json; anything QGIS logs under "Python error" fails the run.
"""

import json
import os
import time
import traceback
from pathlib import Path

from qgis.core import QgsApplication, QgsPointXY, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QPoint, Qt, QTimer
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication, QLabel, QPushButton
from qgis.utils import iface, plugins

OUT = Path(os.environ["GUI_SMOKE_OUT"])
RASTER = os.environ["GUI_SMOKE_RASTER"]
SMALL_RASTER = os.environ["GUI_SMOKE_SMALL_RASTER"]  # one 64 px tile: indexed with the test model
QUERY = os.environ.get("GUI_SMOKE_QUERY", "an airplane parked at an airport")
REPORT = {"steps": [], "python_errors": [], "messages": [], "screenshots": []}


def log_message(message, tag, level):
    if tag.startswith("Python"):
        REPORT["python_errors"].append(f"[{tag}] {message}")
    elif tag == "TileScribe":
        REPORT["messages"].append(message)


QgsApplication.messageLog().messageReceived.connect(log_message)


def record_bar_item(_widget):
    """Every notice QGIS itself puts on the bar (ours have no title), to see which were taken off."""
    for item in iface.messageBar().items():
        if item.title():
            notice = f"{item.title()}: {item.text()}"
            if notice not in REPORT.setdefault("qgis_notices", []):
                REPORT["qgis_notices"].append(notice)


iface.messageBar().widgetAdded.connect(record_bar_item)


def wait(condition, timeout_s=120.0, what="the plugin"):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not finish within {timeout_s:.0f} s")
        QApplication.processEvents()
        time.sleep(0.01)


def settle(seconds=0.3):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def painted_by_itself():
    """Until the canvas is idle, without asking it to redraw: what the plugin left it showing."""
    canvas = iface.mapCanvas()
    settle(0.5)
    wait(lambda: not canvas.isDrawing(), 60, "the map canvas")
    settle(0.2)


def rendered():
    """Until the canvas has drawn what it shows now: one fresh render, started and finished."""
    canvas = iface.mapCanvas()
    done = []
    count = lambda: done.append(1)  # noqa: E731
    canvas.mapCanvasRefreshed.connect(count)
    canvas.refresh()
    wait(lambda: done and not canvas.isDrawing(), 60, "the map canvas")
    canvas.mapCanvasRefreshed.disconnect(count)
    settle(0.2)


def shoot(name):
    path = OUT / f"{len(REPORT['screenshots']) + 1:02d}_{name}.png"
    QApplication.primaryScreen().grabWindow(0).save(str(path))
    REPORT["screenshots"].append(path.name)


def step(name, **facts):
    REPORT["steps"].append({"step": name, **facts})
    shoot(name)


def bar_texts():
    texts = []
    for item in iface.messageBar().items():
        label = item.findChild(QLabel, "tilescribeMessageText")
        texts.append(label.text() if label is not None else f"{item.title()}: {item.text()}")
    return texts


def pixel_of(point):
    pixel = iface.mapCanvas().getCoordinateTransform().transform(point)
    return QPoint(round(pixel.x()), round(pixel.y()))


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


def idle(plugin, timeout_s=180.0):
    wait(lambda: not plugin.runner.tasks, timeout_s, "the plugin's tasks")


def load_raster():
    window = iface.mainWindow()
    window.setGeometry(QApplication.primaryScreen().availableGeometry())  # Xvfb has no window manager
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
    step("dock_open", index=dock.indexCombo.currentText(), run=dock.runCombo.currentText())
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
    assert not [t for t in texts if t.startswith(("Task complete", "Task failed"))], texts
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
    button = iface.mainWindow().findChild(type(plugin.toolbar), "TileScribeToolbar").widgetForAction(
        plugin.inspect_action)
    QTest.mouseClick(button, Qt.LeftButton)
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
    """Index a second raster while the dock searches the mosaic: the dock keeps its index and offers
    the new one; QGIS's own "Task complete" notice for our task does not stay on the bar."""
    searched = plugin.dock.current_db()
    small = QgsRasterLayer(SMALL_RASTER, "small")
    QgsProject.instance().addMapLayer(small)
    iface.setActiveLayer(small)
    QgsProject.instance().setDirty(False)
    toolbar = iface.mainWindow().findChild(type(plugin.toolbar), "TileScribeToolbar")
    QTest.mouseClick(toolbar.widgetForAction(plugin.index_action), Qt.LeftButton)
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
    assert plugin.dock.current_db() == searched, "the dock switched index under the user"
    buttons = [button.text() for button in iface.messageBar().findChildren(QPushButton)]
    assert "Search small.tilescribe.sqlite" in buttons, (buttons, texts)
    assert not [t for t in texts if t.startswith(("Task complete", "Task failed"))], texts
    step("indexed_another", bar=texts, dock_index=plugin.dock.indexCombo.currentText())
    QgsProject.instance().removeMapLayer(small.id())
    QgsProject.instance().setDirty(False)


def quit_qgis(plugin):
    """Quit with results on the map: QGIS must ask nothing (no 'save the scratch layer?')."""
    QTest.keyClicks(plugin.dock.queryEdit, " ")
    QTest.keyClick(plugin.dock.queryEdit, Qt.Key_Return)
    idle(plugin)
    rendered()
    REPORT["dirty_before_quit"] = QgsProject.instance().isDirty()
    finish(ok=True)
    QTimer.singleShot(4000, prompt_watchdog)
    iface.actionExit().trigger()


def prompt_watchdog():
    """Still running 4 s after Quit: a dialog asks something. Record it, answer it, fail."""
    modal = QApplication.activeModalWidget()
    text = " ".join(label.text() for label in modal.findChildren(QLabel) if label.text()) if modal else ""
    REPORT["quit_prompt"] = f"{modal.windowTitle() if modal else '?'}: {text}"
    shoot("quit_prompt")
    finish(ok=False)
    os._exit(3)


def finish(ok):
    REPORT["ok"] = ok and not REPORT["python_errors"]
    (OUT / "report.json").write_text(json.dumps(REPORT, indent=2, ensure_ascii=False))


def run():
    plugin = plugins["tilescribe"]
    try:
        layer = load_raster()
        search(plugin)
        click_result(plugin)
        similar(plugin, inspect(plugin, layer))
        clear(plugin, layer)
        index_another(plugin)
        quit_qgis(plugin)
    except Exception:
        REPORT["failure"] = traceback.format_exc()
        shoot("failure")
        finish(ok=False)
        os._exit(2)


QTimer.singleShot(500, run)
