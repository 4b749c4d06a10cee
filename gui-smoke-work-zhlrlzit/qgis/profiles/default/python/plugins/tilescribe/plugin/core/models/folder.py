"""The one models folder: where downloads go, what each holds (a manifest), what is installed.

Layout: <models dir>/<owner>--<name>/<file>, with the repository's manifest
(tilescribe-model.json: repository, commit, family, each file's hub hash and size)
beside the files and unfinished downloads in .partial/. No network, no heavy imports.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import ModelError

MODELS_DIR_ENV = "TILESCRIBE_MODELS_DIR"
MANIFEST = "tilescribe-model.json"
PARTIAL_DIR = ".partial"


def default_models_dir() -> Path:
    """TILESCRIBE_MODELS_DIR, else the platform's per-user data folder + TileScribe/models."""
    if os.environ.get(MODELS_DIR_ENV):
        return Path(os.environ[MODELS_DIR_ENV]).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "TileScribe" / "models"


def models_dir(chosen: Optional[str | os.PathLike] = None) -> Path:
    """The folder given (--dir, the QGIS setting), else the default one."""
    text = str(chosen).strip() if chosen else ""
    folder = Path(text).expanduser() if text else default_models_dir()
    if folder.exists() and not folder.is_dir():  # was an internal error (NotADirectoryError) or "no models"
        from ..errors import ModelError

        raise ModelError(f"The models folder {folder} is a file, not a folder: give a folder (--dir, or Models "
                         "folder in the QGIS settings), or move the file away.")
    return folder


def repo_folder(root: Path, repo: str) -> Path:
    return Path(root) / repo.replace("/", "--")


@dataclass
class FileRecord:
    """One downloaded file: its role and what the hub said it is."""

    file: str
    role: str                 # "model", "mmproj" or "file"
    size: int
    etag: str                 # the hub's hash: sha256 for LFS files, git blob sha1 otherwise


@dataclass
class Manifest:
    """What a repository folder holds, written after each completed download."""

    name: str
    repo: str
    revision: str
    commit: str
    family: str = "auto"
    files: list = field(default_factory=list)   # FileRecord as dicts

    def records(self) -> list[FileRecord]:
        return [FileRecord(**record) for record in self.files]

    def record(self, file: str) -> Optional[FileRecord]:
        return next((r for r in self.records() if r.file == file), None)

    def path_of(self, folder: Path, role: str) -> Optional[Path]:
        record = next((r for r in self.records() if r.role == role), None)
        return folder / record.file if record else None

    def merge(self, records: list[FileRecord]) -> None:
        """Adds or replaces these files' records; a new model or mmproj becomes the folder's pair."""
        names = {r.file for r in records}
        roles = {r.role for r in records} & {"model", "mmproj"}
        kept = [dict(r, role="file") if r["role"] in roles else r for r in self.files if r["file"] not in names]
        self.files = kept + [asdict(r) for r in records]


def read_manifest(folder: Path) -> Optional[Manifest]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        manifest = Manifest(**data)
        _check_records(manifest)
        return manifest
    except (ValueError, TypeError) as exc:
        raise ModelError(f"The model manifest {path} is damaged ({exc}). Delete it and download the "
                         "model again (files already there are checked, not downloaded twice).") from exc


def _check_records(manifest: Manifest) -> None:
    """ValueError for a record of the wrong shape (was a TypeError later: exit 70) or a file name
    leaving the folder (verify would read outside it)."""
    for name in ("name", "repo", "revision", "commit", "family"):
        if not isinstance(getattr(manifest, name), str):
            raise ValueError(f"{name} is not text")
    if not isinstance(manifest.files, list):
        raise ValueError("files is not a list")
    for number, record in enumerate(manifest.files, start=1):
        if not isinstance(record, dict) or set(record) != {"file", "role", "size", "etag"}:
            raise ValueError(f"file record {number} is not an object with file, role, size and etag")
        name, size = record["file"], record["size"]
        if (not isinstance(name, str) or not name.strip() or name.startswith(("/", "\\"))
                or ".." in Path(name.replace("\\", "/")).parts):
            raise ValueError(f"file record {number} names {name!r}, not a file inside the folder")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(record["etag"], str) \
                or not isinstance(record["role"], str):
            raise ValueError(f"file record {number} has a size that is not a whole number, or an etag or role "
                             "that is not text")


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    path = Path(folder) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(asdict(manifest), indent=2), encoding="utf-8")
        os.replace(tmp, path)  # a crash never leaves half a manifest
    except OSError as exc:  # a full disk: was exit 70, and an empty .json.tmp left behind
        tmp.unlink(missing_ok=True)
        from ..errors import ModelError

        raise ModelError(f"Cannot write the model manifest {path} ({exc.strerror or exc}): free some space in "
                         f"{folder} (or choose another models folder), then download again: the files already "
                         "there are checked, not fetched twice.") from exc
    return path


@dataclass(frozen=True)
class InstalledModel:
    """A complete pair in the models folder, ready for --model/--mmproj."""

    name: str
    repo: str
    folder: Path
    model: Path
    mmproj: Path
    family: str

    def to_json(self) -> dict:
        return {"name": self.name, "repo": self.repo, "folder": str(self.folder), "model": str(self.model),
                "mmproj": str(self.mmproj), "family": self.family}


def installed_models(root: Path, on_damaged=None) -> list[InstalledModel]:
    """Every repository folder under `root` whose manifest names a model and an mmproj that exist.

    A folder whose manifest is damaged is left out; `on_damaged(folder, error)` hears of it.
    """
    found = []
    root = Path(root)
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            manifest = read_manifest(folder)
        except ModelError as exc:
            if on_damaged is not None:
                on_damaged(folder, exc)
            continue  # a listing must not fail on one folder
        if manifest is None:
            continue
        model, mmproj = manifest.path_of(folder, "model"), manifest.path_of(folder, "mmproj")
        if model and mmproj and model.is_file() and mmproj.is_file():
            found.append(InstalledModel(manifest.name, manifest.repo, folder, model, mmproj, manifest.family))
    return found


def find_installed(root: Path, name_or_repo: str) -> Optional[InstalledModel]:
    wanted = name_or_repo.strip().lower()
    for model in installed_models(root):
        if wanted in (model.name.lower(), model.repo.lower()):
            return model
    return None


def family_for_model(model_path: str | os.PathLike) -> str:
    """The chat family recorded when this model file was downloaded (from the catalogue); else auto."""
    path = Path(model_path)
    try:
        manifest = read_manifest(path.parent)
    except ModelError:
        return "auto"
    record = manifest.record(path.name) if manifest else None
    return manifest.family if record is not None and record.role == "model" else "auto"
