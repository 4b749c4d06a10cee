"""Which downloaded file is the text model and which the vision projector, and their chat family."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..captioning.gguf_header import GgufInfo, read_gguf_info
from ..captioning.model_pair import check_pair, guess_family
from ..errors import ModelError
from .catalogue import ModelSpec
from .folder import FileRecord


@dataclass
class Pair:
    files: list        # FileRecord of every file of the spec
    model: Path
    mmproj: Path
    family: str


def assign_roles(spec: ModelSpec, folder: Path, remotes: list) -> Pair:
    """Reads the GGUF headers: the `clip` file is the projector, the other GGUF the text model.

    ModelError when the files are not one model and one projector that fit together.
    """
    infos: dict[str, GgufInfo] = {}
    for remote in remotes:
        if remote.file.lower().endswith(".gguf"):
            infos[remote.file] = read_gguf_info(folder / remote.file, f"downloaded {remote.file}")
    projectors = [name for name, info in infos.items() if info.arch == "clip"]
    models = [name for name, info in infos.items() if info.arch != "clip"]
    if len(projectors) != 1 or len(models) != 1:
        raise ModelError(
            f"The files downloaded from {spec.repo} ({', '.join(spec.files)}) are not one GGUF text "
            f"model and one vision projector (found {len(models)} model(s), {len(projectors)} "
            "projector(s)). They are kept in the folder; give --files with exactly one of each.")
    model, mmproj = infos[models[0]], infos[projectors[0]]
    check_pair(model, mmproj)
    family = spec.family if spec.family != "auto" else guess_family(model, mmproj)
    roles = {models[0]: "model", projectors[0]: "mmproj"}
    records = [FileRecord(r.file, roles.get(r.file, "file"), int(r.size if r.size is not None
                                                                  else (folder / r.file).stat().st_size),
                          r.etag.strip('"')) for r in remotes]
    return Pair(records, model.path, mmproj.path, family)
