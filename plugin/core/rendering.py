"""Tile pixels -> the RGB PNG a vision model sees: band choice, stretch, masks, resize, encode once."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .errors import RasterError

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


def to_rgb8(data: np.ma.MaskedArray, settings: RenderSettings = RenderSettings()) -> np.ndarray:
    """(bands, rows, cols) masked pixels -> (rows, cols, 3) uint8; masked pixels black.

    8-bit data is shown as is (it is already meant for display); other types get a
    percentile stretch per band, as QGIS does by default for 16-bit and float rasters.
    """
    data = np.ma.masked_invalid(data) if np.issubdtype(data.dtype, np.floating) else data
    mask = np.ma.getmaskarray(data).any(axis=0)
    if data.dtype == np.uint8:
        bands = np.ma.filled(data, 0).astype(np.uint8)
    else:
        bands = np.stack([_stretch(band, settings) for band in data])
    if bands.shape[0] == 1:
        bands = np.repeat(bands, 3, axis=0)
    rgb = np.transpose(bands[:3], (1, 2, 0)).copy()
    rgb[mask] = 0
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


def render_tile_png(data: np.ma.MaskedArray, settings: RenderSettings = RenderSettings()) -> bytes:
    return encode_png(to_rgb8(data, settings), settings.max_side)
