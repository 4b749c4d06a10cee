"""Packaging glue that pyproject.toml cannot express: the repository root is the package.

The package `tilescribe` is this folder (QGIS wants the plugin's `__init__.py` at the top of
its ZIP), so every package below `plugin/` is mapped under `tilescribe.`; the dependencies
are the worker environment's one description, read by the plugin's own parser
(plugin/bootstrap/spec.py: requirements.txt + environment.env), and the version is
metadata.txt's. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import configparser
import importlib.util
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def environment_spec():
    # By path, not by import: importing the package would need it installed already.
    loader = importlib.util.spec_from_file_location("_tilescribe_spec", ROOT / "plugin" / "bootstrap" / "spec.py")
    module = importlib.util.module_from_spec(loader)
    sys.modules[loader.name] = module  # its dataclasses look their module up there
    loader.loader.exec_module(module)
    return module.load_spec(ROOT)


def requirements() -> list[str]:
    spec = environment_spec()
    return [*spec.requirements, spec.torch_requirement, spec.llama_requirement, spec.rasterio_requirement]


def version() -> str:
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "metadata.txt", encoding="utf-8")
    return metadata["general"]["version"]


def packages() -> list[str]:
    return ["tilescribe"] + [f"tilescribe.{name}" for name in find_packages(str(ROOT), include=["plugin", "plugin.*"])]


if __name__ == "__main__":  # how pip's build backend runs it; tests import the helpers
    setup(version=version(), install_requires=requirements(), package_dir={"tilescribe": "."}, packages=packages())
