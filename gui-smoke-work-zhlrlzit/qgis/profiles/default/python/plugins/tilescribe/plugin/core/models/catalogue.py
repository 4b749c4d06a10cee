"""The catalogue of recommended vision-language models (catalogue.json) and what a user asks for.

Plain data, no network and no heavy imports: the QGIS side reads it too.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ModelError

CATALOGUE_FILE = Path(__file__).with_name("catalogue.json")
# A JSON file of the same form whose models are added (an organisation's own models or mirror).
EXTRA_CATALOGUE_ENV = "TILESCRIBE_CATALOGUE"
DEFAULT_REVISION = "main"
# owner/name as the hub spells repository ids (letters, digits, - _ .)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class CatalogueEntry:
    """One recommended model: a GGUF text model and its vision projector in one repository."""

    name: str
    title: str
    repo: str
    model_file: str
    mmproj_file: str
    size_bytes: int
    size_approximate: bool
    family: str
    licence: str
    note: str

    @property
    def files(self) -> tuple[str, str]:
        return (self.model_file, self.mmproj_file)

    def to_json(self) -> dict:
        return {"name": self.name, "title": self.title, "repo": self.repo, "files": list(self.files),
                "model_file": self.model_file, "mmproj_file": self.mmproj_file,
                "size_bytes": self.size_bytes, "size_approximate": self.size_approximate,
                "family": self.family, "licence": self.licence, "note": self.note}


@dataclass(frozen=True)
class ModelSpec:
    """What to download: a repository, its files, and the chat family when known."""

    name: str                  # the catalogue name, or the repository id
    repo: str
    files: tuple[str, ...]
    family: str = "auto"
    revision: str = DEFAULT_REVISION


def load_catalogue() -> tuple[CatalogueEntry, ...]:
    """The project's catalogue, then the models of $TILESCRIBE_CATALOGUE when set."""
    return _read(CATALOGUE_FILE) + (_read(Path(os.environ[EXTRA_CATALOGUE_ENV]))
                                    if os.environ.get(EXTRA_CATALOGUE_ENV) else ())


@lru_cache(maxsize=4)
def _read(path: Path) -> tuple[CatalogueEntry, ...]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = tuple(CatalogueEntry(**entry) for entry in data["models"])
        for entry in entries:  # a name with `..` would write outside the model's folder (issue 22)
            if not isinstance(entry.repo, str) or not _REPO_ID.match(entry.repo):
                raise ValueError(f"model {entry.name!r}: {entry.repo!r} is not a hub repository (owner/name)")
            bad = [f for f in entry.files if _unsafe_file_name(f)]
            if bad:
                raise ValueError(f"model {entry.name!r}: {bad[0]!r} is not a file name inside a repository")
        return entries
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"The model catalogue {path} cannot be read ({exc}). Fix the file or unset "
                         f"{EXTRA_CATALOGUE_ENV}.") from exc


def find_entry(name: str) -> Optional[CatalogueEntry]:
    """The entry named `name` (any case), or the one whose repository is `name`."""
    wanted = name.strip().lower()
    for entry in load_catalogue():
        if wanted in (entry.name.lower(), entry.repo.lower()):
            return entry
    return None


def resolve_spec(name_or_repo: str, files: Sequence[str] = (), revision: Optional[str] = None) -> ModelSpec:
    """A catalogue name, or any hub repository with the files named, as a ModelSpec."""
    entry = find_entry(name_or_repo)
    revision = revision or DEFAULT_REVISION
    if entry is not None and (not files or tuple(files) == entry.files):
        return ModelSpec(entry.name, entry.repo, entry.files, entry.family, revision)
    repo = entry.repo if entry is not None else name_or_repo.strip()
    if not _REPO_ID.match(repo):
        names = ", ".join(e.name for e in load_catalogue())
        raise ModelError(
            f"'{name_or_repo}' is neither a model of the catalogue ({names}) nor a hub repository "
            "(owner/name). Run `tilescribe models list` to see the catalogue.")
    if not files:
        raise ModelError(
            f"Name the files to download from {repo} with --files MODEL.gguf MMPROJ.gguf "
            "(the GGUF text model and its vision projector, as listed on the repository's Files page).")
    bad = [f for f in files if _unsafe_file_name(f)]
    if bad:
        raise ModelError(f"Not a file name inside a repository: {bad[0]!r}. Give names as the hub lists them.")
    family = entry.family if entry is not None else "auto"
    return ModelSpec(repo, repo, tuple(files), family, revision)


def _unsafe_file_name(name) -> bool:
    """Not a plain relative name inside a repository: empty, absolute, or climbing out with `..`."""
    return (not isinstance(name, str) or not name.strip() or name.startswith(("/", "\\"))
            or ".." in Path(name.replace("\\", "/")).parts or "\0" in name)


def format_size(size_bytes: Optional[int]) -> str:
    if size_bytes is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.1f} {unit}"
    return f"{size_bytes} B"
