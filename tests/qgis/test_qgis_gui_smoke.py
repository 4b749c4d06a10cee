"""`make gui-smoke`: the real QGIS application under Xvfb, the plugin installed from its ZIP."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
STEPS = ["raster_loaded", "dock_open", "search", "result_clicked", "inspect", "similar", "cleared",
         "indexed_another"]


@pytest.mark.skipif(shutil.which("xvfb-run") is None or shutil.which("qgis") is None,
                    reason="needs the qgis application and xvfb-run")
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
    for name in report["screenshots"]:
        image = QImage(str(tmp_path / name))
        assert image.width() == 1600 and image.height() == 1000, name
