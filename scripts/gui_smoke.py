"""The real QGIS application, the plugin installed from its ZIP, a user's session, screenshots of each step.

Usage: .venv/bin/python scripts/gui_smoke.py [OUT_DIR]   (default: $GUI_SMOKE_OUT or gui-smoke/)

It builds the ZIP (scripts/package.py), unpacks it into a throw-away QGIS profile with the
plugin enabled and the worker Python set to this Python, indexes the UCM mosaic from its
human captions (`tilescribe import-captions`, as scripts/demo.py does), then starts
`qgis` under Xvfb with scripts/gui_smoke_session.py, which drives the plugin with real Qt
events and writes OUT_DIR/NN_<step>.png and OUT_DIR/report.json. Exit status 0 only when
every step passed, QGIS logged no Python error and quitting asked nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from package import build as build_zip  # noqa: E402
from screenshots import MOSAIC_DIR, build_index  # noqa: E402

SCREEN = "1600x1000x24"
QGIS_TIMEOUT_S = 420


def install_profile(profiles: Path, archive: Path) -> Path:
    """A fresh profile `default` with the plugin unpacked from the ZIP and enabled."""
    profile = profiles / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(plugins)
    (profile / "QGIS").mkdir()
    (profile / "QGIS" / "QGIS3.ini").write_text(
        "[PythonPlugins]\ntilescribe=true\n\n"
        f"[tilescribe]\nworker_python={sys.executable}\n\n"
        "[qgis]\nshowTips322=false\ncheckVersion=false\n", encoding="utf-8")
    return plugins / "tilescribe"


def small_raster(work: Path) -> Path:
    """A 64 x 64 px GeoTIFF beside the mosaic (one tile), for the Index layer step."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    path = work / "small.tif"
    data = np.random.default_rng(0).integers(1, 200, size=(3, 64, 64)).astype("uint8")
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                       crs="EPSG:32618", transform=from_origin(500000.0, 4200000.0, 1.0, 1.0)) as ds:
        ds.write(data)
    return path


def run_qgis(profiles: Path, raster: Path, out: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("QT_QPA_PLATFORM", "PYTHONPATH")}
    env.update(GUI_SMOKE_OUT=str(out), GUI_SMOKE_RASTER=str(raster), HF_HUB_OFFLINE="1",
               GUI_SMOKE_SMALL_RASTER=str(small_raster(raster.parent)),
               OMP_WAIT_POLICY="PASSIVE")
    command = ["xvfb-run", "-a", "-s", f"-screen 0 {SCREEN}", "qgis", "--profiles-path", str(profiles),
               "--nologo", "--noversioncheck", "--code", str(ROOT / "scripts" / "gui_smoke_session.py")]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=QGIS_TIMEOUT_S)


def verdict(out: Path, qgis: subprocess.CompletedProcess) -> tuple[bool, dict]:
    report_file = out / "report.json"
    if not report_file.is_file():
        return False, {"failure": "QGIS wrote no report", "stderr": qgis.stderr[-3000:]}
    report = json.loads(report_file.read_text())
    # A traceback printed by QGIS's Python outside the message log is an error too.
    stray = [line for line in qgis.stderr.splitlines() if line.startswith("Traceback")]
    if stray:
        report["python_errors"].append(qgis.stderr[-3000:])
    report["qgis_exit_code"] = qgis.returncode
    ok = bool(report.get("ok")) and not report["python_errors"] and qgis.returncode == 0
    return ok, report


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else os.environ.get("GUI_SMOKE_OUT", ROOT / "gui-smoke")).resolve()
    if not MOSAIC_DIR.is_dir():
        print(f"gui-smoke: the UCM mosaic is not here ({MOSAIC_DIR}).", file=sys.stderr)
        return 1
    if shutil.which("xvfb-run") is None or shutil.which("qgis") is None:
        print("gui-smoke: needs `qgis` and `xvfb-run` on PATH (apt-get install qgis xvfb).", file=sys.stderr)
        return 1
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    # Not in the temp folder: QGIS counts layers there as temporary and asks about them on quit.
    work = Path(tempfile.mkdtemp(prefix="gui-smoke-work-", dir=ROOT / "build" if (ROOT / "build").is_dir()
                                 else ROOT))
    try:
        archive = build_zip(work / "dist")
        install_profile(work / "qgis", archive)
        raster = build_index(work)
        indexed = time.perf_counter()
        qgis = run_qgis(work / "qgis", raster, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok, report = verdict(out, qgis)
    report["seconds"] = {"package_and_index": round(indexed - started, 1),
                         "qgis_session": round(time.perf_counter() - indexed, 1)}
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"gui-smoke: {'PASSED' if ok else 'FAILED'}; screenshots in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
