"""Tile pixels -> the RGB PNG a vision model sees: band choice, stretch, masks, resize, encode once."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import RasterError

DEFAULT_MAX_SIDE = 512  # most LLaVA-style projectors see 336-448 px; larger only costs time


@dataclass(frozen=True)
class RenderSettings:
    bands: Optional[tuple[int, ...]] = None  # 1-based; None = from colour interpretation, else 1-2-3
    max_side: int = DEFAULT_MAX_SIDE
    low_percentile: float = 2.0
    high_percentile: float = 98.0


def choose_bands(colorinterp: Sequence, band_count: int, requested: Optional[Sequence[int]]) -> tuple[int, ...]:
    """1-based bands to show as R, G, B (a single band is shown as grey)."""
    if requested:
        bad = [b for b in requested if not 1 <= b <= band_count]
        if bad or len(requested) not in (1, 3):
            raise RasterError(
                f"Band setting {list(requested)} does not fit a raster with {band_count} bands: "
                "give 1 band (grey) or 3 bands (red, green, blue), numbered from 1."
            )
        return tuple(requested)
    names = [getattr(ci, "name", str(ci)) for ci in colorinterp]
    if all(name in names for name in ("red", "green", "blue")):
        return tuple(names.index(name) + 1 for name in ("red", "green", "blue"))
    content = [i + 1 for i, name in enumerate(names) if name != "alpha"] or [1]
    return tuple(content[:3]) if len(content) >= 3 else (content[0],)


def render_identity(settings: RenderSettings, bands: Sequence[int], palette: Optional[np.ndarray]) -> dict:
    """What decides the pixels the model sees: a run's captions hold only for these values."""
    return {"bands": [int(b) for b in bands], "max_side": settings.max_side,
            "low_percentile": settings.low_percentile, "high_percentile": settings.high_percentile,
            "palette": palette is not None}


def read_palette(dataset, bands: Sequence[int]) -> Optional[np.ndarray]:
    """(entries, 4) uint8 RGBA lookup table when the one band shown has a colour table, else None.

    The band's values are then indexes into the table, not brightness: shown as grey they
    reach the model nearly black (values 1-3 of 255).
    """
    from rasterio.enums import ColorInterp

    if len(bands) != 1 or dataset.colorinterp[bands[0] - 1] != ColorInterp.palette:
        return None
    try:
        table = dataset.colormap(bands[0])
    except ValueError:  # "NULL color table": declared paletted, but without a table
        return None
    lut = np.zeros((max(table) + 1, 4), dtype=np.uint8)
    for index, rgba in table.items():
        lut[index] = rgba
    return lut


def to_rgb8(data: np.ma.MaskedArray, settings: RenderSettings = RenderSettings(),
            palette: Optional[np.ndarray] = None) -> np.ndarray:
    """(bands, rows, cols) masked pixels -> (rows, cols, 3) uint8; masked pixels black.

    8-bit data is shown as is (it is already meant for display); other types get a
    percentile stretch per band, as QGIS does by default for 16-bit and float rasters.
    A single band with a colour table (`palette`, from read_palette) is shown through it.
    """
    data = np.ma.masked_invalid(data) if np.issubdtype(data.dtype, np.floating) else data
    mask = np.ma.getmaskarray(data).any(axis=0)
    if palette is not None and data.shape[0] == 1:
        return _through_palette(data[0], mask, palette)
    if data.dtype == np.uint8:
        bands = np.ma.filled(data, 0).astype(np.uint8)
    else:
        bands = np.stack([_stretch(band, settings) for band in data])
    if bands.shape[0] == 1:
        bands = np.repeat(bands, 3, axis=0)
    rgb = np.transpose(bands[:3], (1, 2, 0)).copy()
    rgb[mask] = 0
    return rgb


def _through_palette(band: np.ma.MaskedArray, mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    indexes = np.clip(np.ma.filled(band, 0).astype(np.int64), 0, len(palette) - 1)
    rgba = palette[indexes]
    rgb = rgba[..., :3].copy()
    rgb[mask | (rgba[..., 3] == 0)] = 0  # a transparent entry is no content, like a masked pixel
    return rgb


def _stretch(band: np.ma.MaskedArray, settings: RenderSettings) -> np.ndarray:
    valid = band.compressed()
    if valid.size == 0:
        return np.zeros(band.shape, dtype=np.uint8)
    low, high = np.percentile(valid, (settings.low_percentile, settings.high_percentile))
    if high <= low:
        high = low + 1
    scaled = (np.ma.filled(band, low).astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def encode_png(rgb: np.ndarray, max_side: int = DEFAULT_MAX_SIDE) -> bytes:
    """PNG bytes of an RGB array, downscaled so its longer side is at most `max_side`."""
    from PIL import Image

    image = Image.fromarray(rgb, mode="RGB")
    longest = max(image.size)
    if longest > max_side:
        scale = max_side / longest
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # speed over size: it lives in memory
    return buffer.getvalue()


def render_tile_png(data: np.ma.MaskedArray, settings: RenderSettings = RenderSettings(),
                    palette: Optional[np.ndarray] = None) -> bytes:
    return encode_png(to_rgb8(data, settings, palette), settings.max_side)
