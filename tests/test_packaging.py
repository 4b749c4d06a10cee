"""The Python package: pyproject's `tilescribe` command, its dependencies, its packages."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest

from tilescribe.plugin.bootstrap.spec import load_spec

REPO = Path(__file__).resolve().parents[1]


def setup_module_helpers():
    spec = importlib.util.spec_from_file_location("_tilescribe_setup", REPO / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() itself runs only as __main__
    return module


def test_the_console_script_is_the_cli_main(capsys):
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    module, _, function = scripts["tilescribe"].partition(":")
    main = getattr(importlib.import_module(module), function)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "usage: tilescribe" in capsys.readouterr().out


def test_dependencies_are_the_worker_environments_one_description():
    spec = load_spec(REPO)
    wanted = [*spec.requirements, spec.torch_requirement, spec.llama_requirement, spec.rasterio_requirement]
    assert setup_module_helpers().requirements() == wanted
    assert "torch==" in " ".join(wanted) and "sentence-transformers==" in " ".join(wanted)


def test_every_folder_of_code_is_a_package_the_wheel_ships():
    # find_packages skips a folder without __init__.py: its modules would be missing after `pip install .`
    folders = {path.parent for path in (REPO / "plugin").rglob("*.py") if "__pycache__" not in path.parts}
    names = {"tilescribe." + ".".join(folder.relative_to(REPO).parts) for folder in folders}
    assert names <= set(setup_module_helpers().packages())
