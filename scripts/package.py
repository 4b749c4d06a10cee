"""Build dist/tilescribe-<version>.zip, the archive QGIS's "Install from ZIP" accepts.

Usage: python scripts/package.py [--out DIR]

The archive holds one folder, tilescribe/, with the plugin code, its .ui files and
icons, and what sets up the worker's environment (requirements.txt, environment.env,
scripts/setup.sh, plugin/bootstrap);
never tests, devtools/ (benchmarks, demo data), caches, virtual environments, indexes, models or data.
"""

from __future__ import annotations

import argparse
import configparser
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = "tilescribe"
INCLUDE = ["__init__.py", "metadata.txt", "LICENSE", "requirements.txt", "environment.env", "scripts/setup.sh",
           "plugin", "ui", "resources"]
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".hypothesis", ".venv", ".git", "tests"}
SKIP_SUFFIXES = {".pyc", ".pyo", ".sqlite", ".gguf", ".tif", ".zip"}
SKIP_NAMES = {".DS_Store"}


def version() -> str:
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "metadata.txt", encoding="utf-8")
    return metadata["general"]["version"]


def wanted(path: Path) -> bool:
    relative = path.relative_to(ROOT)
    if any(part in SKIP_DIRS for part in relative.parts):
        return False
    if path.name in SKIP_NAMES or ".tilescribe.sqlite" in path.name:
        return False
    return path.suffix not in SKIP_SUFFIXES


def files() -> list[Path]:
    found = []
    for entry in INCLUDE:
        path = ROOT / entry
        if not path.exists():
            raise SystemExit(f"package: {path} is missing")
        found.extend([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()))
    return [path for path in found if wanted(path)]


def build(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{FOLDER}-{version()}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files():
            info = zipfile.ZipInfo(f"{FOLDER}/{path.relative_to(ROOT).as_posix()}", date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if path.suffix == ".sh" else 0o644) << 16  # setup.sh stays runnable
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return archive


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    archive = build(args.out)
    with zipfile.ZipFile(archive) as zf:
        count = len(zf.namelist())
    print(f"{archive} ({count} files, {archive.stat().st_size // 1024} KiB): "
          "install it with Plugins > Manage and Install Plugins > Install from ZIP")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
