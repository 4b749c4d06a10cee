"""End-to-end inputs: the rasters and tiles to caption for a dataset, and the file caching the captions."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from ..errors import RasterError
from ..index import INDEX_SUFFIX
from ..raster.tiling import TileGrid, Window, open_raster
from .datasets import CaptionDataset
from .metrics import EvaluationError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
MIN_TILE_SIZE = 16  # TileGrid refuses smaller tiles; a smaller image is one clipped tile anyway
# Settings that decide what a captioner writes (not how fast): they name the cache file.
IDENTITY_FIELDS = ("model", "mmproj", "family", "server_url", "server_model", "seed",
                   "temperature", "test_model")



@dataclass(frozen=True)
class RasterJob:
    """One raster to index and which of its tiles (by window key) are which dataset rows."""

    raster: Path
    tile_size: int
    rows: dict[str, int]  # Window.key -> row of the item in the dataset
    whole_grid: bool  # every tile of the grid is a dataset item


# -- which file caches the captions ---------------------------------------------------------

def captioner_key(settings) -> str:
    """Short hash of what decides the captions of a CaptionerSettings (not speed settings)."""
    identity = {name: getattr(settings, name) for name in IDENTITY_FIELDS}
    for name in ("model", "mmproj"):
        if identity[name]:
            identity[name] = _file_identity(Path(identity[name]))
    if identity["server_url"]:
        from ..captioning.http_backend import redact_url

        identity["server_url"] = redact_url(identity["server_url"])  # no secret in a hash input
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def _file_identity(path: Path) -> str:
    # Name and size: cheap, and a moved model file still finds its captions.
    try:
        return f"{path.name}:{path.stat().st_size}"
    except OSError:
        return path.name  # make_captioner reports the missing file


def captioner_label(settings) -> str:
    if settings.test_model:
        return "test-model"
    if settings.server_url:
        return str(settings.server_model or "server")
    return Path(settings.model).stem if settings.model else "captioner"


def default_cache_path(dataset: CaptionDataset, settings) -> Path:
    """~/.cache/tilescribe/eval/<dataset>-<captioner>-<hash>.tilescribe.sqlite"""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", captioner_label(settings))[:40]
    return root / "tilescribe" / "eval" / f"{dataset.name}-{label}-{captioner_key(settings)}{INDEX_SUFFIX}"


# -- what to index: checked before any model is loaded ----------------------------------------

def with_images_dir(dataset: CaptionDataset, folder: Optional[Path]) -> CaptionDataset:
    """Images looked up in `folder`: by their path relative to the dataset file, else by name."""
    if folder is None:
        return dataset
    return replace(dataset, items=tuple(
        replace(item, image=_image_in(folder, dataset.source.parent, item.image)) if item.image else item
        for item in dataset.items))


def _image_in(folder: Path, base: Path, image: Path) -> Path:
    relative = image.relative_to(base) if image.is_relative_to(base) else Path(image.name)
    for candidate in (folder / relative, folder / image.name):
        if candidate.is_file():
            return candidate
    return folder / relative  # plan_jobs names it as missing


def limit_dataset(dataset: CaptionDataset, limit: Optional[int]) -> CaptionDataset:
    """The first `limit` images (a quick trial); the same cache file serves the full set later."""
    if limit is None or limit >= len(dataset):
        return dataset
    return replace(dataset, items=dataset.items[:limit])


def plan_jobs(dataset: CaptionDataset, mosaic: Optional[Path] = None) -> tuple[RasterJob, ...]:
    """Rasters to index for a list of images (one raster each) or mosaic tiles (one raster)."""
    if not dataset.items:
        raise EvaluationError(f"{dataset.source} has no images to evaluate.")
    windows = [item.pixel_window is not None for item in dataset.items]
    if all(windows):
        return (_mosaic_job(dataset, mosaic or find_mosaic(dataset.source)),)
    if any(windows):
        raise EvaluationError(
            f"{dataset.source} mixes mosaic tiles (with \"pixel_window\") and images: "
            "give one kind per dataset."
        )
    if any(item.image is None for item in dataset.items):
        raise EvaluationError(
            f"{dataset.source} holds captions only, no images (line format). End-to-end "
            "evaluation captions the images, so it needs a JSON list of images or mosaic "
            "tiles. Give --proxy to evaluate the text stage on these captions alone."
        )
    return tuple(_image_job(dataset, row) for row in range(len(dataset)))


def _image_job(dataset: CaptionDataset, row: int) -> RasterJob:
    item = dataset.items[row]
    if not item.image.is_file():
        raise EvaluationError(
            f"Image not found: {item.image} (entry {item.id!r} of {dataset.source}). Check the "
            "path, or give --images-dir with the folder holding the images."
        )
    with open_raster(item.image) as raster:
        width, height = raster.width, raster.height
    # A tile at least as large as the image: the whole image is one tile.
    return RasterJob(item.image, max(width, height, MIN_TILE_SIZE),
                     {Window(0, 0, width, height).key: row}, whole_grid=True)


def _mosaic_job(dataset: CaptionDataset, mosaic: Path) -> RasterJob:
    tile_size = max(max(item.pixel_window[2:]) for item in dataset.items)
    with open_raster(mosaic) as raster:
        try:
            grid = TileGrid(raster.width, raster.height, tile_size)
        except RasterError as exc:
            raise EvaluationError(f"{dataset.source}: {exc}") from None
    rows = {}
    for row, item in enumerate(dataset.items):
        window = Window(*item.pixel_window)
        if not grid.contains(window):
            raise EvaluationError(
                f"Tile {item.id!r} of {dataset.source}: pixel window {list(item.pixel_window)} is "
                f"not a tile of {mosaic.name} ({raster.width}x{raster.height} px) cut into "
                f"{tile_size} px tiles. Check --raster and the windows."
            )
        rows[window.key] = row
    return RasterJob(mosaic, tile_size, rows, whole_grid=len(rows) == len(grid))


def find_mosaic(source: Path) -> Path:
    """The one raster beside a tiles JSON whose name starts like it (x_tiles.json -> x*.tif)."""
    stem = re.sub(r"[_-]?tiles$", "", source.stem) or source.stem
    found = sorted(path for path in source.parent.iterdir()
                   if path.suffix.lower() in RASTER_SUFFIXES and path.name.startswith(stem))
    if len(found) != 1:
        seen = ", ".join(path.name for path in found) or "none"
        raise EvaluationError(
            f"{source} lists mosaic tiles; give the mosaic raster with --raster (rasters "
            f"named {stem}* beside it: {seen})."
        )
    return found[0]
