"""Headless plugin session that screenshots the search dock over the map, the index dialog and a tile's captions.

Usage: .venv/bin/python scripts/screenshots.py [OUT_DIR]   (default: build/screenshots)

It indexes the UCM mosaic (../shared/data) from its human captions with the CLI, in its
own process, then drives the plugin as a user would. It also writes session.json, which
lists the model libraries the QGIS process imported: there must be none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest.mock import MagicMock

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before the first Qt import

ROOT = Path(__file__).resolve().parents[1]
MOSAIC_DIR = ROOT.parent / "shared" / "data" / "ucm_captions_test"
QUERY = "an airplane parked at an airport"
HEAVY_MODULES = ("torch", "sentence_transformers", "llama_cpp", "transformers", "huggingface_hub")


def build_index(work: Path) -> Path:
    """A symlink to the mosaic with its index beside it (captions 1-2 of each tile)."""
    from tilescribe.devtools.mosaic_demo import load_mosaic_ground_truth, write_import_file

    raster = work / "ucm_mosaic.tif"
    raster.symlink_to(MOSAIC_DIR / "ucm_grid_mosaic_synthetic_georef.tif")
    captions = write_import_file(load_mosaic_ground_truth(MOSAIC_DIR / "ucm_grid_mosaic_tiles.json"),
                                 work / "captions.jsonl", variants=2)
    # The CLI runs in its own process: this one plays QGIS and must not load the embedder.
    run = subprocess.run([sys.executable, "-m", "tilescribe.plugin.cli", "import-captions", "--raster", str(raster),
                          "--captions", str(captions), "--db", str(work / "ucm_mosaic.tilescribe.sqlite")],
                         capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        raise SystemExit(f"screenshots: building the index failed:\n{run.stdout}{run.stderr}")
    return raster


def make_iface():
    """A QGIS-like main window: map canvas in the middle, docks at the side, a message bar."""
    from qgis.core import QgsProject
    from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsMapCanvas, QgsMessageBar
    from qgis.PyQt.QtWidgets import QMainWindow

    window = QMainWindow()
    window.resize(1280, 760)
    canvas = QgsMapCanvas(window)
    window.setCentralWidget(canvas)
    window.bridge = QgsLayerTreeMapCanvasBridge(QgsProject.instance().layerTreeRoot(), canvas)
    iface = MagicMock(name="iface")
    iface.mainWindow.return_value = window
    iface.mapCanvas.return_value = canvas
    iface.messageBar.return_value = QgsMessageBar(window)
    iface.addToolBar.side_effect = window.addToolBar
    iface.addDockWidget.side_effect = window.addDockWidget
    iface.removeDockWidget.side_effect = window.removeDockWidget
    window.show()
    return iface


def wait(app, condition, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the plugin did not finish in time")
        app.processEvents()
        time.sleep(0.02)


def render(app, canvas) -> None:
    canvas.refresh()
    wait(app, lambda: not canvas.isDrawing(), 60)
    for _ in range(20):  # let the dock and labels paint
        app.processEvents()
        time.sleep(0.01)


def shoot_dock(app, iface, plugin, raster: Path, out: Path) -> Path:
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(str(raster), "UCM mosaic")
    QgsProject.instance().addMapLayer(layer)
    iface.activeLayer.return_value = layer
    plugin.dock.setUserVisible(True)
    plugin.dock.kSpin.setValue(8)
    plugin.dock.queryEdit.setText(QUERY)
    task = plugin.search.search()
    wait(app, lambda: task not in plugin.runner.tasks)
    iface.mapCanvas().setExtent(layer.extent())  # the whole raster: where the hits lie in it
    render(app, iface.mapCanvas())
    path = out / "dock_results.png"
    iface.mainWindow().grab().save(str(path))
    return path


def shoot_captions(app, iface, plugin, out: Path) -> Path:
    first = plugin.dock.hits[0]
    task = plugin.inspect_at(first.rectangle().center())
    wait(app, lambda: task not in plugin.runner.tasks)
    dialog = plugin.captions_dialog
    render(app, iface.mapCanvas())
    path = out / "inspect_captions.png"
    dialog.grab().save(str(path))
    return path


def shoot_index_dialog(app, plugin, out: Path) -> Path:
    dialog = plugin.index_layer()
    dialog.tileSizeSpin.setValue(256)
    for _ in range(10):
        app.processEvents()
    path = out / "index_dialog.png"
    dialog.grab().save(str(path))
    dialog.reject()
    return path


def session(out: Path, work: Path) -> dict:
    from qgis.core import QgsProject
    from qgis.testing import start_app

    app = start_app(cleanup=False)  # exitQgis() at exit can crash; nothing is left to clean
    import tilescribe

    raster = build_index(work)
    iface = make_iface()
    plugin = tilescribe.classFactory(iface)
    plugin.initGui()
    shots = [shoot_dock(app, iface, plugin, raster, out), shoot_captions(app, iface, plugin, out),
             shoot_index_dialog(app, plugin, out)]
    worker = plugin._client._process.popen
    plugin.unload()
    QgsProject.instance().clear()
    return {"screenshots": [str(p) for p in shots], "query": QUERY,
            "heavy_modules": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY_MODULES),
            "worker_stopped": worker.poll() is not None}


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "build" / "screenshots"
    if not MOSAIC_DIR.is_dir():
        print(f"screenshots: the UCM mosaic is not here ({MOSAIC_DIR}).", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tilescribe-shots-") as work:
        report = session(out, Path(work))
    (out / "session.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if not report["heavy_modules"] and report["worker_stopped"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
