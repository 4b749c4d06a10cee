"""The real QGIS application, the plugin installed from its ZIP, a user's session, screenshots of each step.

Usage: .venv/bin/python scripts/gui_smoke.py [--first-run] [OUT_DIR]
       (default OUT_DIR: $GUI_SMOKE_OUT, else gui-smoke/ or gui-first-run/)

It builds the ZIP (scripts/package.py) and unpacks it into a throw-away QGIS profile with the
plugin enabled, then starts `qgis` under Xvfb with a session script that drives the plugin with
real Qt events and writes OUT_DIR/NN_<step>.png and OUT_DIR/report.json. Exit status 0 only when
every step passed, QGIS logged no Python error and quitting asked nothing.

Default: the worker Python is set to this Python, the UCM mosaic is indexed from its human
captions (as scripts/demo.py does) and scripts/gui_smoke_session.py searches, inspects, clears.
--first-run: a user with nothing set up: no worker Python, a fresh HOME (no pip cache, no test
model), and scripts/gui_first_run_session.py clicks the dock's Set up offer, runs the setup task
(the real package index; llama-cpp-python from the wheel cache) and indexes and searches a small
raster with the test model. Exit status 77 when no llama-cpp-python wheel is cached.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from package import build as build_zip  # noqa: E402
from screenshots import MOSAIC_DIR, build_index  # noqa: E402

SHARED_RASTERS = MOSAIC_DIR.parent / "rasters"  # ../shared/data/rasters

SCREEN = "1600x1000x24"
QGIS_TIMEOUT_S = 420
FIRST_RUN_TIMEOUT_S = 1200  # the setup's pip runs are most of it: 2-5 minutes on 2 busy cores
NO_WHEEL = 77  # what test runners read as "skipped"


def install_profile(profiles: Path, archive: Path, worker_python: Optional[str]) -> Path:
    """A fresh profile `default` with the plugin unpacked from the ZIP and enabled."""
    profile = profiles / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(plugins)
    (profile / "QGIS").mkdir()
    worker = f"[tilescribe]\nworker_python={worker_python}\n\n" if worker_python else ""
    (profile / "QGIS" / "QGIS3.ini").write_text(
        f"[PythonPlugins]\ntilescribe=true\n\n{worker}"
        "[qgis]\nshowTips322=false\ncheckVersion=false\n", encoding="utf-8")
    return plugins / "tilescribe"


def small_raster(path: Path, size: int) -> Path:
    """A size x size px GeoTIFF, for the Index layer step with the test model."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    data = np.random.default_rng(0).integers(1, 200, size=(3, size, size)).astype("uint8")
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32618", transform=from_origin(500000.0, 4200000.0, 1.0, 1.0)) as ds:
        ds.write(data)
    return path


def run_qgis(profiles: Path, session: str, out: Path, extra_env: dict, timeout_s: float) -> subprocess.CompletedProcess:
    """`qgis --code session` under Xvfb, in a process group of its own: on a timeout the whole group
    (xvfb-run, Xvfb, qgis, the worker) is killed, not only xvfb-run."""
    env = {key: value for key, value in os.environ.items() if key not in ("QT_QPA_PLATFORM", "PYTHONPATH")}
    env.update(GUI_SMOKE_OUT=str(out), GUI_SMOKE_SCRIPTS=str(ROOT / "scripts"), HF_HUB_OFFLINE="1",
               OMP_WAIT_POLICY="PASSIVE", **extra_env)
    command = ["xvfb-run", "-a", "-s", f"-screen 0 {SCREEN}", "qgis", "--profiles-path", str(profiles),
               "--nologo", "--noversioncheck", "--code", str(ROOT / "scripts" / session)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        stderr += f"\ngui-smoke: QGIS was still running after {timeout_s:.0f} s: killed"
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def kill_leftovers(work: Path) -> list:
    """Processes still running from the throw-away folder (a pip or worker of the profile's
    environment, which run in sessions of their own): killed by pid, and listed as a failure."""
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(work).encode() in arg for arg in argv):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(b" ".join(argv).decode(errors="replace")[:200])
            except OSError:
                pass
    return killed


def left_beside(work: Path) -> list:
    """After QGIS quit: SQLite's -wal/-shm and indexing .lock files are ours to remove (issue 20)."""
    return [f"left beside an index: {path.name}" for path in work.glob("*.tilescribe.sqlite*")
            if path.name.endswith(("-wal", "-shm", ".lock"))]


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


def cached_llama_wheel() -> Optional[Path]:
    """The llama-cpp-python wheel the setup would take from the cache (`make setup` builds it once)."""
    from tilescribe.plugin.bootstrap.builds import choose_build, detect_facts
    from tilescribe.plugin.bootstrap.installer import SetupOptions, cached_llama_wheel as find
    from tilescribe.plugin.bootstrap.spec import load_spec

    spec = load_spec(ROOT)
    choice = choose_build(detect_facts(platform.system(), platform.machine(), os.environ), spec, want_gpu=False)
    return find(SetupOptions(ROOT, ROOT), spec, choice)


