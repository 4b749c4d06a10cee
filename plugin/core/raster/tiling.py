"""Cut a raster into a grid of tiles: pixel windows, bboxes in the raster's CRS, skip reasons."""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import RasterError

SKIP_NODATA = "all nodata or masked"
SKIP_CONSTANT = "constant value (no content)"
# 12,288 px tiles took 1.85 GB to read and render, and models see at most ~500 px anyway.
MAX_TILE_SIZE = 4096
MIN_SIDE_PX = 8  # a tile thinner than this shows a model nothing it can describe
SYNTHETIC_TILE_SIZE = 512


@dataclass(frozen=True)
class Window:
    """A pixel window: column and row offset, width and height."""

    col_off: int
    row_off: int
    width: int
    height: int

    @property
    def key(self) -> str:
        """Stable tile identifier: the same window gives the same key in every run."""
        return f"{self.col_off}_{self.row_off}_{self.width}x{self.height}"

    def as_list(self) -> list[int]:
        return [self.col_off, self.row_off, self.width, self.height]


@dataclass(frozen=True)
class TileGrid:
    """The tiles a raster of a given size is cut into for a tile size and overlap."""

    width: int
    height: int
    tile_size: int
    overlap: int = 0

    def __post_init__(self):
        if self.tile_size < 16:
            raise RasterError(f"Tile size {self.tile_size} px is too small: use 16 px or more.")
        if not 0 <= self.overlap < self.tile_size:
            raise RasterError(
                f"Overlap {self.overlap} px must be at least 0 and smaller than "
                f"the tile size ({self.tile_size} px)."
            )

    @property
    def step(self) -> int:
        return self.tile_size - self.overlap

    @property
    def min_edge(self) -> int:
        """Edge strips narrower than this are merged into the tile beside them."""
        return max(MIN_SIDE_PX, self.tile_size // 8)

    def _offsets(self, length: int) -> range:
        # Last tile starts where it still adds pixels; edge tiles are clipped, and an edge
        # sliver (a 1 px column) joins the tile before it rather than being a tile of its own.
        count = max(1, math.ceil((length - self.overlap) / self.step)) if length > self.tile_size else 1
        if count > 1 and length - (count - 1) * self.step < self.min_edge:
            count -= 1
        return range(0, count * self.step, self.step)

    def _span(self, offset: int, length: int, offsets: range) -> int:
        return length - offset if offset == offsets[-1] else self.tile_size

    def windows(self) -> Iterator[Window]:
        cols, rows = self._offsets(self.width), self._offsets(self.height)
        for row in rows:
            for col in cols:
                yield Window(col, row, self._span(col, self.width, cols), self._span(row, self.height, rows))

    def __len__(self) -> int:
        return len(self._offsets(self.width)) * len(self._offsets(self.height))

    def contains(self, window: Window) -> bool:
        cols, rows = self._offsets(self.width), self._offsets(self.height)
        return (
            window.col_off in cols
            and window.row_off in rows
            and window.width == self._span(window.col_off, self.width, cols)
            and window.height == self._span(window.row_off, self.height, rows)
        )

    def notes(self) -> tuple[str, ...]:
        """What the user should know about this grid: edge slivers merged into their neighbours."""
        widest = self._span(self._offsets(self.width)[-1], self.width, self._offsets(self.width))
        tallest = self._span(self._offsets(self.height)[-1], self.height, self._offsets(self.height))
        if max(widest, tallest) <= self.tile_size:
            return ()
        return (f"edge strips narrower than {self.min_edge} px are merged into the tiles beside them "
                f"(edge tiles up to {max(widest, self.tile_size)}x{max(tallest, self.tile_size)} px)",)


def check_tile_size_to_read(tile_size: int) -> None:
    """Refuse tiles too large to read and render whole (imported captions may cover larger windows)."""
    if tile_size > MAX_TILE_SIZE:
        raise RasterError(
            f"Tile size {tile_size} px is too large: use at most {MAX_TILE_SIZE} px (each tile is "
            "read and rendered whole, and a model sees it shrunk to about 500 px anyway).")


@dataclass(frozen=True)
class RasterInfo:
    """What the index records about a raster (and what tiling needs)."""

    path: str
    fingerprint: str
    width: int
    height: int
    band_count: int
    dtype: str
    crs_wkt: str  # empty when the raster has no CRS
    crs_label: str  # "EPSG:4326", or "pixel coordinates" when there is no CRS
    transform: tuple[float, ...]  # GDAL order: x0, dx, rx, y0, ry, dy
    warnings: tuple[str, ...] = field(default=())

    @property
    def georeferenced(self) -> bool:
        return bool(self.crs_wkt)

    def bbox(self, window: Window) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of a window: the envelope of its four corners."""
        x0, dx, rx, y0, ry, dy = self.transform
        xs, ys = [], []
        for col in (window.col_off, window.col_off + window.width):
            for row in (window.row_off, window.row_off + window.height):
                xs.append(x0 + col * dx + row * rx)
                ys.append(y0 + col * ry + row * dy)
        return (min(xs), min(ys), max(xs), max(ys))


@dataclass(frozen=True)
class Tile:
    """One tile of a raster; `skip_reason` is set when it has nothing to describe."""

    window: Window
    bbox: tuple[float, float, float, float]
    skip_reason: str = ""

    @property
    def key(self) -> str:
        return self.window.key


def is_gdal_url(path: str | os.PathLike) -> bool:
    """A GDAL virtual path (/vsicurl/https://..., /vsis3/bucket/key, /vsizip/a.zip/b.tif): not a local
    file name, and never a Path (which would fold its `//`)."""
    return str(path).startswith("/vsi")


def fingerprint(path: str | os.PathLike) -> str:
    """Cheap content fingerprint: size plus SHA-256 of the first and last MiB."""
    if is_gdal_url(path):
        return _gdal_fingerprint(str(path))
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
        if size > 2 << 20:
            handle.seek(-(1 << 20), os.SEEK_END)
            digest.update(handle.read())
    return digest.hexdigest()[:32]


def open_raster(path: str | os.PathLike):
    """Open a raster with rasterio, turning every failure into a RasterError naming the file."""
    import rasterio
    from rasterio.errors import RasterioIOError

    if is_gdal_url(path):  # every indexer of a shared index may read it from one URL
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return rasterio.open(str(path))
        except (RasterioIOError, OSError) as exc:
            raise RasterError(f"GDAL cannot read {path} ({_first_line(exc)}): check the URL, and that this "
                              "machine may read it (network, credentials in GDAL's settings).") from exc
    path = Path(path)
    if not path.exists():
        raise RasterError(f"Raster not found: {path}. Check the path.")
    if path.is_dir():
        raise RasterError(f"{path} is a folder, not a raster file.")
    if path.stat().st_size == 0:
        raise RasterError(f"Raster {path} is empty (0 bytes): copy or download it again.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning: reported by read_info
            return rasterio.open(path)
    except (RasterioIOError, OSError) as exc:
        raise RasterError(
            f"Cannot read {path} as a raster ({_first_line(exc)}). Give a GeoTIFF, VRT or "
            "another file GDAL can open; if it is one, it may be truncated or corrupt."
        ) from exc


def gdal_errors_as_exceptions():
    """A context in which GDAL's errors come back only as rasterio exceptions (worded by us).

    Outside one, GDAL also prints its own "ERROR 1: TIFFReadEncodedStrip() failed" lines to
    stderr for every failed read: noise around the one clear message.
    """
    import rasterio

    return rasterio.Env()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _gdal_fingerprint(url: str) -> str:
    """fingerprint() of a GDAL virtual path, read through GDAL's own file layer (the same bytes)."""
    from osgeo import gdal

    stat = gdal.VSIStatL(url)
    if stat is None:
        raise RasterError(f"GDAL cannot reach {url}: check the URL, and that this machine may read it "
                          "(credentials for /vsis3/ and the like come from GDAL's settings).")
    size = stat.size
    digest = hashlib.sha256(str(size).encode())
    handle = gdal.VSIFOpenL(url, "rb")
    try:
        digest.update(gdal.VSIFReadL(1, 1 << 20, handle) or b"")
        if size > 2 << 20:
            gdal.VSIFSeekL(handle, size - (1 << 20), os.SEEK_SET)
            digest.update(gdal.VSIFReadL(1, 1 << 20, handle) or b"")
    finally:
        gdal.VSIFCloseL(handle)
    return digest.hexdigest()[:32]


def read_info(dataset) -> RasterInfo:
    """RasterInfo of an open rasterio dataset; no CRS means pixel coordinates."""
    notes = []
    if dataset.width < 1 or dataset.height < 1 or dataset.count < 1:
        raise RasterError(f"Raster {dataset.name} has no pixels or no bands.")
    crs_wkt = dataset.crs.to_wkt() if dataset.crs else ""
    if crs_wkt:
        transform = tuple(dataset.transform.to_gdal())
        epsg = dataset.crs.to_epsg()
        crs_label = f"EPSG:{epsg}" if epsg else dataset.crs.to_string()[:60]
        if transform[2] or transform[4]:
            notes.append("rotated or sheared transform: tile boxes are the envelopes of rotated tiles")
    else:
        # As QGIS shows a raster without georeference: x = column, y = -row.
        transform = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
        crs_label = "pixel coordinates"
        notes.append(f"{dataset.name} has no CRS: tiles are located in pixel coordinates (x = column, y = -row)")
    return RasterInfo(
        path=dataset.name if is_gdal_url(dataset.name) else str(Path(dataset.name).resolve()),
        fingerprint=fingerprint(dataset.name),
        width=dataset.width,
        height=dataset.height,
        band_count=dataset.count,
        dtype=str(dataset.dtypes[0]),
        crs_wkt=crs_wkt,
        crs_label=crs_label,
        transform=transform,
        warnings=tuple(notes),
    )


def content_bands(dataset) -> list[int]:
    """1-based band indexes that carry content (alpha bands are masks, not content)."""
    from rasterio.enums import ColorInterp

    bands = [i + 1 for i, ci in enumerate(dataset.colorinterp) if ci != ColorInterp.alpha]
    return bands or list(range(1, dataset.count + 1))


def read_window(dataset, window: Window, bands: list[int] | None = None) -> np.ma.MaskedArray:
    """Pixels of one window as a (bands, rows, cols) masked array (nodata, masks, alpha applied)."""
    from rasterio.windows import Window as RioWindow

    from rasterio.errors import RasterioIOError

    rio_window = RioWindow(window.col_off, window.row_off, window.width, window.height)
    try:
        data = dataset.read(bands or content_bands(dataset), window=rio_window, masked=True)
    except RasterioIOError as exc:
        raise RasterError(
            f"Cannot read pixels {window.as_list()} of {dataset.name} ({_first_line(exc)}): "
            "the file may be truncated or corrupt; copy or export it again."
        ) from exc
    if np.issubdtype(data.dtype, np.floating):
        data = np.ma.masked_invalid(data, copy=False)
    return data


def pixel_hash(data: np.ma.MaskedArray) -> str:
    """Checksum of a tile's pixels and mask, as read: tells a tile edited in place from its old self."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{data.dtype.str}{data.shape}".encode())
    digest.update(np.ascontiguousarray(np.ma.getdata(data)).tobytes())
    digest.update(np.packbits(np.ma.getmaskarray(data)).tobytes())
    return digest.hexdigest()


def content_skip_reason(data: np.ma.MaskedArray) -> str:
    """Why pixels have nothing to describe ('' when they have content)."""
    if min(data.shape[1:]) < MIN_SIDE_PX:
        return f"too small to describe ({data.shape[2]}x{data.shape[1]} px; under {MIN_SIDE_PX} px a side)"
    if np.ma.count(data) == 0:
        return SKIP_NODATA
    for band in data.reshape(data.shape[0], -1):
        if np.ma.count(band) and np.ma.ptp(band) != 0:
            return ""
    return SKIP_CONSTANT


def synthetic_raster(n_tiles: int, seed: int) -> tuple[RasterInfo, list[Tile]]:
    """A square-ish grid of 512 px tiles in pixel coordinates (no pixels: only the index needs it)."""
    cols = math.ceil(math.sqrt(n_tiles))
    rows = math.ceil(n_tiles / cols)
    info = RasterInfo(path=f"synthetic-{n_tiles}-tiles-seed-{seed}", fingerprint=f"synthetic-{seed}",
                      width=cols * SYNTHETIC_TILE_SIZE, height=rows * SYNTHETIC_TILE_SIZE, band_count=3, dtype="uint8",
                      crs_wkt="", crs_label="pixel coordinates", transform=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    grid = TileGrid(info.width, info.height, SYNTHETIC_TILE_SIZE)
    windows = list(zip(range(n_tiles), grid.windows()))
    return info, [Tile(window, info.bbox(window)) for _, window in windows]
