"""From the ZIP alone to a checked worker environment: a fresh HOME, a throw-away QGIS profile,
QGIS's own Python (/usr/bin/python3), the real package index, no `make setup`.

The llama-cpp-python wheel and llama-server come from the cache scripts/setup.sh (or an earlier
setup) fills (compiling them here takes 15-20 minutes); without them for this CPU the test is
skipped, saying so. The setup links that llama-server without compiling, as proven on this CPU,
and the test proves it once more through the new environment's Python.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tilescribe.plugin.bootstrap import builds, platforms
from tilescribe.plugin.bootstrap.installer import READY, environment_state
from tilescribe.plugin.bootstrap.llama_build import server_folder
from tilescribe.plugin.bootstrap.llama_variants import cpu_key, prove, read_record
from tilescribe.plugin.bootstrap.spec import load_spec

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
QGIS_PYTHON = Path("/usr/bin/python3")
SNAPSHOT = """
import json, site, os, importlib.metadata as md
dirs = [d for d in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(d)]
print(json.dumps({"dists": sorted(f"{d.metadata['Name']}=={d.version}" for d in md.distributions()),
                  "entries": {d: sorted(os.listdir(d)) for d in dirs}}))
"""


def cached_builds() -> tuple[Path | None, Path | None]:
    """(wheel, llama-server) of this CPU's best build, compiled before, or None each."""
    spec = load_spec(REPO)
    facts = builds.detect_facts(platform.system(), platform.machine(), os.environ)
    choice = builds.choose_build(facts, spec, want_gpu=False)
    folder = platforms.wheel_cache(platform.system(), os.environ, Path.home()) / choice.cache_folder
    found = sorted(folder.glob(f"llama_cpp_python-{spec.llama_version}-*.whl"))
    cache = platforms.cache_root(platform.system(), os.environ, Path.home())
    server = server_folder(cache, spec.llama_version, choice.variants[0]) / "llama-server"
    return (found[0] if found else None), (server if server.is_file() else None)


def snapshot(python: Path) -> dict:
    run = subprocess.run([str(python), "-c", SNAPSHOT], capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"]})
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def folder_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink()) / 1e6


def downloaded_mb(log: Path) -> float:
    """What pip's "Downloading NAME (SIZE)" lines add up to (files from local disk are not listed)."""
    units = {"kB": 1e-3, "MB": 1.0, "GB": 1e3}
    sizes = re.findall(r"Downloading \S+ \(([\d.]+) (kB|MB|GB)\)", log.read_text())
    return sum(float(size) * units[unit] for size, unit in sizes)


def unzip_plugin(tmp_path: Path) -> Path:
    build = subprocess.run([sys.executable, str(REPO / "scripts" / "package.py"), "--out", str(tmp_path / "dist")],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    [archive] = (tmp_path / "dist").glob("tilescribe-*.zip")
    plugins = tmp_path / "profile" / "python" / "plugins"
    zipfile.ZipFile(archive).extractall(plugins)
    return plugins


def fresh_environment(tmp_path: Path, plugins: Path, wheel_root: Path) -> dict:
    """Nothing of this session's: its own HOME (empty pip cache), only the machine's pip settings
    and setup.sh's caches of compiled llama-cpp-python wheels and llama-server builds."""
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if key.startswith("PIP_")}
    env.update(PATH=os.environ["PATH"], HOME=str(home), LANG="C.UTF-8", PYTHONPATH=str(plugins),
               TILESCRIBE_WHEEL_CACHE=str(wheel_root), QT_QPA_PLATFORM="offscreen", OMP_WAIT_POLICY="PASSIVE",
               TILESCRIBE_CACHE=str(platforms.cache_root(platform.system(), os.environ, Path.home())))
    return env


