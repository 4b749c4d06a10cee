"""What an environment lacks (probed with its own Python) and the steps that add it: a repair
runs only the steps whose part is missing or wrong."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .builds import BuildChoice
from .spec import EnvironmentSpec

# Runs inside the environment's Python: pip's vendored `packaging` judges each pin as pip would.
PROBE = r"""
import json, sys
import importlib.metadata as md
lines = json.loads(sys.argv[1])
try:
    from pip._vendor.packaging.requirements import Requirement
except Exception:
    Requirement = None
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
unmet = []
for line in lines:
    if Requirement is None:
        unmet.append(line)
        continue
    req = Requirement(line)
    have = version(req.name)
    if have is None or (req.specifier and not req.specifier.contains(have, prereleases=True)):
        unmet.append(line)
print(json.dumps({"python": sys.executable, "version": list(sys.version_info[:3]), "pip": Requirement is not None,
                  "unmet": unmet, "torch": version("torch"), "llama": version("llama_cpp_python")}))
"""
PROBE_TIMEOUT_S = 60
CACHED, PREBUILT_OR_COMPILE = "cached wheel", "prebuilt wheel, else compiled here"
SERVER_NAMES = ("llama-server", "llama-server.exe")
IMPORT_TIMEOUT_S = 120


@dataclass
class EnvState:
    """What the environment's Python reports; `exists` False: there is no usable environment."""

    exists: bool
    pip: bool = False
    unmet: list = field(default_factory=list)
    torch: Optional[str] = None
    llama: Optional[str] = None
    rasterio_imports: bool = False
    llama_imports: bool = False
    llama_server: bool = False  # llama.cpp's llama-server beside the environment's Python


@dataclass(frozen=True)
class Step:
    name: str       # venv, torch, requirements, rasterio, llama, verify
    title: str
    weight: float   # share of the whole run's time (measured on a first setup here)
    download: str   # what it fetches, for the dialog
    expected: int = 10  # packages pip resolves in it, for its progress


def probe(python: Path, spec: EnvironmentSpec, env: dict) -> EnvState:
    if not Path(python).is_file():
        return EnvState(False)
    try:
        run = subprocess.run([str(python), "-c", PROBE, json.dumps(list(spec.requirements))], capture_output=True,
                             text=True, env=env, timeout=PROBE_TIMEOUT_S)
        report = json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        report = None
    if report is None:
        return EnvState(False)  # a Python that does not run: the environment is made again
    return EnvState(True, report["pip"], report["unmet"], report["torch"], report["llama"],
                    imports(python, "rasterio", env), imports(python, "llama_cpp", env),
                    any((Path(python).parent / name).exists() for name in SERVER_NAMES))


def imports(python: Path, module: str, env: dict) -> bool:
    """In its own process: a native library built for another CPU kills the process that loads it."""
    try:
        return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, env=env,
                              timeout=IMPORT_TIMEOUT_S).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def base_version(version: Optional[str]) -> Optional[str]:
    return version.split("+", 1)[0] if version else None


def plan(state: EnvState, spec: EnvironmentSpec, choice: BuildChoice, llama_source: str,
         verify: bool = True, server_cached: bool = False) -> list:
    """The steps to run, in order. llama_source: what the llama step does ('cached wheel', ...);
    server_cached: scripts/setup.sh built llama.cpp's llama-server for this CPU (the 'server'
    engine runs it), so the environment links it."""
    steps = []
    if not state.exists or not state.pip:
        steps.append(Step("venv", "Creating the environment", 2, "nothing (Python's own venv and pip)"))
    if not state.exists or base_version(state.torch) != spec.torch_version:
        steps.append(Step("torch", f"Installing torch {spec.torch_version} ({choice.accelerator.upper()})", 25,
                          torch_download(spec, choice), expected=12))
    if not state.exists or state.unmet:
        steps.append(Step("requirements", "Installing TileScribe's Python requirements", 45,
                          "sentence-transformers, transformers, the MiniLM embedding model, sqlite-vec and "
                          "the rest of requirements.txt (about 135 MB)", expected=60))
    if not state.rasterio_imports:
        steps.append(Step("rasterio", "Installing rasterio", 5, f"{spec.rasterio_requirement} with its own GDAL "
                          "(about 25 MB), unless QGIS's rasterio is importable", expected=8))
    if not state.exists or state.llama != spec.llama_version or not state.llama_imports:
        steps.append(Step("llama", f"Installing llama-cpp-python {spec.llama_version} ({llama_source})", 13,
                          llama_download(spec, llama_source), expected=6))
    if server_cached and not state.llama_server:
        steps.append(Step("server", "Linking llama.cpp's llama-server", 1,
                          "nothing (built before on this machine by make setup)"))
    if verify:
        steps.append(Step("verify", "Checking: a tiny caption and a search through the worker", 10,
                          "nothing (a 150 KB test model is written locally)"))
    return steps


def torch_download(spec: EnvironmentSpec, choice: BuildChoice) -> str:
    if choice.accelerator == "cuda":
        return f"torch {spec.torch_version} with CUDA (about 2.5 GB with NVIDIA's libraries)"
    return f"torch {spec.torch_version} for the CPU (about 200 MB)"


def llama_download(spec: EnvironmentSpec, source: str) -> str:
    if source == CACHED:
        return "nothing (a wheel built before on this machine)"
    return (f"a prebuilt llama-cpp-python {spec.llama_version} wheel where one exists for this platform "
            "(about 25 MB), else its sources (about 50 MB), compiled here: 7-12 minutes on 2 cores, "
            "with a C++ compiler")


def rough_time(steps: list) -> str:
    """What the dialog promises, from first setups measured on a 2-core machine (docs/performance.md)."""
    names = {step.name for step in steps}
    if names <= {"verify"}:
        return "under a minute (a check only)"
    text = "about 3-10 minutes, most of it downloading (2.5 minutes measured on 2 cores with a fast link)"
    llama = next((step for step in steps if step.name == "llama"), None)
    if llama is not None and CACHED not in llama.title:
        text += "; add 7-12 minutes if llama-cpp-python has no prebuilt wheel here and is compiled"
    return text
