"""QGIS fixtures: one headless QgsApplication per session, a test iface, a clean project per test."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from unittest.mock import MagicMock

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before the first qgis import
# QGIS's authentication database in a temp folder, never the user's (test_qgis_postgres sets a master
# password and stores an auth configuration in it).
os.environ.setdefault("QGIS_AUTH_DB_DIR_PATH", tempfile.mkdtemp(prefix="tilescribe-qgis-auth-"))

import pytest

NEON = "rasters/neon_osbs_029_10cm_deepforest.tif"  # 400 x 400 px, EPSG:32617: 200 px tiles -> 4
TILE_CAPTIONS = [  # the 4 tiles of NEON at 200 px, row by row: what a person sees in each
    ["dense green tree canopy", "a forest of tall pines"],
    ["a sandy clearing between trees", "bare sand with a few shrubs"],
    ["a dirt road crossing the forest", "a track through the woods"],
    ["dark water of a small pond", "a wet marsh among trees"],
]


@pytest.fixture(scope="session")
def qgis_app():
    from qgis.core import QgsApplication
    from qgis.testing import start_app

    # cleanup=False: exitQgis() at interpreter exit segfaults (exit 139) after "N passed".
    app = start_app(cleanup=False)
    yield app
    # Leave nothing running for interpreter exit: task threads done, finished() delivered.
    for _ in range(500):
        app.processEvents()
        if not QgsApplication.taskManager().countActiveTasks():
            break
        time.sleep(0.01)
    flush_deletes()


@pytest.fixture(scope="session")
def qapp(qgis_app):
    """pytest-qt uses the QgsApplication instead of making its own QApplication."""
    return qgis_app


@pytest.fixture(autouse=True)
def clean_qgis(qgis_app):
    """A cleared project and default TileScribe settings for every test."""
    from qgis.core import QgsProject, QgsSettings

    QgsSettings().remove("tilescribe")
    yield
    QgsProject.instance().clear()
    QgsSettings().remove("tilescribe")
    flush_deletes()


def flush_deletes() -> None:
    """Run pending deleteLater()s now: widgets left for interpreter exit crash it (exit 139)."""
    from qgis.PyQt.QtCore import QCoreApplication, QEvent

    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)


def _recording_bar(parent, log: list):
    """A real message bar that also logs each message in order (its items() are not in order)."""
    from qgis.core import Qgis
    from qgis.gui import QgsMessageBar

    class RecordingBar(QgsMessageBar):
        def pushMessage(self, title, text, *rest):
            level = next((arg for arg in rest if isinstance(arg, Qgis.MessageLevel)), Qgis.Info)
            log.append((level, f"{title}: {text}"))
            super().pushMessage(title, text, *rest)

        def pushItem(self, item):
            body = getattr(item, "body", None)  # the plugin's wrapped message: its label is what shows
            text = body.label.text() if body is not None else item.text()
            log.append((item.level(), f"TileScribe: {text}" if body is not None else f"{item.title()}: {text}"))
            super().pushItem(item)

    return RecordingBar(parent)


class FakeIface:
    """What the plugin uses of QgisInterface: real widgets where the plugin touches them."""

    def __init__(self):
        from qgis.core import QgsProject
        from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsMapCanvas
        from qgis.PyQt.QtWidgets import QMainWindow, QVBoxLayout, QWidget

        self.window = QMainWindow()
        self.window.resize(1200, 700)
        centre = QWidget(self.window)
        self.canvas = QgsMapCanvas(centre)
        self.canvas.setObjectName("theMapCanvas")
        self.window.setCentralWidget(centre)
        # As in QGIS: the layer tree decides what the canvas draws (results layer included).
        self.bridge = QgsLayerTreeMapCanvasBridge(QgsProject.instance().layerTreeRoot(), self.canvas)
        self.pushed = []  # (level, "title: text") in the order the plugin pushed them
        self.bar = _recording_bar(centre, self.pushed)
        layout = QVBoxLayout(centre)  # as in QGIS: the message bar above the map
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.bar)
        layout.addWidget(self.canvas, 1)
        self.mock = MagicMock(name="iface")
        self.mock.mainWindow.return_value = self.window
        self.mock.mapCanvas.return_value = self.canvas
        self.mock.messageBar.return_value = self.bar
        self.mock.addToolBar.side_effect = self.window.addToolBar
        self.mock.addDockWidget.side_effect = self.window.addDockWidget
        self.mock.removeDockWidget.side_effect = self.window.removeDockWidget
        self.mock.activeLayer.return_value = None
        self.window.show()  # offscreen: docks report visibility as in a real QGIS window

    def messages(self) -> list[tuple[int, str]]:
        """(level, "title: text") of every message pushed to the bar, oldest first."""
        return list(self.pushed)

    def close(self) -> None:
        self.bridge.deleteLater()
        self.bar.clearWidgets()
        self.window.close()
        self.window.deleteLater()
        flush_deletes()


@pytest.fixture
def fake_iface(qgis_app):
    iface = FakeIface()
    yield iface
    iface.close()


@pytest.fixture
def plugin(fake_iface):
    """The plugin loaded the way QGIS loads it: classFactory, then initGui."""
    import tilescribe

    instance = tilescribe.classFactory(fake_iface.mock)
    instance.initGui()
    yield instance
    if instance.dock is not None:  # the test did not unload it
        instance.unload()


@pytest.fixture
def neon_raster(shared_data, tmp_path) -> Path:
    """A copy of the NEON raster, so the index beside it is written in tmp, never in shared/."""
    target = tmp_path / "neon.tif"
    shutil.copy(shared_data / NEON, target)
    return target


@pytest.fixture
def add_raster(fake_iface):
    """Adds a raster layer to the project and shows it on the canvas in its CRS."""
    from qgis.core import QgsProject, QgsRasterLayer

    def add(path: Path, name: str = "neon"):
        layer = QgsRasterLayer(str(path), name)
        assert layer.isValid(), f"QGIS cannot read {path}"
        QgsProject.instance().addMapLayer(layer)
        fake_iface.canvas.setDestinationCrs(layer.crs())
        fake_iface.canvas.setLayers([layer])
        fake_iface.canvas.setExtent(layer.extent())
        fake_iface.mock.activeLayer.return_value = layer
        return layer

    return add


@pytest.fixture(scope="session")
def captioned_index(shared_data, tmp_path_factory, minilm) -> Path:
    """A copy of NEON with an index beside it holding the human captions above (real embedder)."""
    from helpers import build_index

    raster = tmp_path_factory.mktemp("captioned") / "neon.tif"
    shutil.copy(shared_data / NEON, raster)
    store, _ = build_index(raster.with_name("neon.tilescribe.sqlite"), raster, minilm, TILE_CAPTIONS, tile_size=200)
    store.close()
    return raster


@pytest.fixture(scope="module")
def shared_worker(qgis_app):
    """One worker for a module's searches: its embedder loads once, not once per test."""
    from tilescribe.plugin.qgis.settings import PLUGIN_DIR, PluginSettings
    from tilescribe.plugin.worker.client import WorkerClient

    client = WorkerClient(PluginSettings().python(), PLUGIN_DIR)
    yield client
    client.stop()


@pytest.fixture
def plugin_on_shared_worker(plugin, shared_worker):
    plugin._client = shared_worker
    yield plugin
    plugin._client = None  # unload must not stop the worker the next test uses


@pytest.fixture
def wait_task(qtbot):
    """Waits, processing Qt events (so finished() runs), until a task has handed over its result."""

    def wait(task, timeout_s: float = 120.0):
        done = []
        on_done = task.on_done
        # finished() reaches the GUI thread through the event loop, so wrapping now is never late.
        task.on_done = lambda result: (done.append(result), on_done(result))
        qtbot.waitUntil(lambda: bool(done), timeout=int(timeout_s * 1000))
        return done[0]

    return wait
