"""`make gui-smoke` and `make gui-first-run`: the real QGIS application under Xvfb, the plugin
installed from its ZIP; a user's session, and a first run that sets up the environment."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
needs_qgis_app = pytest.mark.skipif(shutil.which("xvfb-run") is None or shutil.which("qgis") is None,
                                    reason="needs the qgis application and xvfb-run")
STEPS = ["raster_loaded", "dock_open", "search", "result_clicked", "inspect", "similar", "cleared",
         "indexed_another", "indexed_all", "project_search"]
# "setting_up_halfway" is shot when the task passes 50 %: a run that jumps past it between two looks lacks it.
FIRST_RUN_STEPS = ["dock_offers_setup", "setup_dialog", "setting_up", "ready", "index_dialog", "indexed",
                   "first_search"]


@needs_qgis_app
def test_a_user_session_in_the_real_qgis(shared_data, tmp_path):
    from qgis.PyQt.QtGui import QImage

    run = subprocess.run([sys.executable, str(REPO / "scripts" / "gui_smoke.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and report["python_errors"] == [] and "quit_prompt" not in report
    assert [step["step"] for step in report["steps"]] == STEPS
    search = report["steps"][2]
    assert search["features"] == len(search["rows"]) == 8 and "airplane" in search["rows"][0]
    cleared = report["steps"][6]
    assert cleared["outline_pixels_before"] > 0 and cleared["outline_pixels_after"] == 0
    indexed_all, project = report["steps"][8], report["steps"][9]  # three rasters and an XYZ basemap, one index
    assert len(indexed_all["layers"]) == 4 and indexed_all["rendered"], indexed_all
    assert len(project["rasters"]) >= 3 and sum(1 for n in project["orange_pixels_per_layer"].values() if n > 0) >= 3
    for name in report["screenshots"]:
        image = QImage(str(tmp_path / name))
        assert image.width() == 1600 and image.height() == 1000, name


@needs_qgis_app
def test_a_first_run_from_the_zip_in_the_real_qgis(tmp_path):
    """No environment, a fresh HOME: the dock's offer, the setup dialog, the setup task with real pip
    (about 2 minutes), then Index layer with the test model and a search, all with real events.
    It replaces the headless click-path test, which ran the same setup with a test iface."""
    from qgis.PyQt.QtGui import QImage

    sys.path.insert(0, str(REPO / "scripts"))
    from gui_smoke import cached_llama_wheel

    if cached_llama_wheel() is None:
        pytest.skip("no llama-cpp-python wheel cached for this CPU (`make setup` compiles one once)")
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "gui_smoke.py"), "--first-run", str(tmp_path)],
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and report["python_errors"] == [] and "quit_prompt" not in report
    steps = {step["step"]: step for step in report["steps"]}
    assert [name for name in steps if name != "setting_up_halfway"] == FIRST_RUN_STEPS
    venv = steps["dock_offers_setup"]["venv"]
    assert venv.endswith("/qgis/profiles/default/tilescribe/venv")  # in the QGIS profile, not the checkout
    assert any(text.startswith(f"TileScribe is ready: its environment is {venv}") for text in steps["ready"]["bar"])
    assert any("4 of 4 tiles captioned" in text for text in steps["indexed"]["bar"])
    assert steps["first_search"]["worker_python"] == f"{venv}/bin/python"
    assert len(steps["first_search"]["rows"]) == 5  # the placeholder note, then the 4 tiles
    for name in report["screenshots"]:
        image = QImage(str(tmp_path / name))
        assert image.width() == 1600 and image.height() == 1000, name
