"""Runs inside the real QGIS application (`qgis --code`), started by `scripts/gui_smoke.py --first-run`.

A user who installed the plugin from its ZIP and has no environment: open the dock, click its
"Set up TileScribe…" offer, press Set up in the dialog, wait for the setup task (real pip), then
index a small raster with the test model and search it, with real mouse and key events. A
screenshot of the whole screen after each step, report.json at the end; anything QGIS logs under
"Python error", a dialog left behind the main window or a question on quit fails the run.
"""

import os
import sys
import time
from pathlib import Path

from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QDialogButtonBox
from qgis.utils import iface, plugins

sys.path.insert(0, os.environ["GUI_SMOKE_SCRIPTS"])
from gui_session_common import (REPORT, bar_texts, idle, maximise, on_screen,  # noqa: E402
                                qgis_task_notices, quit_qgis, rendered, run_session, settle, step,
                                toolbar_button, wait)

RASTER = os.environ["GUI_SMOKE_RASTER"]  # 128 x 128 px: 4 tiles of 64 px
QUERY = "a tile"
SETUP_TIMEOUT_S = float(os.environ.get("GUI_SMOKE_SETUP_TIMEOUT_S", 900))  # shorter: to try the cleanup


def visible_banner(ctl):
    return ctl.banners[0].isVisibleTo(ctl.banners[0].window())


def offer(plugin):
    """The dock, opened from its toolbar button, offers the setup: nothing else works yet."""
    from tilescribe.plugin.qgis.setup_task import OFFER_MISSING

    maximise()
    QTest.mouseClick(toolbar_button(plugin, plugin.dock_action), Qt.LeftButton)
    settle(0.5)
    ctl = plugin.environment_setup
    banner = ctl.banners[0]
    assert plugin.dock.isVisible() and visible_banner(ctl), "the dock shows no Set up offer"
    assert banner.label.text() == OFFER_MISSING, banner.label.text()
    hint = plugin.dock.indexList.item(0).text()
    assert plugin.dock.indexList.fontMetrics().horizontalAdvance(hint) <= plugin.dock.indexList.viewport().width(), \
        f"cut: {hint}"
    step("dock_offers_setup", offer=banner.label.text(), venv=str(ctl.venv))
    return ctl


def setup_dialog(plugin, ctl):
    QTest.mouseClick(ctl.banners[0].button, Qt.LeftButton)
    dialog = ctl.dialog
    wait(lambda: dialog is not None and dialog.isVisible(), 30, "the Set up TileScribe dialog")
    settle(0.5)
    assert on_screen(dialog), f"the setup dialog is not on top, inside the screen: {dialog.frameGeometry()}"
    ok = dialog.buttons.button(QDialogButtonBox.Ok)
    assert ok.text() == "Set up" and str(ctl.venv) in dialog.intro.text(), (ok.text(), dialog.intro.text())
    step("setup_dialog", plan=dialog.plan_label.text(), time=dialog.time_label.text(),
         python=dialog.pythonFile.filePath())
    return ok


def run_setup(plugin, ctl, ok):
    """Set up, then the task to its end; one screenshot as it starts, one half-way."""
    started = time.monotonic()
    QTest.mouseClick(ok, Qt.LeftButton)
    assert ctl.task is not None, "pressing Set up started no task"
    settle(2.0)
    texts = bar_texts()  # the message must show its text (it once showed an empty bar in QGIS)
    assert [t for t in texts if t.startswith("Setting up TileScribe's environment")], texts
    step("setting_up", banner=ctl.banners[0].label.text(), bar=texts)
    halfway = []

    def shoot_halfway():
        if not halfway and ctl.task is not None and ctl.task.progress() >= 50:
            halfway.append(ctl.banners[0].label.text())
            step("setting_up_halfway", banner=halfway[0])

    wait(lambda: ctl.task is None, SETUP_TIMEOUT_S, "Set up TileScribe", every=shoot_halfway)
    REPORT["setup_seconds"] = round(time.monotonic() - started, 1)
    settle(1.0)


