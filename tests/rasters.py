"""Writes small real GeoTIFFs for tests (rasterio), with the quirks real user rasters have."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_raster(path: Path, *, width: int = 256, height: int = 256, bands: int = 3,
                 dtype: str = "uint8", crs: str | None = "EPSG:32618",
                 transform=None, nodata=None, data: np.ndarray | None = None,
                 seed: int = 0) -> Path:
    """A GeoTIFF with smooth random content (every tile has texture unless `data` says otherwise)."""
    import rasterio
    from rasterio.transform import from_origin

    if data is None:
        rng = np.random.default_rng(seed)
        data = rng.integers(1, 200, size=(bands, height, width)).astype(dtype)
    if transform is None:
        transform = from_origin(500000.0, 4200000.0, 10.0, 10.0) if crs else None
    profile = dict(driver="GTiff", width=width, height=height, count=data.shape[0],
                   dtype=str(data.dtype))
    if crs:
        profile.update(crs=crs, transform=transform)
    elif transform is not None:
        profile.update(transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path
