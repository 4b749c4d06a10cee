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
SERVER_CACHED, SERVER_COMPILE = "cached", "compile"  # where llama-server comes from (plan's server_source)
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


# What each step costs, in seconds, measured on a first setup on 2 cores with a fast link (the
# whole took 9 min 29 s in QGIS): the bar's weights and the one estimate the user is given.
# Compiling llama-cpp-python and llama-server dominates: weighted by their seconds, the bar no
# longer sits at 80 % through them, and their own build lines (BuildProgress) move it meanwhile.
# "server": linking a build made before and its proof (2.5 s measured); "server-compile": the
# sources (75 MB), cmake, the compile and the proof: 10.5 minutes with setup.sh on a fresh machine
# (2 cores, other jobs running; docs/install.md).
SECONDS = {"venv": 10, "torch": 60, "torch-cuda": 240, "requirements": 60, "rasterio": 15,
           "llama": 20, "llama-compile": 330, "server": 5, "server-compile": 630, "verify": 60}
DOING = {"venv": "creating the environment", "torch": "downloading torch", "requirements":
         "installing the Python requirements", "rasterio": "installing rasterio", "llama":
         "installing llama-cpp-python", "llama-compile": "compiling llama.cpp for this CPU",
         "server": "linking llama-server", "server-compile": "compiling llama.cpp for this CPU",
         "verify": "the check (a tiny caption and search)"}


@dataclass(frozen=True)
class Step:
    name: str       # venv, torch, requirements, rasterio, llama, verify
    title: str
    weight: float   # seconds it takes (SECONDS): the bar's weight and the estimate
    download: str   # what it fetches, for the dialog
    expected: int = 10  # packages pip resolves in it, for its progress
    doing: str = ""  # what it is doing, for the estimate ("compiling llama.cpp for this CPU")


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
         verify: bool = True, server_source: Optional[str] = None) -> list:
    """The steps to run, in order. llama_source: what the llama step does ('cached wheel', ...);
    server_source: where llama.cpp's llama-server (the Index dialog's 'several tiles at once'
    engine) comes from: SERVER_CACHED (built before on this machine, by scripts/setup.sh or this
    setup: linked), SERVER_COMPILE (compiled here), None (no compiler: not offered)."""
    steps = []
    if not state.exists or not state.pip:
        steps.append(_step("venv", "Creating the environment", "nothing (Python's own venv and pip)"))
    if not state.exists or base_version(state.torch) != spec.torch_version:
        steps.append(_step("torch", f"Installing torch {spec.torch_version} ({choice.accelerator.upper()})",
                           torch_download(spec, choice), 12, "torch-cuda" if choice.accelerator == "cuda" else ""))
    if not state.exists or state.unmet:
        steps.append(_step("requirements", "Installing TileScribe's Python requirements",
                          "sentence-transformers, transformers, the MiniLM embedding model, sqlite-vec and "
                          "the rest of requirements.txt (about 135 MB)", 60))
    if not state.rasterio_imports:
        steps.append(_step("rasterio", "Installing rasterio", f"{spec.rasterio_requirement} with its own GDAL "
                           "(about 25 MB), unless QGIS's rasterio is importable", 8))
    if not state.exists or state.llama != spec.llama_version or not state.llama_imports:
        # Not cached: the estimate counts the compile (where a prebuilt wheel exists it is faster)
        steps.append(_step("llama", f"Installing llama-cpp-python {spec.llama_version} ({llama_source})",
                           llama_download(spec, llama_source), 6, "" if llama_source == CACHED else "llama-compile"))
    if server_source == SERVER_CACHED and not state.llama_server:
        steps.append(_step("server", "Linking llama.cpp's llama-server (several tiles at once)",
                           "nothing (built before on this machine)"))
    elif server_source == SERVER_COMPILE and not state.llama_server:
        steps.append(_step("server", "Building llama.cpp's llama-server (several tiles at once)",
                           f"the llama-cpp-python {spec.llama_version} sources (about 75 MB, which hold "
                           "llama.cpp), compiled here for this CPU: about 10 minutes on 2 cores, once", 2,
                           "server-compile"))
    if verify:
        steps.append(_step("verify", "Checking: a tiny caption and a search through the worker",
                           "nothing (a 150 KB test model is written locally)"))
    return steps


def _step(name: str, title: str, download: str, expected: int = 10, cost: str = "") -> Step:
    """A step weighted by its measured seconds; `cost`: the SECONDS entry when not its name."""
    cost = cost or name
    return Step(name, title, SECONDS[cost], download, expected, DOING.get(cost, DOING[name]))


def torch_download(spec: EnvironmentSpec, choice: BuildChoice) -> str:
    if choice.accelerator == "cuda":
        return f"torch {spec.torch_version} with CUDA (about 2.5 GB with NVIDIA's libraries)"
    return f"torch {spec.torch_version} for the CPU (about 200 MB)"


def llama_download(spec: EnvironmentSpec, source: str) -> str:
    if source == CACHED:
        return "nothing (a wheel built before on this machine)"
    return (f"a prebuilt llama-cpp-python {spec.llama_version} wheel where one exists for this platform "
            "(about 25 MB), else its sources (about 75 MB), compiled here: about 5 minutes on 2 cores, "
            "with a C++ compiler")


def estimate(steps: list) -> str:
    """The one estimate the user is given: the steps' measured seconds, and what takes most of it."""
    if not steps:
        return "nothing to do"
    seconds = sum(step.weight for step in steps)
    doing: dict = {}  # the two compiles (llama-cpp-python, llama-server) are one "compiling llama.cpp"
    for step in steps:
        doing[step.doing] = doing.get(step.doing, 0.0) + step.weight
    longest = max(doing, key=lambda what: doing[what])
    if seconds < 60:
        return f"under a minute: {longest}"
    minutes = round(seconds / 60)
    why = f", most of it {longest}" if doing[longest] >= 0.4 * seconds else ""
    return f"about {minutes} minute{'s' if minutes != 1 else ''}{why}"


def first_setup_estimate() -> str:
    """A first setup on the CPU that compiles llama.cpp, before anything is probed (the dock's offer)."""
    steps = [_step(name, "", "", cost=cost) for name, cost in (("venv", ""), ("torch", ""), ("requirements", ""),
                                                                ("rasterio", ""), ("llama", "llama-compile"),
                                                                ("server", "server-compile"), ("verify", ""))]
    return estimate(steps)
