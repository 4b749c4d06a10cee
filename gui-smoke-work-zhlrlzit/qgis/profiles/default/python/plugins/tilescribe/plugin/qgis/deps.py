"""Dependency check of the worker's Python: what is missing and the one command that fixes it."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .settings import default_worker_python
from ..worker.client import WorkerClient, WorkerUnavailable

# Module name -> what pip installs it from.
PIP_NAMES = {
    "sentence_transformers": "sentence-transformers",
    "sqlite_vec": "sqlite-vec",
    "numpy": "numpy<2",
    "rasterio": "rasterio",
    "PIL": "pillow",
    "llama_cpp": "llama-cpp-python",
}
SEARCH_MODULES = ("sentence_transformers", "sqlite_vec", "numpy")
INDEX_MODULES = SEARCH_MODULES + ("rasterio", "PIL")
LOCAL_MODEL_MODULES = INDEX_MODULES + ("llama_cpp",)
SETUP_HINT = ("Click 'Set up TileScribe…' in the TileScribe search dock (or in TileScribe's Settings): it "
              "installs what the worker needs in a few minutes, no terminal needed.")


def missing_modules(hello: dict, needs: Sequence[str]) -> list[str]:
    found = hello.get("modules") or {}
    return [name for name in needs if not found.get(name)]


def setup_hint(python: Path, plugin_dir: Path, missing: Sequence[str] = ()) -> str:
    """The exact command that gives the worker what it needs."""
    is_default = Path(python) == default_worker_python(plugin_dir)
    if is_default and (Path(plugin_dir) / "Makefile").is_file():
        return f"Run in a terminal:\n    cd \"{plugin_dir}\" && make setup"
    if is_default:  # installed from the ZIP
        return SETUP_HINT
    if not Path(python).is_file():
        return ("Fix the worker Python in TileScribe's settings, or clear it to use the "
                f"plugin's own environment ({default_worker_python(plugin_dir)}).")
    packages = " ".join(f'"{PIP_NAMES.get(name, name)}"' for name in missing) or "-r requirements.txt"
    return f"Run in a terminal:\n    \"{python}\" -m pip install {packages}"


def check_environment(client: WorkerClient, needs: Sequence[str]) -> None:
    """Raise WorkerUnavailable naming what the worker's Python lacks for a job."""
    hello = client.hello()
    missing = missing_modules(hello, needs)
    if missing:
        names = ", ".join(PIP_NAMES.get(name, name) for name in missing)
        raise WorkerUnavailable(
            f"The Python that runs the TileScribe worker ({hello.get('python', client.python)}) "
            f"lacks: {names}.\n\n{setup_hint(client.python, client.plugin_dir, missing)}",
            "WorkerUnavailable")
