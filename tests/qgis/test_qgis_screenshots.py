"""scripts/screenshots.py: a whole plugin session in a fresh process, as QGIS would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_screenshots_and_no_model_library_in_the_qgis_process(shared_data, tmp_path):
    from qgis.PyQt.QtGui import QImage

    run = subprocess.run([sys.executable, str(REPO / "scripts" / "screenshots.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "session.json").read_text())
    # The models ran in the worker: QGIS's process never imported them.
    assert report["heavy_modules"] == []
    assert report["worker_stopped"] is True
    sizes = {}
    for name in ("dock_results.png", "index_dialog.png", "inspect_captions.png"):
        image = QImage(str(tmp_path / name))
        assert not image.isNull(), name
        sizes[name] = (image.width(), image.height())
    assert sizes["dock_results.png"][0] >= 1000  # the map and the dock side by side