def ready(plugin, ctl):
    from tilescribe.plugin.qgis.settings import read_settings

    assert ctl.failure is None, f"{ctl.failure.windowTitle()}: {ctl.failure.text()}"
    assert read_settings().environment == str(ctl.venv), read_settings()
    assert not visible_banner(ctl), f"the offer is still shown: {ctl.banners[0].label.text()}"
    texts = bar_texts()
    assert [t for t in texts if t.startswith("TileScribe is ready")], texts
    assert not qgis_task_notices(texts), texts
    step("ready", bar=texts, setup_seconds=REPORT["setup_seconds"])


def index_first_raster(plugin):
    """Index layer with the test model, 64 px tiles: the index dialog offers no setup any more."""
    layer = QgsRasterLayer(RASTER, "first")
    assert layer.isValid(), f"QGIS cannot read {RASTER}"
    QgsProject.instance().addMapLayer(layer)
    iface.setActiveLayer(layer)
    iface.mapCanvas().setExtent(layer.extent())
    settle(0.3)  # the layer tree marks the project modified one event-loop turn after the layer came
    QgsProject.instance().setDirty(False)  # as if just saved: quitting must then ask nothing
    rendered()
    QTest.mouseClick(toolbar_button(plugin, plugin.index_action), Qt.LeftButton)
    dialog = plugin.index_dialog
    wait(lambda: dialog.isVisible(), 10, "the Index layer dialog")
    assert not [item for item in dialog.messageBar.items() if item.widget() is not None], "still offers setup"
    QTest.mouseClick(dialog.testRadio, Qt.LeftButton)
    dialog.tileSizeSpin.setValue(64)
    settle(0.3)
    assert on_screen(dialog), f"the Index layer dialog is not on top: {dialog.frameGeometry()}"
    step("index_dialog", test_model=dialog.testRadio.isChecked(), tile_size=dialog.tileSizeSpin.value())
    QTest.mouseClick(dialog.buttonBox.button(QDialogButtonBox.Ok), Qt.LeftButton)
    idle(plugin, 300)
    settle(0.5)
    texts = bar_texts()
    assert [t for t in texts if "4 of 4 tiles captioned" in t], (texts, REPORT["messages"][-3:])
    assert not qgis_task_notices(texts), texts
    assert Path(plugin.dock.current_db()).name == "first.tilescribe.sqlite", plugin.dock.current_db()
    step("indexed", bar=texts, dock_index=plugin.dock.index_summary())


def first_search(plugin, ctl):
    dock = plugin.dock
    QTest.mouseClick(dock.queryEdit, Qt.LeftButton)
    QTest.keyClicks(dock.queryEdit, QUERY)
    QTest.keyClick(dock.queryEdit, Qt.Key_Return)
    idle(plugin)
    rendered()
    rows = [dock.resultsList.item(i).text().replace("\n", " | ") for i in range(dock.resultsList.count())]
    layer = plugin.search.results.layer()
    assert dock.hits and layer is not None and layer.featureCount() == len(dock.hits), (rows, dock.statusLabel.text())
    assert rows[0].startswith("Placeholder captions"), rows[0]  # the test model's run says so first
    python = plugin.client().hello()["python"]  # the worker that indexed and searched, already running
    assert python == str(ctl.venv / "bin" / "python"), python
    step("first_search", query=QUERY, rows=rows, status=dock.statusLabel.text(), worker_python=python,
         bar=bar_texts())


def stop_setup():
    """On a failure: cancel a running setup (it stops pip) so that nothing outlives QGIS."""
    ctl = plugins["tilescribe"].environment_setup
    if ctl is not None and ctl.task is not None:
        ctl.task.cancel()
        wait(lambda: ctl.task is None, 60, "the cancelled setup")
    plugins["tilescribe"]._stop_worker()


def run():
    plugin = plugins["tilescribe"]
    ctl = offer(plugin)
    run_setup(plugin, ctl, setup_dialog(plugin, ctl))
    ready(plugin, ctl)
    index_first_raster(plugin)
    first_search(plugin, ctl)
    quit_qgis()


run_session(run, cleanup=stop_setup)
