"""`models verify`: are the files on disk complete, unaltered (the hub's hashes) and a usable pair?

Works on the models folder, one repository folder, any folder of GGUF files, or one file:
models that were never downloaded by TileScribe are checked by their headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..captioning.gguf_header import read_gguf_info
from ..captioning.model_pair import check_pair, guess_family
from ..errors import ModelError
from .catalogue import format_size
from .folder import Manifest, read_manifest
from .hashing import hash_kind, matches_etag


@dataclass
class Check:
    subject: str
    ok: bool
    message: str

    def to_json(self) -> dict:
        return {"subject": self.subject, "ok": self.ok, "message": self.message}


def verify_path(path: Path, on_file: Optional[Callable[[Path], None]] = None) -> list[Check]:
    path = Path(path)
    if path.is_file():
        return [_header_check(path)] + _hash_checks(path.parent, [path.name], on_file)
    if not path.is_dir():
        return [Check(str(path), False, "does not exist: give a model file, a model folder or the models folder")]
    try:
        manifest = read_manifest(path)
    except ModelError as exc:
        return [Check(str(path), False, str(exc))]
    if manifest is not None:
        return verify_repo_folder(path, manifest, on_file)
    checks = [c for sub in sorted(p for p in path.iterdir() if p.is_dir() and (p / "tilescribe-model.json").exists())
              for c in verify_path(sub, on_file)]
    return checks + _loose_gguf_checks(path)


def verify_repo_folder(folder: Path, manifest: Manifest, on_file=None) -> list[Check]:
    checks = _hash_checks(folder, [r.file for r in manifest.records()], on_file, manifest)
    model, mmproj = manifest.path_of(folder, "model"), manifest.path_of(folder, "mmproj")
    if model and mmproj and model.is_file() and mmproj.is_file():
        checks.append(_pair_check(model, mmproj, manifest.family))
    return checks


def _hash_checks(folder: Path, files: list, on_file, manifest: Optional[Manifest] = None) -> list[Check]:
    manifest = manifest or _quiet_manifest(folder)
    if manifest is None:
        return []
    checks = []
    for name in files:
        record = manifest.record(name)
        if record is None:
            continue
        path = folder / name
        if not path.is_file():
            checks.append(Check(str(path), False, f"missing: download {manifest.name} again"))
            continue
        if on_file is not None:
            on_file(path)
        if path.stat().st_size != record.size:
            checks.append(Check(str(path), False, f"is {format_size(path.stat().st_size)}, the hub's file is "
                                f"{format_size(record.size)}: download {manifest.name} again"))
            continue
        same = matches_etag(path, record.etag)
        kind = hash_kind(record.etag)
        if kind is None:  # a mirror's ETag that is no content hash: say so, never "matches"
            checks.append(Check(str(path), True, f"size only matches the hub ({format_size(record.size)}): the "
                                f"hub gave no content hash (ETag {record.etag}), content not verified"))
            continue
        checks.append(Check(str(path), same is not False,
                            f"{kind} matches the hub ({format_size(record.size)})" if same is not False else
                            f"{kind} differs from the hub's: the file is damaged; delete it and download "
                            f"{manifest.name} again"))
    return checks


def _quiet_manifest(folder: Path) -> Optional[Manifest]:
    try:
        return read_manifest(folder)
    except ModelError:
        return None


def _header_check(path: Path) -> Check:
    try:
        info = read_gguf_info(path, "model")
    except ModelError as exc:
        return Check(str(path), False, str(exc))
    kind = "vision projector" if info.arch == "clip" else f"{info.arch or 'unknown'} text model"
    return Check(str(path), True, f"GGUF {kind}{f' ({info.name})' if info.name else ''}")


def _pair_check(model: Path, mmproj: Path, family: str = "auto") -> Check:
    subject = f"{model.name} + {mmproj.name}"
    try:
        model_info, mmproj_info = read_gguf_info(model, "model"), read_gguf_info(mmproj, "mmproj")
        check_pair(model_info, mmproj_info)
    except ModelError as exc:
        return Check(subject, False, str(exc))
    family = family if family != "auto" else guess_family(model_info, mmproj_info)
    return Check(subject, True, f"a usable pair, chat family {family}")


def _loose_gguf_checks(folder: Path) -> list[Check]:
    """GGUF files in a folder TileScribe did not fill: headers, and the pair when there is one."""
    files = sorted(folder.glob("*.gguf"))
    checks = [_header_check(path) for path in files]
    projectors = [p for p, c in zip(files, checks) if c.ok and "vision projector" in c.message]
    models = [p for p, c in zip(files, checks) if c.ok and "vision projector" not in c.message]
    if len(projectors) == 1 and len(models) == 1:
        checks.append(_pair_check(models[0], projectors[0]))
    return checks