@pytest.mark.skipif(not QGIS_PYTHON.is_file(), reason="needs Debian's QGIS Python, /usr/bin/python3")
def test_zip_to_checked_environment_with_qgis_python(tmp_path):
    wheel, server_build = cached_builds()
    if wheel is None or server_build is None:
        pytest.skip("no llama-cpp-python wheel or llama-server cached for this CPU (run `make setup` once: it "
                    "compiles them in 15-20 minutes); compiling them here would not fit the test's time")
    plugins = unzip_plugin(tmp_path)
    env = fresh_environment(tmp_path, plugins, wheel.parents[1])
    before = snapshot(QGIS_PYTHON)
    start = time.monotonic()
    run = bootstrap(env, tmp_path)
    seconds = time.monotonic() - start
    print(run.stdout, run.stderr[-3000:], sep="\n")
    log = tmp_path / "profile" / "tilescribe" / "setup.log"
    print(f"bootstrap from the ZIP: {seconds:.0f} s; environment {folder_mb(tmp_path / 'profile'):.0f} MB on disk; "
          f"pip downloaded {downloaded_mb(log):.0f} MB")
    assert run.returncode == 0, run.stderr[-3000:]

    venv = tmp_path / "profile" / "tilescribe" / "venv"
    assert environment_state(venv, load_spec(plugins / "tilescribe")) == READY
    stamp = json.loads((venv / "tilescribe-environment.json").read_text())
    assert stamp["check"]["tiles"] == 4 and stamp["check"]["hits"] >= 1
    assert stamp["check"]["python"] == str(venv / "bin" / "python")
    assert snapshot(QGIS_PYTHON) == before  # nothing went into QGIS's own Python
    assert not (tmp_path / "home" / ".local").exists()  # nor into the user's site-packages
    # llama-server, as the Index dialog offers it: the cached build linked (not compiled again), proven
    # on this CPU (its record), and proven once more here through the new environment's Python.
    assert "'server'" in run.stdout and "compiling llama.cpp's llama-server" not in log.read_text()
    assert (venv / "bin" / "llama-server").resolve() == server_build.resolve()
    assert "llama-server (several tiles at once): the " in run.stdout
    key = cpu_key(builds.read_cpu_flags(), platform.machine())
    assert read_record(wheel.parent, key, "server")["ok"] is True
    proof = prove(venv / "bin" / "python", "server", Path(env["TILESCRIBE_CACHE"]) / "proof-models", env,
                  venv / "bin" / "llama-server")
    assert proof.ok, proof.detail
    assert [check["quant"] for check in proof.checks] == ["Q4_K_M", "Q8_0"]

    assert planned(env, tmp_path) == ["Checking"]  # a complete environment is only checked again
    repair_then_remove(env, tmp_path, venv)


def repair_then_remove(env: dict, tmp_path: Path, venv: Path) -> None:
    """Repair: only what is missing (sqlite-vec, removed by hand), then the check; then --remove."""
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "sqlite-vec"], check=True,
                   capture_output=True, timeout=120)
    assert planned(env, tmp_path) == ["Installing TileScribe's Python requirements", "Checking"]
    start = time.monotonic()
    repair = bootstrap(env, tmp_path)
    print(f"repair (sqlite-vec missing): {time.monotonic() - start:.0f} s")
    assert repair.returncode == 0, repair.stderr[-3000:]
    assert "'requirements'" in repair.stdout and "'torch'" not in repair.stdout

    removed = bootstrap(env, tmp_path, "--remove")
    assert removed.returncode == 0 and not venv.exists()


def bootstrap(env: dict, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(QGIS_PYTHON), "-m", "tilescribe.plugin.bootstrap", "--profile",
                           str(tmp_path / "profile"), *args], capture_output=True, text=True, env=env, timeout=600,
                          cwd=tmp_path)


def planned(env: dict, tmp_path: Path) -> list:
    run = bootstrap(env, tmp_path, "--plan")
    assert run.returncode == 0, run.stderr
    return [line.split(":")[0] for line in run.stdout.splitlines()[1:]]