def smoke_session(work: Path, archive: Path, xyz) -> tuple:
    """The plugin with this Python as its worker and the UCM mosaic indexed: search, inspect, clear; then
    a project of three rasters and an XYZ basemap (`xyz`, a real tile server here) indexed at once."""
    install_profile(work / "qgis", archive, sys.executable)
    raster = build_index(work)
    neon = work / "neon.tif"
    shutil.copy(SHARED_RASTERS / "neon_osbs_029_10cm_deepforest.tif", neon)
    xmin, ymin, xmax, ymax = xyz.source.bounds
    cx, cy, half = (xmin + xmax) / 2, (ymin + ymax) / 2, 2500.0  # 5 km at 10 m: 500 x 500 px, one tile
    env = {"GUI_SMOKE_RASTER": str(raster), "GUI_SMOKE_SMALL_RASTER": str(small_raster(work / "small.tif", 64)),
           "GUI_SMOKE_NEON": str(neon), "GUI_SMOKE_XYZ_URI": xyz.layer_uri(zmax=16),
           "GUI_SMOKE_XYZ_EXTENT": f"{cx - half},{cy - half},{cx + half},{cy + half}",
           "GUI_SMOKE_XYZ_RESOLUTION": "10", "GUI_SMOKE_PROJECT": str(work / "survey.qgz")}
    return "gui_smoke_session.py", env, QGIS_TIMEOUT_S


def first_run_session(work: Path, archive: Path, wheel: Path) -> tuple:
    """A user with nothing set up: no worker Python, a fresh HOME; the caches the setup reads from."""
    from tilescribe.plugin.bootstrap.platforms import cache_root

    install_profile(work / "qgis", archive, None)
    home = work / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "XDG_DATA_HOME": str(home / ".local" / "share"),
           "XDG_CONFIG_HOME": str(home / ".config"), "TILESCRIBE_WHEEL_CACHE": str(wheel.parents[1]),
           "TILESCRIBE_CACHE": str(cache_root(platform.system(), os.environ, Path.home())),
           "GUI_SMOKE_RASTER": str(small_raster(work / "first.tif", 128))}
    return "gui_first_run_session.py", env, FIRST_RUN_TIMEOUT_S


def preflight(first_run: bool) -> Optional[str]:
    if shutil.which("xvfb-run") is None or shutil.which("qgis") is None:
        return "needs `qgis` and `xvfb-run` on PATH (apt-get install qgis xvfb)."
    if not first_run and not MOSAIC_DIR.is_dir():
        return f"the UCM mosaic is not here ({MOSAIC_DIR})."
    return None


def main(argv: list[str]) -> int:
    first_run = "--first-run" in argv
    args = [arg for arg in argv if arg != "--first-run"]
    name = "gui-first-run" if first_run else "gui-smoke"
    out = Path(args[0] if args else os.environ.get("GUI_SMOKE_OUT", ROOT / name)).resolve()
    problem = preflight(first_run)
    if problem:
        print(f"{name}: {problem}", file=sys.stderr)
        return 1
    wheel = cached_llama_wheel() if first_run else None
    if first_run and wheel is None:
        print(f"{name}: skipped: no llama-cpp-python wheel cached for this CPU (`make setup` compiles one once).")
        return NO_WHEEL
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    xyz = None
    # Not in the temp folder: QGIS counts layers there as temporary and asks about them on quit.
    work = Path(tempfile.mkdtemp(prefix=f"{name}-work-", dir=ROOT / "build" if (ROOT / "build").is_dir()
                                 else ROOT))
    try:
        archive = build_zip(work / "dist")
        if not first_run:  # the basemap of the project step: tiles cut from a Sentinel-2 scene
            from tilescribe.devtools.xyz_tiles import XyzServer

            xyz = XyzServer(str(SHARED_RASTERS / "s2_eastern_shore_virginia_rgb_10m.tif")).start()
        session, env, timeout_s = first_run_session(work, archive, wheel) if first_run else \
            smoke_session(work, archive, xyz)
        prepared = time.perf_counter()
        qgis = run_qgis(work / "qgis", session, out, env, timeout_s)
        leftovers = kill_leftovers(work)
        beside = left_beside(work)
    finally:
        if xyz is not None:
            xyz.stop()
        shutil.rmtree(work, ignore_errors=True)
    ok, report = verdict(out, qgis)
    if leftovers:
        ok, report["left_running"] = False, leftovers
    if beside:
        ok, report["left_beside_indexes"] = False, beside
    report["seconds"] = {"package_and_prepare": round(prepared - started, 1),
                         "qgis_session": round(time.perf_counter() - prepared, 1)}
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"{name}: {'PASSED' if ok else 'FAILED'}; screenshots in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
