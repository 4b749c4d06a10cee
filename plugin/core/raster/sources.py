"""Which raster files a list of inputs stands for: files as given, folders, a VRT's own sources."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable

from ..errors import RasterError
from .tiling import is_gdal_url

# What a folder of rasters holds (GDAL reads more; name those files one by one).
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".png", ".jpg", ".jpeg", ".ecw", ".sid", ".nc")


def raster_inputs(inputs: Iterable[str | os.PathLike], *, vrt_sources: bool = False) -> list[Path]:
    """The rasters to index, each once, in the order given: a folder stands for its raster files
    (sorted, not recursive), and with `vrt_sources` a .vrt stands for the files it mosaics.

    A file that does not exist is passed on as it is: indexing it says why it cannot be read.
    """
    found: list[Path] = []
    for given in inputs:
        if is_gdal_url(given):  # a GDAL URL as given: a Path would fold its "//"
            found.append(given)  # type: ignore[arg-type]
            continue
        path = Path(given)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
            if not inside:
                raise RasterError(f"{path} is a folder, not a raster file, and holds none "
                                  f"({', '.join(RASTER_SUFFIXES)}): name the rasters to index.")
            found.extend(inside)
        else:
            found.append(path)
    if vrt_sources:
        found = [source for path in found
                 for source in (vrt_source_files(path) if isinstance(path, Path) and path.suffix.lower() == ".vrt"
                                else [path])]
    return unique_paths(found)


def unique_paths(paths) -> list:
    """Each file once, in the order given: by its device and inode where it exists (a hard link
    is the same file under another name, and a symlink resolves to it), else by its real path."""
    unique, seen = [], set()
    for path in paths:
        try:
            stat = os.stat(path)
            key = (stat.st_dev, stat.st_ino)
        except OSError:
            key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def vrt_source_files(vrt: Path) -> list[Path]:
    """The files a GDAL VRT mosaics, in the order it names them (each once)."""
    try:
        root = ET.parse(vrt).getroot()
    except (OSError, ET.ParseError) as exc:
        raise RasterError(f"Cannot read the VRT {vrt} to list its sources ({exc}): give the rasters "
                          "themselves, or the VRT without --vrt-sources.") from None
    sources = []
    for element in root.iter("SourceFilename"):
        name = (element.text or "").strip()
        if not name:
            continue
        path = vrt.parent / name if element.get("relativeToVRT") == "1" else Path(name)
        if path not in sources:
            sources.append(path)
    if not sources:
        raise RasterError(f"The VRT {vrt} names no source files: index the VRT itself (without --vrt-sources).")
    return sources
