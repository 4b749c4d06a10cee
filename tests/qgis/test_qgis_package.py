"""`make package`: the ZIP has one tilescribe/ folder that QGIS's own Python loads as a plugin."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.qgis

REPO = Path(__file__).resolve().parents[2]
QGIS_PYTHON = "/usr/bin/python3"  # the interpreter QGIS embeds on Debian: no venv, no .pth
LOAD_SCRIPT = """
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from unittest.mock import MagicMock
from qgis.testing import start_app
app = start_app(cleanup=False)
from qgis.gui import QgsMapCanvas, QgsMessageBar
from qgis.PyQt.QtWidgets import QMainWindow
import tilescribe
window = QMainWindow(); canvas = QgsMapCanvas(window)
iface = MagicMock(); iface.mainWindow.return_value = window; iface.mapCanvas.return_value = canvas
iface.messageBar.return_value = QgsMessageBar(window); iface.addToolBar.side_effect = window.addToolBar
plugin = tilescribe.classFactory(iface)
plugin.initGui()
print("loaded", tilescribe.__file__, len(plugin.actions), "actions")
plugin.unload()
"""


def _build(tmp_path) -> Path:
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "package.py"), "--out", str(tmp_path / "dist")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    [archive] = (tmp_path / "dist").glob("tilescribe-*.zip")
    return archive


def test_zip_holds_the_plugin_and_nothing_else(tmp_path):
    archive = _build(tmp_path)
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "metadata.txt")
    general = metadata["general"]
    assert archive.name == f"tilescribe-{general['version']}.zip" == "tilescribe-0.1.0.zip"
    for key in ("name", "description", "about", "version", "qgisMinimumVersion", "author", "tags", "experimental",
                "icon"):
        assert general.get(key), f"metadata.txt lacks {key}"
    # No invented addresses: publishing keys are left out until real ones exist.
    text = (REPO / "metadata.txt").read_text(encoding="utf-8")
    assert "example." not in text and "PLACEHOLDER" not in text.upper()
    for key in ("email", "repository", "tracker", "homepage"):
        assert key not in general or "@" in general[key] or general[key].startswith("https://"), key
    names = zipfile.ZipFile(archive).namelist()
    assert {name.split("/")[0] for name in names} == {"tilescribe"}
    for required in ("__init__.py", "metadata.txt", "LICENSE", "plugin/qgis/plugin.py", "plugin/worker/server.py",
                     "ui/dock.ui", "ui/index_dialog.ui", "resources/icon.svg", "requirements.txt"):
        assert f"tilescribe/{required}" in names
    banned = ("tests/", ".venv/", ".git/", "__pycache__", ".pyc", ".sqlite", "demo-output/", ".gguf",
              "devtools/", "bench", "mosaic_demo")  # benchmarks and demo data stay in the checkout
    assert not [name for name in names if any(part in name for part in banned)]


@pytest.mark.skipif(not Path(QGIS_PYTHON).is_file(), reason="needs Debian's QGIS Python")
def test_qgis_python_loads_the_installed_zip(tmp_path):
    archive = _build(tmp_path)
    plugins = tmp_path / "plugins"
    zipfile.ZipFile(archive).extractall(plugins)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(plugins)  # what QGIS does with its profile's python/plugins folder
    run = subprocess.run([QGIS_PYTHON, "-c", LOAD_SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"loaded {plugins / 'tilescribe' / '__init__.py'} 4 actions" in run.stdout
