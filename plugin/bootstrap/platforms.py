"""Per-OS facts: which Python to build the environment from, where things go, how venvs look.

Pure functions of explicit inputs (system name, sys attributes, environment variables), so
the Windows and macOS rules are unit-tested on Linux.

Interpreter discovery. Inside QGIS, sys.executable is QGIS itself on Windows
(...\\bin\\qgis-bin.exe) and macOS (QGIS.app/Contents/MacOS/QGIS); the Python QGIS embeds
lives under sys.base_prefix / sys.prefix: <prefix>\\python.exe on Windows (OSGeo4W and the
standalone installer: apps\\Python3xx), <prefix>/bin/python3.x on macOS (the bundle's
Python framework) and Linux (/usr/bin/python3.x), then sys.executable when it is a Python,
then sysconfig's BINDIR (relocated builds). QGIS's own fix of sys.executable (qgis/QGIS#67318)
probes the same places.
Candidates are tried in that order and the first that runs with QGIS's own major.minor
version (and can make venvs) wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Mapping, Optional, Sequence

LINUX, WINDOWS, MACOS = "Linux", "Windows", "Darwin"


@dataclass(frozen=True)
class Interpreter:
    """What QGIS's own Python says about itself (the sys attributes discovery needs)."""

    system: str
    executable: str
    prefix: str
    base_prefix: str
    version: tuple  # (major, minor)
    bindir: str = ""  # sysconfig's BINDIR, recorded when that Python was built

    @classmethod
    def current(cls) -> "Interpreter":
        import platform
        import sys
        import sysconfig

        return cls(platform.system(), sys.executable or "", sys.prefix, getattr(sys, "base_prefix", sys.prefix),
                   tuple(sys.version_info[:2]), sysconfig.get_config_var("BINDIR") or "")

    def path(self, text: str) -> PurePath:
        return PureWindowsPath(text) if self.system == WINDOWS else PurePosixPath(text)


def looks_like_python(path: PurePath) -> bool:
    """python, python3, python3.11, python.exe: not qgis-bin.exe, not QGIS."""
    return path.name.lower().startswith("python") and "config" not in path.name


def python_candidates(interp: Interpreter) -> list:
    """Where QGIS's real Python may be, most likely first (duplicates removed)."""
    major, minor = interp.version
    exe = interp.path(interp.executable) if interp.executable else None
    found = []
    for prefix in dict.fromkeys((interp.base_prefix, interp.prefix)):
        root = interp.path(prefix)
        if interp.system == WINDOWS:
            found += [root / "python.exe", root / "python3.exe"]
        else:
            found += [root / "bin" / f"python{major}.{minor}", root / "bin" / "python3"]
    if exe is not None and looks_like_python(exe):
        found.append(exe)  # after the prefixes: inside a venv, the base Python is the one to use
    if exe is not None and interp.system == WINDOWS:
        found += [exe.parent / "python.exe", exe.parent / "python3.exe"]  # OSGeo4W's bin\python3.exe
    elif exe is not None and interp.system == MACOS:
        found += [exe.parent / "bin" / f"python{major}.{minor}", exe.parent / "bin" / "python3"]
    elif interp.system == LINUX:
        found += [PurePosixPath(f"/usr/bin/python{major}.{minor}"), PurePosixPath("/usr/bin/python3")]
    if interp.bindir and interp.system != WINDOWS:
        # Builds relocated after their build (vcpkg's tools/python3, some bundles): BINDIR or its parent.
        bindir = interp.path(interp.bindir)
        found += [bindir / f"python{major}.{minor}", bindir.parent / f"python{major}.{minor}"]
    return list(dict.fromkeys(found))


def venv_python(venv: Path, system: str) -> Path:
    return venv / "Scripts" / "python.exe" if system == WINDOWS else venv / "bin" / "python"


def venv_arguments(system: str) -> list:
    """`python -m venv` options. Linux: see the system's packages, so Debian's (or the distribution's)
    QGIS, GDAL, rasterio and numpy are used as they are, one GDAL in every process. Windows and
    macOS: an isolated environment: the Python that QGIS bundles carries builds made for QGIS
    (numpy, GDAL) at versions that vary with each installer, and torch/rasterio wheels bring
    their own; mixing the two breaks imports in ways a repair cannot fix."""
    return ["--system-site-packages"] if system == LINUX else []


def environment_dir(profile_dir: Path) -> Path:
    """In the QGIS profile's data folder: a plugin update replaces the plugin folder, not this."""
    return Path(profile_dir) / "tilescribe" / "venv"


def profile_from_plugin_dir(plugin_dir: Path) -> Optional[Path]:
    """<profile>/python/plugins/<plugin>: the profile folder, when the plugin is installed there."""
    plugin_dir = Path(plugin_dir)
    if plugin_dir.parent.name == "plugins" and plugin_dir.parent.parent.name == "python":
        return plugin_dir.parents[2]
    return None


def default_profile_dir(system: str, env: Mapping[str, str], home: Path) -> Path:
    """QGIS 3's default profile, for headless use (inside QGIS: QgsApplication.qgisSettingsDirPath())."""
    if system == WINDOWS:
        base = Path(env.get("APPDATA") or home / "AppData" / "Roaming")
    elif system == MACOS:
        base = home / "Library" / "Application Support"
    else:
        base = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "QGIS" / "QGIS3" / "profiles" / "default"


def cache_root(system: str, env: Mapping[str, str], home: Path) -> Path:
    """Where compiled wheels are kept. Linux: scripts/setup.sh's own cache, so both share builds."""
    if env.get("TILESCRIBE_CACHE"):
        return Path(env["TILESCRIBE_CACHE"])
    if system == WINDOWS:
        return Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local") / "tilescribe" / "cache"
    if system == MACOS:
        return home / "Library" / "Caches" / "tilescribe"
    return Path(env.get("XDG_CACHE_HOME") or home / ".cache") / "tilescribe"


def wheel_cache(system: str, env: Mapping[str, str], home: Path) -> Path:
    """TILESCRIBE_WHEEL_CACHE, as scripts/setup.sh reads it, else <cache>/wheels."""
    if env.get("TILESCRIBE_WHEEL_CACHE"):
        return Path(env["TILESCRIBE_WHEEL_CACHE"])
    return cache_root(system, env, home) / "wheels"


def subprocess_environment(base: Mapping[str, str], extra: Optional[Mapping[str, str]] = None) -> dict:
    """For every command the setup runs: that Python's own paths, not QGIS's (OSGeo4W and the
    macOS bundle set PYTHONHOME/PYTHONPATH for QGIS's Python), and no user site-packages
    (~/.local) satisfying a requirement pip should install into the environment."""
    env = {key: value for key, value in base.items() if key not in ("PYTHONHOME", "PYTHONPATH", "PIP_USER")}
    env.update({"PYTHONNOUSERSITE": "1", "PYTHONIOENCODING": "utf-8", "PIP_NO_INPUT": "1"})
    env.update(extra or {})
    return env


def first_existing(paths: Sequence[PurePath]) -> Optional[Path]:
    for path in paths:
        if os.path.isfile(str(path)):
            return Path(str(path))
    return None
